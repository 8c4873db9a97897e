"""The API application factory: store, bus and outbox relay opened and closed with the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress

from aiohttp import web

from services.api.errors import error_middleware
from services.api.keys import BUS, RELAY, SESSIONS, SETTINGS
from services.api.routes import setup_routes
from shared.bus import Bus, OutboxRelay
from shared.config import Settings
from shared.db import create_async_db_engine, session_factory


async def _store_and_bus(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = create_async_db_engine(settings.database_url)
    app[SESSIONS] = session_factory(engine)
    bus = Bus(settings.nats_url, "mwl-api")
    app[BUS] = bus
    bus.start()
    relay = OutboxRelay(app[SESSIONS], bus, poll_interval=settings.outbox_poll_interval)
    app[RELAY] = relay
    relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
    bus.on_connect(lambda _nc: _wake(relay))
    yield
    relay_task.cancel()
    with suppress(asyncio.CancelledError):
        await relay_task
    await bus.close()
    await engine.dispose()


async def _wake(relay: OutboxRelay) -> None:
    relay.wake()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_size)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_store_and_bus)
    setup_routes(app)
    return app
