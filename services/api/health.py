"""Liveness and readiness: /healthz answers while the process runs, /readyz checks the database and NATS."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from services.api.keys import BUS, SESSIONS


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with request.app[SESSIONS]() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"unavailable: {type(exc).__name__}"
    checks["nats"] = "ok" if request.app[BUS].is_connected else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
