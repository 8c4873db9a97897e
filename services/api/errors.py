"""Error answers in Orthanc's JSON shape, plus the offending field; domain errors mapped at the edge."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.dicom_json import TagsError
from shared.store import WorklistNotFound

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestError(Exception):
    """A bad request detected by a view: status, message and the offending field."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(request: web.Request, status: int, message: str, field: str | None = None) -> web.Response:
    body = {
        "HttpError": HTTPStatus(status).phrase,
        "HttpStatus": status,
        "Message": message,
        "Method": request.method,
        "Uri": request.path,
        "Details": f"{field}: {message}" if field else message,
    }
    if field:
        body["Field"] = field
    return web.Response(
        status=status, text=json.dumps(body, ensure_ascii=False), content_type="application/json"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        return error_response(request, exc.status, exc.message, exc.field)
    except TagsError as exc:
        return error_response(request, 400, exc.message, exc.field)
    except WorklistNotFound as exc:
        return error_response(request, 404, f"Unknown worklist: {exc.worklist_id}")
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(request, 413, exc.text or "Request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc.status, exc.reason)
    except (OperationalError, DBAPIError) as exc:
        # One line, no traceback: during an outage every request lands here, and the driver's message adds
        # nothing the type does not say (it can quote the statement).
        logger.warning(
            "database unavailable during %s %s (%s)", request.method, request.path, _driver_error(exc)
        )
        return error_response(request, 503, "Database unavailable, retry later")
    except PoolTimeout:
        # Every pooled connection is busy (a database that answers slowly): a retry later may get one.
        logger.warning("database busy during %s %s: no connection free", request.method, request.path)
        return error_response(request, 503, "Database busy, retry later")
    except Exception:
        logger.exception("internal error during %s %s", request.method, request.path)
        return error_response(request, 500, "Internal error")


def _driver_error(exc: DBAPIError) -> str:
    """The error's type as the driver named it (`OperationalError`, `AdminShutdown`), without its text."""
    return type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__
