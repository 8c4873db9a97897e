"""`POST /studies/stable`: a PACS script or RIS bridge reports that a study has arrived and is complete."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from services.api.body import json_object
from services.api.errors import RequestError
from services.api.keys import RELAY, SESSIONS
from shared import store
from shared.events import study_stable_event

SOURCE = "rest"
# PS3.5 9.1: digits in dot-separated components, no leading zero, at most 64 characters.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_MAX_KEY_LENGTH = 64


def _uid(body: dict[str, Any]) -> str:
    value = body.get("StudyInstanceUID")
    if value is None:
        raise RequestError(400, "StudyInstanceUID is required", "StudyInstanceUID")
    if not isinstance(value, str):
        raise RequestError(400, "StudyInstanceUID must be a string", "StudyInstanceUID")
    uid = value.strip(" \x00")
    if not uid or len(uid) > 64 or not _UID.fullmatch(uid):
        raise RequestError(
            400, "StudyInstanceUID is not a valid UID (digits and dots, at most 64)", "StudyInstanceUID"
        )
    return uid


def _optional_key(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_KEY_LENGTH:
        raise RequestError(400, f"{key} must be a string of at most {_MAX_KEY_LENGTH} characters", key)
    return value.strip() or None


async def study_stable(request: web.Request) -> web.Response:
    """Publish study.stable (through the outbox); the housekeeper deletes the study's worklist items."""
    body = await json_object(request)
    event = study_stable_event(
        _uid(body),
        source=SOURCE,
        patient_id=_optional_key(body, "PatientID"),
        accession_number=_optional_key(body, "AccessionNumber"),
    )
    async with request.app[SESSIONS]() as session, session.begin():
        store.enqueue(session, event)
    request.app[RELAY].wake()
    return web.json_response({"EventID": event.event_id}, status=202)
