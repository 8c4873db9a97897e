"""The periodic housekeeping pass: folder sync, remembered stable studies, expiry; one replica at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.housekeeper import deletions
from services.housekeeper.sync import FolderSync
from services.housekeeper.timing import wait_for_any
from shared.config import WorklistsSettings
from shared.events import REASON_EXPIRED, REASON_STUDY_STABLE

logger = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the housekeeping pass ("MWLH").
PASS_LOCK_KEY = 0x4D574C48


@asynccontextmanager
async def pass_lock(engine: AsyncEngine) -> AsyncIterator[bool]:
    """True when this replica may run the pass now. PostgreSQL: a transaction-level advisory lock held on its
    own connection, released when the pass ends or the process dies. SQLite is one host's store, and its
    writers are serialised anyway: always True."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.connect() as connection, connection.begin():
        acquired = await connection.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PASS_LOCK_KEY}
        )
        yield bool(acquired)


class Housekeeping:
    """Runs a pass every HousekeepingInterval seconds, or as soon as `wake` is set (a file changed)."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        worklists: WorklistsSettings,
        *,
        sync: FolderSync | None,
        clock: Callable[[], datetime],
        on_events: Callable[[], None],
        on_deleted: Callable[[str, int], None] = lambda _reason, _count: None,
    ) -> None:
        self.engine = engine
        self.sessions = sessions
        self.worklists = worklists
        self.sync = sync
        self.clock = clock
        self.on_events = on_events
        self.on_deleted = on_deleted  # (reason, count) after each committed batch, for the metrics
        self.wake = asyncio.Event()
        self.passes = 0  # completed passes, whether this replica led them or not (for tests and metrics)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("housekeeping pass failed; retrying at the next one")
            await wait_for_any([stop, self.wake], self.worklists.housekeeping_interval)

    async def run_once(self) -> None:
        async with pass_lock(self.engine) as leader:
            if not leader:
                self.passes += 1
                return  # another replica is running this pass
            changes = 0
            if self.sync is not None:
                changes += await self._step("folder sync", self.sync.run_pass)
            if self.worklists.delete_on_stable_study:
                changes += await self._step("stable-study deletion", self._delete_remembered)
            changes += await self._step("expiry", self._expire)
            await self._step("forgetting old stable studies", self._forget)
        self.passes += 1
        if changes:
            self.on_events()

    async def _step(self, name: str, step: Callable[[], Awaitable[int]]) -> int:
        # One failing step (a database hiccup) must not keep the others from running.
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("housekeeping step %s failed; retrying at the next pass", name)
            return 0

    async def _delete_remembered(self) -> int:
        total = 0
        while True:
            async with self.sessions() as session, session.begin():
                deleted = await deletions.delete_remembered(session, self.worklists, now=self.clock())
            self.on_deleted(REASON_STUDY_STABLE, deleted)
            total += deleted
            if deleted < deletions.BATCH:
                return total

    async def _expire(self) -> int:
        if self.worklists.delete_delay_hours <= 0:
            return 0
        total = 0
        while True:
            async with self.sessions() as session, session.begin():
                deleted = await deletions.expire_items(
                    session, self.worklists, now=self.clock(), delay_hours=self.worklists.delete_delay_hours
                )
            self.on_deleted(REASON_EXPIRED, deleted)
            total += deleted
            if deleted < deletions.BATCH:
                return total

    async def _forget(self) -> int:
        async with self.sessions() as session, session.begin():
            await deletions.forget_stable_studies(session, now=self.clock())
        return 0
