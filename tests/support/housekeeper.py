"""Housekeeper test helpers: a replica run in-process, polling with deadlines, the store, the stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import nats
from nats.js.api import DeliverPolicy
from sqlalchemy import func, select

from services.housekeeper.app import Housekeeper
from services.housekeeper.options import Tunables
from shared import store
from shared.bus import ensure_stream
from shared.config import Settings
from shared.db import create_async_db_engine, session_factory
from shared.dicom_json import dataset_from_tags, dicom_json_dict
from shared.events import STREAM
from shared.models import SOURCE_REST, OutboxEvent

# An abandoned message redelivered within seconds, not half a minute. (The user options that keep tests fast,
# such as Worklists.FileSettleTime 0, go in the settings each test builds.)
FAST = Tunables(ack_wait_seconds=3.0)


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 15.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll `check` until it is true; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not true after {within}s: {what or check}")
        await asyncio.sleep(interval)


@asynccontextmanager
async def running(
    settings: Settings,
    tunables: Tunables = FAST,
    *,
    clock: Callable[[], datetime] | None = None,
    name: str = "mwl-housekeeper",
) -> AsyncIterator[Housekeeper]:
    """A housekeeper replica running in this event loop until the block ends (then stopped as by SIGTERM)."""
    housekeeper = Housekeeper(settings, tunables, clock=clock or (lambda: datetime.now(UTC)), name=name)
    stop = asyncio.Event()
    task = asyncio.create_task(housekeeper.run(stop))
    started = asyncio.create_task(housekeeper.started.wait())
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if task.done():
        task.result()  # raises the start-up error
    await eventually(lambda: is_ready(housekeeper), what="housekeeper ready")
    try:
        yield housekeeper
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def _true(value: bool) -> bool:
    return value


async def is_ready(housekeeper: Housekeeper) -> bool:
    """What the housekeeper's /readyz would answer: started, database, NATS and folder all fine."""
    ready, _checks = await housekeeper.readiness()
    return ready


async def more_passes(housekeeper: Housekeeper, count: int = 2) -> None:
    """Wait until `count` more periodic passes have run (the last change was seen by a whole pass)."""
    assert housekeeper.housekeeping is not None
    passes = housekeeper.housekeeping
    target = passes.passes + count
    await eventually(lambda: _true(passes.passes >= target), what=f"{count} more passes")


def tags(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientID": "P1",
        "PatientName": "Doe^Jane",
        "AccessionNumber": "A1",
        "StudyInstanceUID": "1.2.3.1",
        "ScheduledProcedureStepSequence": [
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT01",
                "ScheduledProcedureStepStartDate": "20251014",
            }
        ],
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def document(**extra: Any) -> dict[str, Any]:
    """The DICOM JSON of a worklist item."""
    return dicom_json_dict(dataset_from_tags(tags(**extra)))


class Store:
    """Direct access to the store under test (what C-FIND and GET /worklists would serve)."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_async_db_engine(database_url)
        self.sessions = session_factory(self.engine)

    async def add(
        self, item_id: str, *, source: str = SOURCE_REST, now: datetime | None = None, **extra: Any
    ) -> None:
        async with self.sessions() as session, session.begin():
            await store.add_item(session, item_id, document(**extra), source=source, now=now)

    async def items(self) -> dict[str, store.StoredItem]:
        async with self.sessions() as session:
            return {item.id: item for item in await store.list_items(session)}

    async def ids(self) -> set[str]:
        return set(await self.items())

    async def ids_are(self, expected: set[str]) -> bool:
        return await self.ids() == expected

    async def outbox_empty(self) -> bool:
        """True once every event written so far has been published to NATS."""
        async with self.sessions() as session:
            return not await session.scalar(select(func.count()).select_from(OutboxEvent))

    async def close(self) -> None:
        await self.engine.dispose()


async def stream_events(nats_url: str, subject: str = ">") -> list[tuple[str, dict[str, Any]]]:
    """Every event in the stream now (subject, payload), oldest first."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        events: list[tuple[str, dict[str, Any]]] = []
        if not last:
            return events
        sub = await js.subscribe(">", stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        while True:
            msg = await sub.next_msg(timeout=5)
            if subject in (">", msg.subject):
                events.append((msg.subject, json.loads(msg.data)))
            if msg.metadata.sequence.stream >= last:
                return events
    finally:
        await nc.close()


async def publish(nats_url: str, subject: str, payload: dict[str, Any] | bytes) -> None:
    """Publish an event straight to JetStream, as another producer would (making the stream if need be)."""
    nc = await nats.connect(nats_url)
    try:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        js = nc.jetstream()
        await ensure_stream(js)
        await js.publish(subject, data)
    finally:
        await nc.close()


async def consumer_idle(nats_url: str, durable: str = "housekeeper") -> bool:
    """True once the housekeepers' consumer has delivered and seen acknowledged every event in the stream."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info(STREAM, durable)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)
    except Exception:
        return False
    finally:
        await nc.close()
