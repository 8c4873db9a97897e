"""Fault: the housekeeper process killed (SIGKILL) in the middle of a deletion pass over expired items
(DeleteWorklistsDelay); restarted, it finishes the pass: every item deleted exactly once, exactly one
worklist.deleted per item in the stream.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from services.housekeeper.deletions import BATCH
from shared import store
from shared.events import REASON_EXPIRED
from shared.migrate import upgrade
from shared.models import OutboxEvent, WorklistItem
from tests.support.housekeeper import Store, document, eventually, stream_events
from tests.support.servers import NatsServer, Postgres, service_env

# Many batches (deletions.BATCH items each, a transaction each): a kill as soon as the first one committed
# lands in the middle of the pass, with most of it still to do.
EXPIRED_ITEMS = 10 * BATCH
ACCESSION = "00080050"
KILL_WITHIN = 30.0  # seconds a started housekeeper has to make the progress a kill waits for


async def seed(db: Store) -> list[str]:
    """Items past DeleteWorklistsDelay, as left by a bulk load whose events were published long ago (the
    outbox is empty)."""
    expired = [f"expired-{index:04d}" for index in range(EXPIRED_ITEMS)]
    template = document()  # built once: building each item through pydicom would cost seconds
    async with db.sessions() as session, session.begin():
        await store.add_items(
            session,
            [(item_id, {**template, ACCESSION: accession(item_id)}) for item_id in expired],
            source="rest",
            now=datetime.now(UTC) - timedelta(hours=2),
        )
        await session.execute(delete(OutboxEvent))
    return expired


def accession(item_id: str) -> dict[str, object]:
    return {"vr": "SH", "Value": [item_id[-8:]]}


async def count(db: Store) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(WorklistItem)) or 0)


async def outbox_size(db: Store) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)


async def is_empty(db: Store) -> bool:
    return await count(db) == 0


def start(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "services.housekeeper", "--config", str(config_file)],
            stdout=output,
            stderr=output,
            env=service_env(),
        )


async def kill_when(process: subprocess.Popen[bytes], db: Store, below: int) -> int:
    """SIGKILL the housekeeper as soon as fewer than `below` items remain; how many remain after it died."""
    deadline = time.monotonic() + KILL_WITHIN
    while await count(db) >= below:
        assert process.poll() is None, "the housekeeper exited by itself"
        assert time.monotonic() < deadline, f"no deletion progress within {KILL_WITHIN} s"
        await asyncio.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(process.wait, 10)
    return await count(db)


@pytest.mark.timeout(90)
async def test_housekeeper_killed_mid_pass_deletes_each_item_exactly_once(
    postgres: Postgres, nats_server: NatsServer, tmp_path: Path
) -> None:
    database_url = postgres.new_database()
    upgrade(database_url)
    db = Store(database_url)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "DatabaseUrl": database_url,
                "NatsUrl": nats_server.url,
                "HousekeeperHealthPort": 0,
                "Worklists": {"HousekeepingInterval": 0.2, "DeleteWorklistsDelay": 1},
            }
        )
    )
    log = tmp_path / "housekeeper.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        expired = await seed(db)
        processes.append(start(config, log))
        left = await kill_when(processes[-1], db, EXPIRED_ITEMS)
        assert 0 < left < EXPIRED_ITEMS, "the kill did not land in the middle of the pass"
        unpublished = await outbox_size(db)  # events the killed replica committed but had not relayed

        processes.append(restarted := start(config, log))
        await eventually(lambda: is_empty(db), within=30, what="every item deleted")
        await eventually(db.outbox_empty, within=10, what="every worklist.deleted published")
        restarted.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(restarted.wait, 20) == 0

        events = await stream_events(nats_server.url, "worklist.deleted")
        assert Counter(payload["worklist_id"] for _, payload in events) == Counter(expired)
        assert {payload["reason"] for _, payload in events} == {REASON_EXPIRED}
        output = log.read_text(errors="replace")
        assert "Traceback" not in output, output[-3000:]
        print(  # the figures, shown with pytest -s
            f"killed with {left} of {EXPIRED_ITEMS} items left and {unpublished} events in the outbox; "
            f"{len(events)} worklist.deleted events, one per item"
        )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        await db.close()
