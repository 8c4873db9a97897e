"""Bulk creation (shared.store.add_items) leaves the store exactly as one add_item per item would."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import func, select

from shared import store
from shared.db import create_async_db_engine, session_factory
from shared.group_commit import GroupCommit
from shared.models import OutboxEvent, ScheduledStep, WorklistItem
from tests.support.dicom_clients import worklist

ITEMS = [
    worklist(patient_id="P1", accession="A1"),
    worklist(
        patient_id="P2", accession="A2", steps=[{}, {"Modality": "MR", "ScheduledStationAETitle": "MR01"}]
    ),
    worklist(patient_id="P3", accession="A3", steps=[]),
]


async def _snapshot(url: str, prefix: str) -> dict[str, Any]:
    engine = create_async_db_engine(url)
    try:
        async with session_factory(engine)() as session:
            items = {
                row.id.removeprefix(prefix): (row.dataset, row.patient_id, row.accession_number)
                for row in await session.scalars(
                    select(WorklistItem).where(WorklistItem.id.like(prefix + "%"))
                )
            }
            steps = sorted(
                (
                    row.item_id.removeprefix(prefix),
                    row.position,
                    row.modality,
                    row.station_aet,
                    row.patient_id,
                )
                for row in await session.scalars(
                    select(ScheduledStep).where(ScheduledStep.item_id.like(prefix + "%"))
                )
            )
            events = await session.scalar(select(func.count()).select_from(OutboxEvent))
        return {"items": items, "steps": steps, "events": events}
    finally:
        await engine.dispose()


async def test_add_items_writes_what_add_item_writes(database_url: str) -> None:
    engine = create_async_db_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            for n, item in enumerate(ITEMS):
                await store.add_item(session, f"one-{n}", item, source="rest")
        one_by_one = await _snapshot(database_url, "one-")
        async with session_factory(engine)() as session, session.begin():
            await store.add_items(
                session, [(f"bulk-{n}", item) for n, item in enumerate(ITEMS)], source="rest"
            )
        bulk = await _snapshot(database_url, "bulk-")
    finally:
        await engine.dispose()
    assert bulk["items"] == one_by_one["items"]
    assert bulk["steps"] == one_by_one["steps"]
    assert len(bulk["steps"]) == 3
    assert bulk["events"] == 2 * len(ITEMS)  # one worklist.created per item, for both ways


async def test_group_commit_writes_what_add_item_writes(database_url: str) -> None:
    # On PostgreSQL the group commit writes through psycopg itself (store.create_items_pg): the same rows.
    engine = create_async_db_engine(database_url)
    creates = GroupCommit(engine, source="rest")
    try:
        async with session_factory(engine)() as session, session.begin():
            for n, item in enumerate(ITEMS):
                await store.add_item(session, f"one-{n}", item, source="rest")
        one_by_one = await _snapshot(database_url, "one-")
        await asyncio.gather(*(creates.add_item(f"group-{n}", item) for n, item in enumerate(ITEMS)))
        grouped = await _snapshot(database_url, "group-")
        async with session_factory(engine)() as session:
            rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
            items = {row.id: row for row in await session.scalars(select(WorklistItem))}
    finally:
        await creates.close()
        await engine.dispose()
    assert grouped["items"] == one_by_one["items"]
    assert grouped["steps"] == one_by_one["steps"]
    assert grouped["events"] == 2 * len(ITEMS)
    events = [json.loads(row.payload) for row in rows[len(ITEMS) :]]
    assert [event["worklist_id"] for event in events] == [f"group-{n}" for n in range(len(ITEMS))]
    assert {row.subject for row in rows} == {"worklist.created"}
    assert {items[f"group-{n}"].source for n in range(len(ITEMS))} == {"rest"}
    assert items["group-0"].created_at == items["group-0"].updated_at


async def test_a_batch_beyond_one_statements_parameters_is_written_whole(database_url: str) -> None:
    # 2 x 2,000 steps x 17 columns: more parameters than one PostgreSQL statement takes.
    engine = create_async_db_engine(database_url)
    creates = GroupCommit(engine, source="rest")
    big = [worklist(patient_id=f"BIG{n}", steps=[{}] * 2000) for n in range(2)]
    try:
        await asyncio.gather(*(creates.add_item(f"big-{n}", item) for n, item in enumerate(big)))
        snapshot = await _snapshot(database_url, "big-")
    finally:
        await creates.close()
        await engine.dispose()
    assert set(snapshot["items"]) == {"0", "1"}
    assert len(snapshot["steps"]) == 4000
    assert snapshot["events"] == 2


async def test_a_session_after_a_group_commit_is_transactional_again(database_url: str) -> None:
    # The group commit writes PostgreSQL in autocommit; the pooled connection must come back without it.
    engine = create_async_db_engine(database_url, pool_size=1, max_overflow=0)
    creates = GroupCommit(engine, source="rest")
    try:
        await creates.add_item("kept", worklist(patient_id="KEPT"))
        async with session_factory(engine)() as session:
            await store.add_item(session, "undone", worklist(patient_id="UNDONE"), source="rest")
            await session.rollback()
        async with session_factory(engine)() as session:
            stored = set(await session.scalars(select(WorklistItem.id)))
    finally:
        await creates.close()
        await engine.dispose()
    assert stored == {"kept"}
