"""REST views: the Orthanc Worklists plugin routes over the worklist store."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web
from pydicom.uid import generate_uid

from services.api import listing
from services.api.body import boolean, json_object
from services.api.errors import RequestError
from services.api.keys import CREATES, RELAY, SESSIONS, SETTINGS
from shared import folder, store
from shared.config import WorklistsSettings
from shared.dicom_json import FORMATS, Format, dataset_to_format, dicom_json_to_dataset
from shared.events import REASON_REST
from shared.models import SOURCE_REST
from shared.tags_json import dicom_json_from_tags, has_value, set_value, validate_worklist_json

UTF8 = "ISO_IR 192"
SPECIFIC_CHARACTER_SET = "00080005"
STUDY_INSTANCE_UID = "0020000D"
_ITEM_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _format(request: web.Request) -> Format:
    fmt = request.query.get("format", "Simplify")
    if fmt not in FORMATS:
        raise RequestError(400, f"format must be one of {', '.join(FORMATS)}", "format")
    return fmt  # type: ignore[return-value]


def _worklists(request: web.Request) -> WorklistsSettings:
    """In folder mode items are written as `.wl` files; an item that lives in a file is changed through it."""
    return request.app[SETTINGS].worklists


def creation_date(value: datetime) -> str:
    """Orthanc's CreationDate: YYYYMMDDTHHMMSS in UTC."""
    return value.strftime("%Y%m%dT%H%M%S")


def _tags(item: store.StoredItem, fmt: Format) -> dict[str, Any]:
    return dataset_to_format(dicom_json_to_dataset(item.dataset), fmt)


def _document_from_body(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The item as DICOM JSON (built without pydicom objects: shared.tags_json), and Force."""
    if "Tags" not in body:
        raise RequestError(400, "Tags is required", "Tags")
    return dicom_json_from_tags(body["Tags"]), boolean(body, "Force")


def _complete(request: web.Request, document: dict[str, Any]) -> dict[str, Any]:
    """What Orthanc adds on create: a character set, and a StudyInstanceUID when configured."""
    if not has_value(document, SPECIFIC_CHARACTER_SET):
        document = set_value(document, SPECIFIC_CHARACTER_SET, "CS", UTF8)
    missing_uid = not has_value(document, STUDY_INSTANCE_UID)
    if missing_uid and request.app[SETTINGS].worklists.set_study_instance_uid_if_missing:
        document = set_value(document, STUDY_INSTANCE_UID, "UI", generate_uid())
    return document


async def create_worklist(request: web.Request) -> web.Response:
    document, force = _document_from_body(await json_object(request))
    document = _complete(request, document)
    warnings = validate_worklist_json(document, force=force)
    item_id = str(uuid.uuid4())
    worklists = _worklists(request)
    if worklists.folder_mode and worklists.directory is not None:  # the item is written as a file
        async with folder.transaction(request.app[SESSIONS]) as session:
            await folder.add_item(session, worklists, item_id, document, source=SOURCE_REST)
        request.app[RELAY].wake()
    else:  # concurrent creates share a transaction (shared.group_commit); the relay is woken on commit
        await request.app[CREATES].add_item(item_id, document)
    return web.json_response({"ID": item_id, "Path": f"/worklists/{item_id}", "Warnings": warnings})


async def replace_worklist(request: web.Request) -> web.Response:
    """PUT replaces an item after the same validation as create; `"Upsert": true` creates a missing one."""
    item_id = request.match_info["id"]
    body = await json_object(request)
    document, force = _document_from_body(body)
    upsert = boolean(body, "Upsert")
    document = _complete(request, document)
    warnings = validate_worklist_json(document, force=force)
    async with folder.transaction(request.app[SESSIONS]) as session:
        try:
            await folder.replace_item(session, _worklists(request), _stored_id(item_id), document)
        except store.WorklistNotFound:
            if not upsert:
                raise
            _check_id(item_id)
            await folder.add_item(session, _worklists(request), item_id, document, source=SOURCE_REST)
    request.app[RELAY].wake()
    return web.json_response({"ID": item_id, "Path": f"/worklists/{item_id}", "Warnings": warnings})


def _stored_id(item_id: str) -> str:
    """The id to look up; no stored item has a NUL in its id (and PostgreSQL refuses one in a query)."""
    if "\x00" in item_id:
        raise store.WorklistNotFound(item_id)
    return item_id


def _check_id(item_id: str) -> None:
    # ASCII only (str.isalnum accepts any script's letters and digits): an id is also a file name in folder
    # mode, and must read the same on every file system and in every client.
    if not _ITEM_ID.fullmatch(item_id):
        raise RequestError(400, "id must be 1-64 ASCII letters, digits, '-', '_' or '.'", "id")


async def get_worklist(request: web.Request) -> web.Response:
    fmt = _format(request)
    async with request.app[SESSIONS]() as session:
        item = await store.get_item(session, _stored_id(request.match_info["id"]))
    return web.json_response({"ID": item.id, "Tags": _tags(item, fmt)})


async def delete_worklist(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session, session.begin():
        await folder.remove_item(
            session, _worklists(request), _stored_id(request.match_info["id"]), reason=REASON_REST
        )
    request.app[RELAY].wake()
    return web.json_response({})


async def list_worklists(request: web.Request) -> web.Response:
    """Orthanc's array of items; paging and filters (services.api.listing), the total in X-Total-Count."""
    fmt = _format(request)
    query = listing.parse(request.query, case_sensitive_pn=request.app[SETTINGS].case_sensitive_pn)
    async with request.app[SESSIONS]() as session:
        page = await listing.fetch(session, query)
    response = web.json_response(
        [{"ID": i.id, "Tags": _tags(i, fmt), "CreationDate": creation_date(i.created_at)} for i in page.items]
    )
    response.headers["X-Total-Count"] = str(page.total)
    return response
