"""NATS connection kept alive in the background, the JetStream stream, and the outbox relay that feeds it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import STREAM, STREAM_SUBJECTS
from shared.models import OutboxEvent

logger = logging.getLogger(__name__)

STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600
# How long JetStream remembers a Nats-Msg-Id (the event id) to drop a re-sent event. A relay re-sends the
# events it published but could not clear from the outbox (the database went away, or the process died, in
# between) once it can again: JetStream's default two minutes would let the duplicates of any longer outage
# through.
STREAM_DUPLICATE_WINDOW_SECONDS = 24 * 3600


class Bus:
    """A NATS connection that (re)connects by itself; services start and work while NATS is down."""

    def __init__(self, url: str, name: str, *, retry_interval: float = 1.0) -> None:
        self.url = url
        self.name = name
        self.retry_interval = retry_interval
        self.nc: NATS | None = None
        self.connected = asyncio.Event()
        self._on_connect: list[Callable[[NATS], Awaitable[None]]] = []
        self._task: asyncio.Task[None] | None = None

    def on_connect(self, callback: Callable[[NATS], Awaitable[None]]) -> None:
        """Run `callback` once the first connection is made (subscriptions, stream set-up)."""
        self._on_connect.append(callback)

    @property
    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def jetstream(self) -> JetStreamContext | None:
        return self.nc.jetstream() if self.is_connected and self.nc is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name=f"nats-connect-{self.name}")

    async def _connect_forever(self) -> None:
        while True:
            try:
                nc = await nats.connect(
                    self.url,
                    name=self.name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=self.retry_interval,
                    connect_timeout=2,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    closed_cb=self._closed,
                )
            except Exception as exc:  # nats raises several unrelated types while the server is away
                logger.warning("NATS at %s not reachable (%s); retrying", self.url, type(exc).__name__)
                await asyncio.sleep(self.retry_interval)
                continue
            self.nc = nc
            logger.info("connected to NATS at %s", self.url)
            await ensure_stream(nc.jetstream())
            for callback in self._on_connect:
                await callback(nc)
            self.connected.set()
            return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self.nc is not None and not self.nc.is_closed:
            with suppress(Exception):
                await self.nc.drain()

    async def _error(self, exc: Exception) -> None:
        logger.warning("NATS error: %s", exc)

    async def _disconnected(self) -> None:
        logger.warning("disconnected from NATS")

    async def _reconnected(self) -> None:
        logger.info("reconnected to NATS")
        if self.nc is not None:
            with suppress(Exception):
                await ensure_stream(self.nc.jetstream())

    async def _closed(self) -> None:
        logger.info("NATS connection closed")


async def ensure_stream(js: JetStreamContext) -> None:
    """Create the events stream, or leave it as it is when it exists (another service made it)."""
    config = StreamConfig(
        name=STREAM,
        subjects=STREAM_SUBJECTS,
        max_age=STREAM_MAX_AGE_SECONDS,
        duplicate_window=STREAM_DUPLICATE_WINDOW_SECONDS,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


class OutboxRelay:
    """Publishes outbox rows to JetStream in order, deleting each batch once NATS acknowledged it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus,
        *,
        poll_interval: float = 0.5,
        batch_size: int = 200,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self._wake = asyncio.Event()
        self._stopping = False
        self._store_away = False

    def wake(self) -> None:
        """Publish now rather than at the next poll (called after a commit that wrote events)."""
        self._wake.set()

    def stop(self) -> None:
        """Make run() return once the batch under way, if any, is done. Cancelling run() instead can cut a
        transaction off mid-way, and its connection is then dropped rather than returned to the pool."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                while await self.publish_batch() == self.batch_size:
                    pass
            except asyncio.CancelledError:
                raise
            except DBAPIError as exc:
                # The database is away: said once, not with a traceback every poll interval until it returns.
                if not self._store_away:
                    logger.warning(
                        "outbox relay: database unavailable (%s); retrying every %g s",
                        type(exc.orig or exc).__name__,
                        self.poll_interval,
                    )
                    self._store_away = True
            except Exception:
                logger.exception("outbox relay pass failed; retrying")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation (gh-86296).
            if self._stopping:
                return
            with suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def publish_batch(self) -> int:
        """Publish up to batch_size events; returns how many left the outbox."""
        js = self.bus.jetstream()
        if js is None:
            return 0
        async with self.sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    select(OutboxEvent)
                    .order_by(OutboxEvent.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if self._store_away:
                logger.info("outbox relay: database reachable again")
                self._store_away = False
            published: list[int] = []
            for row in rows:
                try:
                    # The event id is the JetStream message id: a batch re-sent after a crash is
                    # de-duplicated.
                    await js.publish(row.subject, row.payload.encode(), headers={"Nats-Msg-Id": row.event_id})
                except Exception as exc:  # NATS away or slow: keep this row and the ones after it, in order
                    logger.warning("publishing outbox events paused: %s", type(exc).__name__)
                    break
                published.append(row.id)
            if published:
                await session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(published)))
            return len(published) if len(published) == len(rows) else 0
