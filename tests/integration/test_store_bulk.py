"""Bulk creation (shared.store.add_items) leaves the store exactly as one add_item per item would."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from shared import store
from shared.db import create_async_db_engine, session_factory
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
