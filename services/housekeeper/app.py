"""The housekeeper: deletes items whose study is stable or whose delay is over, and syncs the `.wl` folder.

Several replicas may run against one PostgreSQL and one NATS; none processes a deletion twice, and none fails
because another got there first:
- study.stable (and worklist.created/updated, to catch items whose study is already stable) come through one
  durable JetStream pull consumer shared by all replicas: JetStream hands each message to one of them, and
  keeps it in the stream while all are down.
- Every deletion is idempotent: an item already gone counts as done, and the row locks taken while
  deleting (SELECT ... FOR UPDATE, in id order) make a concurrent second deletion find nothing, so exactly
  one worklist.deleted is written.
- The periodic pass (folder sync, remembered stable studies, expiry) runs under a PostgreSQL advisory lock
  (pg_try_advisory_xact_lock): a replica that does not get it skips that pass. Expiry also selects with
  FOR UPDATE SKIP LOCKED, and the Orthanc connector locks its position row the same way.
Every event is written to the outbox in the transaction of its change, and an OutboxRelay publishes it.
/healthz, /readyz and /metrics are served on HousekeeperHealthPort (0: not served).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.housekeeper import deletions
from services.housekeeper.consumer import EventConsumer
from services.housekeeper.options import Tunables
from services.housekeeper.orthanc import OrthancConnector
from services.housekeeper.passes import Housekeeping
from services.housekeeper.sync import FolderSync
from services.housekeeper.watch import watch_folder
from shared import folder
from shared.bus import Bus, OutboxRelay
from shared.config import ConfigError, Settings
from shared.db import create_async_db_engine, session_factory
from shared.events import REASON_STUDY_STABLE, STUDY_STABLE
from shared.health_http import OK, Checks, HealthServer, database_check, nats_check, verdict
from shared.metrics import HousekeeperMetrics, refresh_outbox_backlog

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
# How long the outbox relay may take to finish the batch under way (NATS slow to acknowledge) when stopping.
RELAY_STOP_TIMEOUT = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def directory_problem(settings: Settings) -> str | None:
    """Why the configured folder cannot be used, or None (also None without a folder)."""
    worklists = settings.worklists
    if worklists.directory is None:
        return None
    # Deleting a file item on a stable study removes its file: that needs a writable folder too.
    writable = worklists.folder_mode or worklists.delete_on_stable_study
    return folder.directory_problem(worklists.directory, writable=writable)


def check_directory(settings: Settings) -> None:
    """Start-up check: a configured folder that is missing or unusable stops the service, saying why."""
    problem = directory_problem(settings)
    if problem:
        raise folder.FolderError(problem)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s stopped unexpectedly", task.get_name(), exc_info=task.exception())


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it, cancelling again if needed: on Python 3.11 asyncio.wait_for swallows a
    cancellation that arrives as its awaitable completes (CPython gh-86296), and OutboxRelay.run uses it."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)


class Housekeeper:
    """One housekeeper replica; `run(stop)` returns once `stop` is set and everything is closed."""

    def __init__(
        self,
        settings: Settings,
        tunables: Tunables | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        name: str = "mwl-housekeeper",
        metrics: HousekeeperMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.tunables = tunables or Tunables()
        self.clock = clock
        self.name = name
        self.metrics = metrics or HousekeeperMetrics()
        self.health: HealthServer | None = None
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        self.bus: Bus | None = None
        self.relay: OutboxRelay | None = None
        self.sync: FolderSync | None = None
        self.housekeeping: Housekeeping | None = None
        self.started = asyncio.Event()

    async def readiness(self) -> tuple[bool, Checks]:
        """/readyz: started, the database answers, NATS connected and, with a folder configured, usable."""
        if not self.started.is_set() or self.sessions is None or self.bus is None:
            return False, {"housekeeper": "starting"}
        checks: Checks = {
            "database": await database_check(self.sessions),
            "nats": nats_check(self.bus.is_connected),
        }
        if self.settings.worklists.directory is not None:
            problem = await asyncio.to_thread(directory_problem, self.settings)
            # A folder that exists but cannot be listed shows only in the sync's last pass.
            checks["folder"] = problem or (self.sync.problem if self.sync else None) or OK
        return verdict(checks)

    async def run(self, stop: asyncio.Event) -> None:
        check_directory(self.settings)
        self.engine = create_async_db_engine(self.settings.database_url)
        self.sessions = session_factory(self.engine)
        self.bus = bus = Bus(self.settings.nats_url, self.name)
        self.relay = relay = OutboxRelay(self.sessions, bus, poll_interval=self.settings.outbox_poll_interval)
        bus.on_connect(lambda _nc: self._wake_relay())
        bus.start()
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        workers: list[asyncio.Task[None]] = []
        try:
            await self._serve_health()
            for name, coro in self._workers(stop):
                workers.append(asyncio.create_task(coro, name=name))
            for task in (relay_task, *workers):
                task.add_done_callback(_report_crash)
            self.started.set()
            await stop.wait()
        finally:
            await self._shut_down(workers, relay_task)

    async def _serve_health(self) -> None:
        """/healthz, /readyz and /metrics on HousekeeperHealthPort, from before the start (not ready yet)."""
        port = self.settings.housekeeper_health_port
        if not port:
            return
        sessions = self.sessions
        assert sessions is not None

        async def refresh_backlog() -> None:
            await refresh_outbox_backlog(self.metrics.outbox_backlog, sessions)

        server = HealthServer(self.readiness, self.metrics.registry, before_scrape=[refresh_backlog])
        try:
            self.health = await server.start(self.settings.bind_address, port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve HousekeeperHealthPort {port} on {self.settings.bind_address}: "
                f"{exc.strerror or exc}"
            ) from None

    def _workers(self, stop: asyncio.Event) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        assert self.engine is not None and self.sessions is not None and self.bus is not None
        worklists = self.settings.worklists
        if worklists.directory is not None:
            self.sync = FolderSync(
                self.sessions,
                worklists.directory,
                default_character_set=self.settings.default_character_set,
                settle_seconds=worklists.file_settle_seconds,
                clock=self.clock,
                on_deleted=self.metrics.deleted,
            )
        self.housekeeping = housekeeping = Housekeeping(
            self.engine,
            self.sessions,
            worklists,
            sync=self.sync,
            clock=self.clock,
            on_events=self._wake_relay_now,
            on_deleted=self.metrics.deleted,
        )
        consumer = EventConsumer(
            self.bus,
            self._on_event,
            durable=self.tunables.consumer_name,
            ack_wait=self.tunables.ack_wait_seconds,
        )
        workers: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("housekeeping", housekeeping.run(stop)),
            ("event-consumer", consumer.run(stop)),
        ]
        if worklists.directory is not None and worklists.watch_directory:
            workers.append(("folder-watch", watch_folder(worklists.directory, housekeeping.wake, stop)))
        if self.settings.orthanc_connector.enabled:
            connector = OrthancConnector(
                self.sessions,
                self.settings.orthanc_connector,
                clock=self.clock,
                on_events=self._wake_relay_now,
                batch_size=self.tunables.connector_batch_size,
                timeout=self.tunables.connector_timeout,
            )
            workers.append(("orthanc-connector", connector.run(stop)))
        return workers

    async def _on_event(self, subject: str, payload: dict[str, Any]) -> None:
        assert self.sessions is not None
        worklists = self.settings.worklists
        if not worklists.delete_on_stable_study:
            return  # nothing to do; acked so the events do not pile up
        now = self.clock()
        async with self.sessions() as session, session.begin():
            if subject == STUDY_STABLE:
                deleted = await deletions.on_study_stable(
                    session, worklists, payload, now=now, memory_hours=worklists.stable_study_memory_hours
                )
            else:
                deleted = await deletions.on_item_changed(session, worklists, payload, now=now)
        if deleted:
            self.metrics.deleted(REASON_STUDY_STABLE, deleted)
            self._wake_relay_now()

    async def _wake_relay(self) -> None:
        self._wake_relay_now()

    def _wake_relay_now(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def _shut_down(self, workers: list[asyncio.Task[None]], relay_task: asyncio.Task[None]) -> None:
        if self.health is not None:
            await self.health.close()
            self.health = None
        # Workers watch `stop` and finish what they hold (an event being handled is acked, not abandoned);
        # only one stuck past STOP_TIMEOUT is cancelled. Crashes were logged when they happened.
        if workers:
            _done, stuck = await asyncio.wait(workers, timeout=STOP_TIMEOUT)
            for task in stuck:
                await _cancel(task)
        if self.relay is not None:
            self.relay.stop()
            await asyncio.wait([relay_task], timeout=RELAY_STOP_TIMEOUT)
        await _cancel(relay_task)
        await asyncio.gather(*workers, relay_task, return_exceptions=True)
        if self.relay is not None:
            with suppress(Exception):
                await self.relay.publish_batch()  # hand over what the last moments wrote, rather than wait
        if self.bus is not None:
            await self.bus.close()
        if self.engine is not None:
            await self.engine.dispose()
