"""Reading JSON request bodies defensively: size, UTF-8, nesting depth, shape."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.api.errors import RequestError

MAX_DEPTH = 32


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(current, dict):
            stack.extend((v, depth + 1) for v in current.values())
        elif isinstance(current, list):
            stack.extend((v, depth + 1) for v in current)
    return deepest


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, whatever Content-Type the client sent (curl --data sends a form type)."""
    raw = await request.read()  # raises 413 past client_max_size
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"Request body is not valid UTF-8 (byte {exc.start})", "body") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise RequestError(400, "Request body is nested too deeply", "body") from None
    except ValueError as exc:
        raise RequestError(400, f"Request body is not valid JSON: {exc}", "body") from None
    if not isinstance(value, dict):
        raise RequestError(400, "Request body must be a JSON object", "body")
    # A value is at most one level deeper than the objects and arrays holding it: a body with fewer than
    # MAX_DEPTH brackets (a worklist item has a handful) need not be walked, which costs a create's CPU.
    if raw.count(b"{") + raw.count(b"[") >= MAX_DEPTH and _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise RequestError(400, f"Request body is nested deeper than {MAX_DEPTH} levels", "body")
    return value


def boolean(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise RequestError(400, f"{key} must be true or false", key)
    return value
