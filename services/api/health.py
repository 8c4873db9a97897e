"""Liveness and readiness: /healthz answers while the process runs; /readyz checks the database, NATS and,
when Worklists.Directory is set, the folder."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.api.keys import BUS, SESSIONS, SETTINGS
from shared import folder
from shared.health_http import CHECK_TIMEOUT, OK, Checks, database_check, nats_check, verdict


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    checks: Checks = {}
    try:
        # Kubernetes gives up on a probe after a few seconds: a database that hangs is "not ready" first.
        async with asyncio.timeout(CHECK_TIMEOUT):
            checks["database"] = await database_check(app[SESSIONS])
    except TimeoutError:
        checks["database"] = f"timed out after {CHECK_TIMEOUT:g} s"
    checks["nats"] = nats_check(app[BUS].is_connected)
    worklists = app[SETTINGS].worklists
    if worklists.directory is not None:
        # Folder mode writes files there; otherwise the folder's items are only read (and deleted) through it.
        problem = await asyncio.to_thread(
            folder.directory_problem, worklists.directory, writable=worklists.folder_mode
        )
        checks["folder"] = problem or OK
    ready, checks = verdict(checks)
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
