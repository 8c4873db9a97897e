"""Group commit for REST creates: the creates that arrive while a transaction is under way share the next one.

A create on its own costs a transaction: BEGIN, the pool's ping, three INSERTs, COMMIT (and an fsync), and
on the 2-core bench machine those round trips, not the rows, were most of the API's CPU per create. The
creates queued meanwhile are written together by `store.add_items` (the same rows and events `store.add_item`
writes, one executemany per table), and each request is answered once the transaction holding its item has
committed. Nothing waits to fill a batch: a lone create is written at once, so latency does not grow.

On PostgreSQL the batch goes through psycopg itself (`store.create_items_pg`, `db.psycopg_connection`):
one statement, one round trip, without SQLAlchemy's per-statement work. Its errors are turned into
SQLAlchemy's (IntegrityError, OperationalError...), so callers see what the session path would raise.

Failures stay per request: when the database is unreachable every create of the batch gets that error (each
would have got it alone); any other failure is retried one create per transaction, so only the request whose
item caused it fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import store
from shared.db import is_psycopg, psycopg_connection, session_factory

# Bounds a transaction's size (and the rows a retry after a failure redoes one by one).
MAX_BATCH = 64


@dataclass
class _Create:
    item_id: str
    dataset: dict[str, Any]
    done: asyncio.Future[None]


class GroupCommit:
    """`await add_item(...)` returns once the item is committed; concurrent calls share transactions."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        source: str,
        on_commit: Callable[[], None] = lambda: None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self._psycopg = is_psycopg(engine)
        self.source = source
        self.on_commit = on_commit  # the outbox relay's wake-up: the transaction wrote events
        self.max_batch = max_batch
        self._queue: list[_Create] = []
        self._writer: asyncio.Task[None] | None = None

    async def add_item(self, item_id: str, dataset: dict[str, Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Create(item_id, dataset, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="group-commit")
        # shield: a caller that goes away does not cancel the write its item is part of.
        await asyncio.shield(done)

    async def close(self) -> None:
        """Finish the writes under way (the service is stopping; the engine is disposed afterwards)."""
        if self._writer is not None:
            await asyncio.wait([self._writer])

    async def _write_queued(self) -> None:
        batch: list[_Create] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                await self._write_batch(batch)
        finally:  # cancelled (the loop is being torn down): no unanswered caller is left waiting forever
            for create in [*batch, *self._queue]:
                create.done.cancel()

    async def _write_batch(self, batch: list[_Create]) -> None:
        try:
            await self._write(batch)
        except (OperationalError, InterfaceError) as exc:
            # The database is away: every create would fail alike, so none is retried alone.
            for create in batch:
                _fail(create, exc)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            for create in batch:  # one item's rows were refused: find it, commit the others
                try:
                    await self._write([create])
                except Exception as alone:
                    _fail(create, alone)
                else:
                    self._committed([create])
        else:
            self._committed(batch)

    async def _write(self, batch: list[_Create]) -> None:
        items = [(create.item_id, create.dataset) for create in batch]
        if self._psycopg:
            async with psycopg_connection(self.engine) as connection:
                await store.create_items_pg(connection, items, source=self.source, now=datetime.now(UTC))
            return
        async with self.sessions() as session, session.begin():
            await store.add_items(session, items, source=self.source, now=datetime.now(UTC))

    def _committed(self, batch: list[_Create]) -> None:
        self.on_commit()
        for create in batch:
            if not create.done.done():
                create.done.set_result(None)


def _fail(create: _Create, exc: BaseException) -> None:
    if not create.done.done():
        create.done.set_exception(exc)
