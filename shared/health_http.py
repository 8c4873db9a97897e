"""/healthz, /readyz and /metrics on a small HTTP port, for the services without a REST API of their own.

Two servers with the same answers: `HealthServer` on the caller's asyncio loop (the housekeeper), and
`ThreadedHealthServer` in its own threads with synchronous checks (the SCP, whose pynetdicom handlers are
threaded). A readiness callback returns `(ready, checks)`, each check "ok" or why not; the answer is 200 or
503 with `{"ready": ..., "checks": {...}}`, the shape of the API's own /readyz.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

logger = logging.getLogger(__name__)

OK = "ok"
Checks = dict[str, str]
Probe = Callable[[], Awaitable[tuple[bool, Checks]]]
SyncProbe = Callable[[], tuple[bool, Checks]]
ScrapeHook = Callable[[], Awaitable[None]]
SyncScrapeHook = Callable[[], None]
# Kubernetes probes time out after a few seconds: a check that hangs longer answers "not ready" instead.
CHECK_TIMEOUT = 4.0


def verdict(checks: Mapping[str, str]) -> tuple[bool, Checks]:
    """Ready when every check says "ok"."""
    return all(v == OK for v in checks.values()), dict(checks)


async def database_check(sessions: async_sessionmaker[AsyncSession]) -> str:
    """`ok` when a `SELECT 1` goes through, else why not (the driver's exception type, no credentials)."""
    try:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        return f"unavailable: {type(exc).__name__}"
    return OK


def database_check_sync(engine: Engine) -> str:
    """The synchronous twin of database_check, for the SCP's pooled engine."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        return f"unavailable: {type(exc).__name__}"
    return OK


def nats_check(connected: bool) -> str:
    return OK if connected else "unavailable"


async def _always_ok() -> tuple[bool, Checks]:
    return True, {}


def _always_ok_sync() -> tuple[bool, Checks]:
    return True, {}


def _liveness_body(ok: bool, checks: Checks) -> tuple[int, bytes]:
    body: dict[str, Any] = {"status": OK if ok else "failing"}
    if checks:
        body["checks"] = checks
    return (200 if ok else 503), json.dumps(body).encode()


def _readiness_body(ok: bool, checks: Checks) -> tuple[int, bytes]:
    return (200 if ok else 503), json.dumps({"ready": ok, "checks": checks}).encode()


def _metrics_body(registry: CollectorRegistry | None, accept: str) -> tuple[int, bytes, str]:
    if registry is None:
        return 404, b'{"error": "no metrics"}', "application/json"
    encoder, content_type = choose_encoder(accept)
    return 200, encoder(registry), content_type


def _failed(what: str, exc: BaseException) -> tuple[bool, Checks]:
    if isinstance(exc, TimeoutError):
        return False, {what: f"timed out after {CHECK_TIMEOUT:g} s"}
    logger.warning("%s check raised %s", what, type(exc).__name__)
    return False, {what: f"error: {type(exc).__name__}"}


class HealthServer:
    """The asyncio server: `await start(host, port)`, then `await close()` (or `async with`)."""

    def __init__(
        self,
        readiness: Probe,
        registry: CollectorRegistry | None = None,
        *,
        liveness: Probe | None = None,
        before_scrape: Sequence[ScrapeHook] = (),
    ) -> None:
        self.readiness = readiness
        self.liveness = liveness or _always_ok
        self.registry = registry
        self.before_scrape = tuple(before_scrape)
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self, host: str, port: int) -> HealthServer:
        runner = web.AppRunner(self.application(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info("health and metrics on http://%s:%d", host, self.port)
        return self

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the health server is not started")
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HealthServer:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _run(self, probe: Probe, what: str) -> tuple[bool, Checks]:
        try:
            return await asyncio.wait_for(probe(), CHECK_TIMEOUT)
        except Exception as exc:
            return _failed(what, exc)

    async def _healthz(self, _request: web.Request) -> web.Response:
        status, body = _liveness_body(*await self._run(self.liveness, "liveness"))
        return web.Response(status=status, body=body, content_type="application/json")

    async def _readyz(self, _request: web.Request) -> web.Response:
        status, body = _readiness_body(*await self._run(self.readiness, "readiness"))
        return web.Response(status=status, body=body, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        for hook in self.before_scrape:
            try:
                await asyncio.wait_for(hook(), CHECK_TIMEOUT)
            except Exception as exc:  # a gauge left at its last value beats a failed scrape
                logger.debug("metrics hook failed: %s", type(exc).__name__)
        status, body, content_type = _metrics_body(self.registry, request.headers.get("Accept", ""))
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a probe stuck on a dead database must not hold up shutdown

    def __init__(self, address: tuple[str, int], owner: ThreadedHealthServer) -> None:
        self.owner = owner
        # Read by TCPServer.__init__ when it creates the socket: an IPv6 BindAddress needs AF_INET6.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        content_type = "application/json"
        if path == "/healthz":
            status, body = _liveness_body(*owner.run(owner.liveness, "liveness"))
        elif path == "/readyz":
            status, body = _readiness_body(*owner.run(owner.readiness, "readiness"))
        elif path == "/metrics":
            owner.refresh()
            status, body, content_type = _metrics_body(owner.registry, self.headers.get("Accept", ""))
        else:
            status, body = 404, b'{"error": "not found"}'
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes arrive every few seconds: keep them out of the service log.
        logger.debug("%s %s", self.address_string(), format % args)


class ThreadedHealthServer:
    """The threaded server: `start(host, port)` returns once it listens; `stop()` closes it."""

    def __init__(
        self,
        readiness: SyncProbe,
        registry: CollectorRegistry | None = None,
        *,
        liveness: SyncProbe | None = None,
        before_scrape: Sequence[SyncScrapeHook] = (),
    ) -> None:
        self.readiness = readiness
        self.liveness = liveness or _always_ok_sync
        self.registry = registry
        self.before_scrape = tuple(before_scrape)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> ThreadedHealthServer:
        server = _Server((host, port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="health-http", daemon=True
        )
        self._thread.start()
        logger.info("health and metrics on http://%s:%d", host, self.port)
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the health server is not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def run(self, probe: SyncProbe, what: str) -> tuple[bool, Checks]:
        try:
            return probe()
        except Exception as exc:
            return _failed(what, exc)

    def refresh(self) -> None:
        for hook in self.before_scrape:
            try:
                hook()
            except Exception as exc:  # a gauge left at its last value beats a failed scrape
                logger.debug("metrics hook failed: %s", type(exc).__name__)
