"""Replicas on one PostgreSQL and one NATS: no deletion done twice, no error when another got there first, and
no event lost by a housekeeper restarted mid-stream."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import folder
from shared.config import Settings, load_settings
from shared.migrate import upgrade
from tests.support.housekeeper import (
    Store,
    consumer_idle,
    document,
    eventually,
    more_passes,
    publish,
    running,
    stream_events,
)
from tests.support.servers import NatsServer, Postgres


def study(index: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{index + 1}"


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    url = postgres.new_database()
    upgrade(url)
    return url


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Store]:
    store = Store(pg_url)
    yield store
    await store.close()


def replica_settings(
    pg_url: str, nats_url: str, directory: Path | None = None, **worklists: object
) -> Settings:
    section: dict[str, object] = {"HousekeepingInterval": 0.2, "FileSettleTime": 0, **worklists}
    if directory is not None:
        section.update(Directory=str(directory), SaveInOrthancDatabase=True)
    overrides = {"DatabaseUrl": pg_url, "NatsUrl": nats_url, "HousekeeperHealthPort": 0, "Worklists": section}
    return load_settings(environ={}, overrides=overrides)


async def test_two_housekeepers_never_delete_twice_nor_fail_on_each_other(
    pg_url: str, db: Store, nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    studies = 12
    for index in range(studies):
        await db.add(f"s{index}-a", StudyInstanceUID=study(index))
        await db.add(f"s{index}-b", StudyInstanceUID=study(index), AccessionNumber=f"B{index}")
    for index in range(4):
        await db.add(f"no-study-{index}", StudyInstanceUID="")
    old = datetime.now(UTC) - timedelta(hours=2)
    for index in range(6):
        await db.add(f"expired-{index}", now=old, StudyInstanceUID=study(100 + index))
    directory = tmp_path / "worklists"
    directory.mkdir()
    for index in range(5):
        folder.write_atomically(
            directory / f"ris{index}.wl", folder.encode_worklist(document(PatientID=f"R{index}"))
        )
    settings = replica_settings(pg_url, nats_server.url, directory, DeleteWorklistsDelay=1)
    kept = {f"no-study-{i}" for i in range(4)} | {f"ris{i}" for i in range(5)}

    async with running(settings, name="hk-a") as first, running(settings, name="hk-b") as second:
        for _round in range(2):  # every study reported twice, as two PACS nodes might
            for index in range(studies):
                await publish(nats_server.url, "study.stable", {"StudyInstanceUID": study(index)})
        await eventually(lambda: db.ids_are(kept), within=20)
        await eventually(lambda: consumer_idle(nats_server.url), what="every event handled")
        await more_passes(first, 3)
        await more_passes(second, 3)
        await eventually(db.outbox_empty)

    events = await stream_events(nats_server.url)
    deleted = Counter(p["worklist_id"] for s, p in events if s == "worklist.deleted")
    assert set(deleted) == {f"s{i}-{x}" for i in range(studies) for x in "ab"} | {
        f"expired-{i}" for i in range(6)
    }
    assert set(deleted.values()) == {1}
    created = Counter(
        p["worklist_id"] for s, p in events if s == "worklist.created" and p["source"] == "folder"
    )
    assert created == Counter({f"ris{i}": 1 for i in range(5)})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records
    ]


async def test_a_housekeeper_restarted_mid_stream_misses_no_event(
    pg_url: str, db: Store, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    total = 40
    for index in range(total):
        await db.add(f"item{index}", StudyInstanceUID=study(index))
    settings = replica_settings(pg_url, nats_server.url)

    async with running(settings, name="before"):
        for index in range(total // 2):
            await publish(nats_server.url, "study.stable", {"StudyInstanceUID": study(index)})
        # Stop while the stream is being worked through.
        await eventually(lambda: _fewer_than(db, total), interval=0.005)
    remaining_at_stop = len(await db.ids())
    for index in range(total // 2, total):  # published while no housekeeper runs
        await publish(nats_server.url, "study.stable", {"StudyInstanceUID": study(index)})
    await asyncio.sleep(0)
    assert len(await db.ids()) == remaining_at_stop

    async with running(settings, name="after"):
        await eventually(lambda: db.ids_are(set()), within=20)
        await eventually(db.outbox_empty)

    deleted = Counter(
        p["worklist_id"] for s, p in await stream_events(nats_server.url) if s == "worklist.deleted"
    )
    assert deleted == Counter({f"item{i}": 1 for i in range(total)})
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def _fewer_than(db: Store, count: int) -> bool:
    return len(await db.ids()) < count
