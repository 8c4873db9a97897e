"""NATS connection kept alive in the background, the JetStream stream, and the outbox relay that feeds it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import NamedTuple, cast

import nats
import psycopg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck, StreamConfig
from nats.js.errors import BadRequestError
from sqlalchemy import Table, delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db import is_psycopg, psycopg_connection
from shared.events import STREAM, STREAM_SUBJECTS
from shared.models import OutboxEvent

logger = logging.getLogger(__name__)

STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600
# How long JetStream remembers a Nats-Msg-Id (the event id) to drop a re-sent event. A relay re-sends the
# events it published but could not clear from the outbox (the database went away, or the process died, in
# between) once it can again: JetStream's default two minutes would let the duplicates of any longer outage
# through.
STREAM_DUPLICATE_WINDOW_SECONDS = 24 * 3600
# How long the relay waits for JetStream to acknowledge the events it sent (nats-py's request default).
PUBLISH_ACK_TIMEOUT_SECONDS = 5.0

_OUTBOX = cast(Table, OutboxEvent.__table__)


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
        self._js: JetStreamContext | None = None

    def on_connect(self, callback: Callable[[NATS], Awaitable[None]]) -> None:
        """Run `callback` once the first connection is made (subscriptions, stream set-up)."""
        self._on_connect.append(callback)

    @property
    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def jetstream(self) -> JetStreamContext | None:
        """The connection's JetStream context, one for its lifetime: a context holds the subscription its
        asynchronous publishes are acknowledged on, which a context per call would open anew each time."""
        if not self.is_connected or self.nc is None:
            return None
        if self._js is None:
            self._js = self.nc.jetstream()
        return self._js

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
        engine = sessions.kw.get("bind")
        self._engine = engine if isinstance(engine, AsyncEngine) and is_psycopg(engine) else None
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
        if self._engine is not None:
            return await self._publish_batch_pg(js, self._engine)
        async with self.sessions() as session, session.begin():
            # Core rows, not ORM objects: the relay reads and deletes them, it never changes them.
            result = await session.execute(
                select(_OUTBOX.c.id, _OUTBOX.c.event_id, _OUTBOX.c.subject, _OUTBOX.c.payload)
                .order_by(_OUTBOX.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = [_OutboxRow(*row) for row in result]
            self._reachable()
            published = await _publish_in_order(js, rows)
            if published:
                await session.execute(delete(_OUTBOX).where(_OUTBOX.c.id.in_(published)))
            return len(published) if len(published) == len(rows) else 0

    async def _publish_batch_pg(self, js: JetStreamContext, engine: AsyncEngine) -> int:
        """publish_batch on PostgreSQL, in two round trips: BEGIN with the locking read, then the DELETE
        with COMMIT (instead of four, each through SQLAlchemy): a relay pass follows nearly every commit
        of REST creates, so its cost counts per create."""
        async with psycopg_connection(engine) as connection:
            await connection.set_autocommit(True)  # the BEGIN and COMMIT are ours, sent with the statements
            async with psycopg.AsyncRawCursor(connection) as cursor:
                # Simple-protocol queries (no parameters) may hold several statements; the ids are integers.
                await cursor.execute(_PG_LOCK.format(limit=int(self.batch_size)))
                cursor.nextset()
                rows = [_OutboxRow(*row) for row in await cursor.fetchall()]
                self._reachable()
                published = await _publish_in_order(js, rows)
                if published:
                    ids = ", ".join(str(int(row_id)) for row_id in published)
                    await cursor.execute(f"DELETE FROM outbox WHERE id IN ({ids}); COMMIT")
                else:
                    await cursor.execute("COMMIT")
        return len(published) if len(published) == len(rows) else 0

    def _reachable(self) -> None:
        if self._store_away:
            logger.info("outbox relay: database reachable again")
            self._store_away = False


class _OutboxRow(NamedTuple):
    id: int
    event_id: str
    subject: str
    payload: str


# The oldest events not being published by another relay (API replicas share the outbox), locked.
_PG_LOCK = (
    "BEGIN; SELECT id, event_id, subject, payload FROM outbox ORDER BY id LIMIT {limit} "
    "FOR UPDATE SKIP LOCKED"
)


async def _publish_in_order(js: JetStreamContext, rows: Sequence[_OutboxRow]) -> list[int]:
    """Publish the rows' events in order; returns the ids of the leading rows JetStream acknowledged.

    The events are sent back to back and their acknowledgements awaited together, rather than one round
    trip each. One connection delivers them in order, so the stream holds them in order, except after a
    failure: an event refused while a later one was stored would reach the stream after it when re-sent.
    So a window never holds two events of the same worklist item, and an item's later event waits for the
    acknowledgement of its earlier one. What follows a failure stays in the outbox and is re-sent later; the
    event id as Nats-Msg-Id lets JetStream drop those it had already stored.
    """
    published: list[int] = []
    window: list[tuple[int, asyncio.Future[PubAck]]] = []
    keys: set[str] = set()
    for row in rows:
        key = _item_key(row)
        if key in keys:
            if not await _settle(window, published):
                return published
            keys.clear()
        try:
            ack = await js.publish_async(
                row.subject, row.payload.encode(), headers={"Nats-Msg-Id": row.event_id}
            )
        except Exception as exc:  # NATS away: keep this row and the ones after it, in order
            logger.warning("publishing outbox events paused: %s", type(exc).__name__)
            break
        window.append((row.id, ack))
        keys.add(key)
    await _settle(window, published)
    return published


async def _settle(window: list[tuple[int, asyncio.Future[PubAck]]], published: list[int]) -> bool:
    """Wait for the window's acknowledgements; extends `published` with the acknowledged leading rows."""
    if not window:
        return True
    futures = [ack for _, ack in window]
    try:
        async with asyncio.timeout(PUBLISH_ACK_TIMEOUT_SECONDS):
            await asyncio.wait(futures)
    except TimeoutError:
        pass
    ok = True
    for row_id, ack in window:
        if ok and ack.done() and not ack.cancelled() and ack.exception() is None:
            published.append(row_id)
            continue
        if ok:  # NATS away or slow: keep this row and the ones after it, in order
            reason = "TimeoutError" if not ack.done() or ack.cancelled() else type(ack.exception()).__name__
            logger.warning("publishing outbox events paused: %s", reason)
            ok = False
        if not ack.done():
            ack.cancel()  # nats-py forgets it; a late acknowledgement is then ignored
        elif not ack.cancelled():
            ack.exception()  # retrieved: asyncio would otherwise log it as never retrieved
    window.clear()
    return ok


def _item_key(row: _OutboxRow) -> str:
    """The worklist item an event is about (the event id for events about no item: they are independent)."""
    try:
        payload = json.loads(row.payload)
    except ValueError:
        return row.event_id
    key = payload.get("worklist_id") if isinstance(payload, dict) else None
    return str(key) if key is not None else row.event_id
