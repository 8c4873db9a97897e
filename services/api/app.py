"""The API application factory: store, bus and outbox relay opened and closed with the app; metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress

from aiohttp import web

from services.api.auth import auth_middleware
from services.api.errors import error_middleware
from services.api.keys import BUS, CREATES, METRICS, RELAY, SESSIONS, SETTINGS
from services.api.live import setup_live
from services.api.metrics import setup_metrics
from services.api.routes import setup_routes
from shared.bus import Bus, OutboxRelay
from shared.config import Settings
from shared.db import create_async_db_engine, session_factory
from shared.group_commit import GroupCommit
from shared.metrics import ApiMetrics, refresh_outbox_backlog
from shared.models import SOURCE_REST

# How long the outbox relay may take to finish the batch under way (NATS slow to acknowledge) when stopping.
RELAY_STOP_TIMEOUT = 5.0


async def _store_and_bus(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # No ping round trip per request: a connection the server closed is noticed on its socket (shared.db).
    engine = create_async_db_engine(settings.database_url, liveness="socket")
    app[SESSIONS] = session_factory(engine)
    bus = Bus(settings.nats_url, "mwl-api")
    app[BUS] = bus
    bus.start()
    relay = OutboxRelay(app[SESSIONS], bus, poll_interval=settings.outbox_poll_interval)
    app[RELAY] = relay
    relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
    bus.on_connect(lambda _nc: _wake(relay))
    app[CREATES] = creates = GroupCommit(engine, source=SOURCE_REST, on_commit=relay.wake)
    yield
    await creates.close()
    relay.stop()  # the batch under way is finished rather than cut off (its connection would be lost)
    await asyncio.wait([relay_task], timeout=RELAY_STOP_TIMEOUT)
    relay_task.cancel()
    with suppress(asyncio.CancelledError):
        await relay_task
    await bus.close()
    await engine.dispose()


async def _wake(relay: OutboxRelay) -> None:
    relay.wake()


def create_app(settings: Settings, metrics: ApiMetrics | None = None) -> web.Application:
    # Authentication after the error middleware (its refusals use the same JSON shape), before every view.
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(settings)], client_max_size=settings.max_body_size
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics = metrics or ApiMetrics()
    app.cleanup_ctx.append(_store_and_bus)
    setup_live(app)  # after _store_and_bus: it subscribes through the Bus
    setup_routes(app)

    async def refresh_backlog() -> None:
        await refresh_outbox_backlog(metrics.outbox_backlog, app[SESSIONS])

    # The metrics middleware goes first, so it counts the status the error and auth middlewares answered with.
    setup_metrics(app, metrics, [refresh_backlog])
    return app
