"""`GET /openapi.json`: the OpenAPI 3.0 description of the REST API, written here by hand.

Parameter lists and enumerations come from the modules that enforce them (listing, dicom_json, ui), so the
description cannot drift from what the views accept; tests/unit/test_api_openapi.py checks that every route
is described and nothing more, and tests/integration/test_api_schemathesis.py sends what it describes.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from aiohttp import web

from services.api import listing
from services.api.auth import PUBLIC_PATHS
from services.api.ui import ASSETS
from shared.dicom_json import FORMATS

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> Schema:
    return _json(_ref("Error"), description)


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": "Orthanc's error shape, plus the offending field when there is one.",
        "required": ["HttpError", "HttpStatus", "Message", "Method", "Uri", "Details"],
        "properties": {
            "HttpError": {"type": "string", "example": "Bad Request"},
            "HttpStatus": {"type": "integer", "example": 400},
            "Message": {"type": "string"},
            "Method": {"type": "string", "example": "POST"},
            "Uri": {"type": "string", "example": "/worklists/create"},
            "Details": {"type": "string", "example": "PatientBirthDate: not a valid DA value"},
            "Field": {"type": "string", "example": "PatientBirthDate"},
        },
    },
    "Tags": {
        "type": "object",
        "description": (
            'DICOM attributes by keyword or "gggg,eeee": a string (several values joined with "\\"), null '
            "for an empty value, or an array of objects of the same kind for a sequence. Unknown keywords, "
            "private tags and values invalid for their VR are refused (400 naming the tag)."
        ),
        "additionalProperties": {
            "anyOf": [
                {"type": "string", "nullable": True},
                {"type": "array", "items": {"type": "object"}},
            ]
        },
        "example": {
            "PatientName": "Doe^John",
            "PatientID": "P1",
            "ScheduledProcedureStepSequence": [
                {
                    "Modality": "CT",
                    "ScheduledStationAETitle": "CT01",
                    "ScheduledProcedureStepStartDate": "20251014",
                }
            ],
        },
    },
    "FormattedTags": {
        "type": "object",
        "description": (
            "The item's attributes in the requested format: Simplify (keywords, string values, sequences "
            'as arrays), Short ("gggg,eeee" keys) or Full ({"Name", "Type", "Value"} per tag).'
        ),
        "additionalProperties": True,
    },
    "WorklistBody": {
        "type": "object",
        "required": ["Tags"],
        "properties": {
            "Tags": _ref("Tags"),
            "Force": {
                "type": "boolean",
                "default": False,
                "description": "Store an item without the Modality and start date Orthanc insists on.",
            },
        },
    },
    "ReplaceBody": {
        "allOf": [
            _ref("WorklistBody"),
            {
                "type": "object",
                "properties": {
                    "Upsert": {
                        "type": "boolean",
                        "default": False,
                        "description": "Create the item under this id when it does not exist.",
                    }
                },
            },
        ]
    },
    "Written": {
        "type": "object",
        "required": ["ID", "Path", "Warnings"],
        "properties": {
            "ID": {"type": "string"},
            "Path": {"type": "string", "example": "/worklists/5fdc7404-0c4e-4a55-9d5c-1c3a8b1f2e77"},
            "Warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Keys modalities need that the item lacks (it is stored all the same).",
            },
        },
    },
    "Worklist": {
        "type": "object",
        "required": ["ID", "Tags"],
        "properties": {"ID": {"type": "string"}, "Tags": _ref("FormattedTags")},
    },
    "ListedWorklist": {
        "type": "object",
        "required": ["ID", "Tags", "CreationDate"],
        "properties": {
            "ID": {"type": "string"},
            "Tags": _ref("FormattedTags"),
            "CreationDate": {
                "type": "string",
                "pattern": "^[0-9]{8}T[0-9]{6}$",
                "description": "YYYYMMDDTHHMMSS, UTC",
            },
        },
    },
    "StudyStable": {
        "type": "object",
        "required": ["StudyInstanceUID"],
        "properties": {
            "StudyInstanceUID": {"type": "string", "maxLength": 64, "example": "1.2.826.0.1.3680043.10.1.7"},
            "PatientID": {"type": "string", "maxLength": 64},
            "AccessionNumber": {"type": "string", "maxLength": 64},
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": '"ok" or what is wrong, for database, nats and, in folder mode, folder.',
            },
        },
    },
}

# Present on every route that authentication protects (AuthenticationEnabled), and on every write.
_REFUSALS: dict[str, Schema] = {
    "401": {
        **_error("No valid credentials while AuthenticationEnabled"),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "403": _error("A read-only caller's write, or a write a browser says comes from another site"),
}
_TOO_LARGE = _error("Body larger than MaxBodySize")
_UNAVAILABLE = _error("The database cannot be reached; retry later")


def _operation(summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    return {"summary": summary, "responses": responses, **extra}


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_FORMAT = _query("format", {"type": "string", "enum": list(FORMATS), "default": "Simplify"}, "Tags format")
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_WHOLE = {"type": "integer", "minimum": 0, "maximum": 999_999_999}
_TEXT = {"type": "string", "maxLength": listing.MAX_VALUE_LENGTH}


def _listing_parameters() -> list[Schema]:
    paging = [
        _query("limit", _WHOLE, "At most this many items; 0 or absent: all."),
        _query("offset", _WHOLE, "Skip this many items (not with since)."),
        _query("since", _WHOLE, "Orthanc's name for offset (not with offset)."),
        _query("sort", {"type": "string", "enum": list(listing.SORTS)}, "Order (default CreationDate)."),
        _query(
            "q", _TEXT, f"Free text: each word (at most {listing.MAX_WORDS}) in the name, ID or accession."
        ),
    ]
    filters = [
        _query(keyword, _TEXT, "Matched as C-FIND matches it: exact, * and ? wildcards, \\ alternatives.")
        for keyword in listing.FILTERS
    ]
    return [_FORMAT, *paging, *filters]


def _worklist_paths() -> dict[str, Schema]:
    return {
        "/worklists/create": {
            "post": _operation(
                "Create a worklist item",
                {
                    "200": _json(_ref("Written"), "Created"),
                    "400": _error("Body not a JSON object, Tags missing or invalid (Field names the tag)"),
                    "413": _TOO_LARGE,
                    "503": _UNAVAILABLE,
                },
                requestBody={"required": True, "content": {JSON: {"schema": _ref("WorklistBody")}}},
            )
        },
        "/worklists": {
            "get": _operation(
                "List worklist items: paging, sorting, free text and C-FIND attribute filters",
                {
                    "200": {
                        **_json({"type": "array", "items": _ref("ListedWorklist")}, "One page of items"),
                        "headers": {
                            "X-Total-Count": {
                                "schema": {"type": "integer", "minimum": 0},
                                "description": "How many items match in all",
                            }
                        },
                    },
                    "400": _error("Unknown, repeated, too long or invalid parameter (Field names it)"),
                    "503": _UNAVAILABLE,
                },
                parameters=_listing_parameters(),
            )
        },
        "/worklists/{id}": {
            "parameters": [_ID],
            "get": _operation(
                "One worklist item",
                {
                    "200": _json(_ref("Worklist"), "The item"),
                    "400": _error("Unknown format"),
                    "404": _error("Unknown worklist"),
                    "503": _UNAVAILABLE,
                },
                parameters=[_FORMAT],
            ),
            "put": _operation(
                "Replace a worklist item (validated as on create)",
                {
                    "200": _json(_ref("Written"), "Replaced (or created, with Upsert)"),
                    "400": _error("Invalid body, or an Upsert id that is not 1-64 of [A-Za-z0-9._-]"),
                    "404": _error("Unknown worklist, without Upsert"),
                    "413": _TOO_LARGE,
                    "503": _UNAVAILABLE,
                },
                requestBody={"required": True, "content": {JSON: {"schema": _ref("ReplaceBody")}}},
            ),
            "delete": _operation(
                "Delete a worklist item",
                {
                    "200": _json({"type": "object", "maxProperties": 0}, "Deleted"),
                    "404": _error("Unknown worklist (already gone)"),
                    "503": _UNAVAILABLE,
                },
            ),
        },
        "/studies/stable": {
            "post": _operation(
                "A study is complete at the PACS: publish study.stable (the housekeeper deletes its items)",
                {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["EventID"],
                            "properties": {"EventID": {"type": "string"}},
                        },
                        "Accepted",
                    ),
                    "400": _error("Body not a JSON object, StudyInstanceUID missing or not a UID, bad key"),
                    "413": _TOO_LARGE,
                    "503": _UNAVAILABLE,
                },
                requestBody={"required": True, "content": {JSON: {"schema": _ref("StudyStable")}}},
            )
        },
    }


def _service_paths() -> dict[str, Schema]:
    text = {"description": "Prometheus metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/healthz": {
            "get": _operation(
                "Liveness: 200 while the process runs",
                {"200": _json({"type": "object", "properties": {"status": {"type": "string"}}}, "Alive")},
            )
        },
        "/readyz": {
            "get": _operation(
                "Readiness: the database, NATS and, in folder mode, the folder",
                {"200": _json(_ref("Readiness"), "Ready"), "503": _json(_ref("Readiness"), "Not ready")},
            )
        },
        "/metrics": {
            "get": _operation("Prometheus metrics (text or OpenMetrics, per Accept)", {"200": text})
        },
        "/events/stream": {
            "get": _operation(
                "Server-Sent Events: each worklist.* event as event: <subject>, id: <event_id>, data: <JSON>",
                {
                    "200": {
                        "description": "An endless event stream, with keep-alive comments",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "503": _error("The server is shutting down"),
                },
            )
        },
        "/ui": {"get": _operation("Redirect to /ui/", {"301": {"description": "To /ui/"}})},
        "/ui/": {
            "get": _operation(
                "The web UI",
                {
                    "200": {
                        "description": "The page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/ui/{name}": {
            "get": _operation(
                "A file of the web UI",
                {
                    "200": {
                        "description": "The file",
                        "content": {media: {"schema": {"type": "string"}} for media in ASSETS.values()},
                    },
                    "404": _error("Not a file of the web UI"),
                },
                parameters=[
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "example": next(iter(ASSETS))},
                    }
                ],
            )
        },
        "/openapi.json": {
            "get": _operation("This description", {"200": _json({"type": "object"}, "OpenAPI 3.0 document")})
        },
    }


def _version() -> str:
    try:
        return metadata.version("mwl-server")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _secured(paths: dict[str, Schema]) -> dict[str, Schema]:
    """Mark each operation with the credentials it takes and the refusals it may answer."""
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if path in PUBLIC_PATHS:
                operation["security"] = []
                continue
            writes = method in ("post", "put", "delete")
            operation["responses"].update({"401": _REFUSALS["401"]})
            if writes:
                operation["responses"].update({"403": _REFUSALS["403"]})
    return paths


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the API."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "MWL server REST API",
            "version": _version(),
            "description": (
                "Orthanc-compatible Worklists routes over the worklist store, plus listing filters, study "
                "completion, live events and the probes. Credentials are needed only with "
                "AuthenticationEnabled: HTTP Basic for RegisteredUsers, bearer tokens for ApiTokens."
            ),
        },
        "paths": _secured({**_worklist_paths(), **_service_paths()}),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        # Anonymous access while AuthenticationEnabled is false ({}), else either scheme.
        "security": [{}, {"basic": []}, {"bearer": []}],
    }


async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(document())
