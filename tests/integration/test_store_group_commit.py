"""Concurrent REST creates share transactions (shared.group_commit) without sharing each other's failures."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shared.db import create_async_db_engine, session_factory
from shared.group_commit import GroupCommit
from shared.models import OutboxEvent, ScheduledStep, WorklistItem
from tests.support.dicom_clients import worklist


async def test_concurrent_creates_share_transactions_and_each_gets_its_rows_and_event(
    database_url: str,
) -> None:
    engine = create_async_db_engine(database_url)
    commits: list[int] = []
    creates = GroupCommit(session_factory(engine), source="rest", on_commit=lambda: commits.append(1))
    try:
        items = {f"gc-{n}": worklist(patient_id=f"P{n}", accession=f"A{n}") for n in range(20)}
        await asyncio.gather(*(creates.add_item(item_id, item) for item_id, item in items.items()))
        async with session_factory(engine)() as session:
            stored = {row.id: row.patient_id for row in await session.scalars(select(WorklistItem))}
            steps = await session.scalar(select(func.count()).select_from(ScheduledStep))
            events = [json.loads(row.payload) for row in await session.scalars(select(OutboxEvent))]
    finally:
        await creates.close()
        await engine.dispose()
    assert stored == {item_id: f"P{n}" for n, item_id in enumerate(items)}
    assert steps == len(items)  # worklist() has one Scheduled Procedure Step
    assert sorted(event["worklist_id"] for event in events) == sorted(items)
    assert {event["source"] for event in events} == {"rest"}
    assert 1 <= len(commits) < len(items)  # the first alone, the others queued behind it together


async def test_a_create_whose_rows_are_refused_fails_alone(database_url: str) -> None:
    engine = create_async_db_engine(database_url)
    creates = GroupCommit(session_factory(engine), source="rest")
    try:
        await creates.add_item("taken", worklist(patient_id="FIRST"))
        results = await asyncio.gather(
            creates.add_item("gc-a", worklist(patient_id="A")),  # written alone: the others queue meanwhile
            creates.add_item("gc-b", worklist(patient_id="B")),
            creates.add_item("taken", worklist(patient_id="AGAIN")),
            creates.add_item("gc-c", worklist(patient_id="C")),
            return_exceptions=True,
        )
        async with session_factory(engine)() as session:
            stored = {row.id: row.patient_id for row in await session.scalars(select(WorklistItem))}
            events = await session.scalar(select(func.count()).select_from(OutboxEvent))
    finally:
        await creates.close()
        await engine.dispose()
    assert results[:2] == [None, None] and results[3] is None
    assert isinstance(results[2], IntegrityError)
    assert stored == {"taken": "FIRST", "gc-a": "A", "gc-b": "B", "gc-c": "C"}
    assert events == 4


async def test_a_caller_that_goes_away_does_not_undo_its_create(database_url: str) -> None:
    engine = create_async_db_engine(database_url)
    creates = GroupCommit(session_factory(engine), source="rest")
    try:
        waiting = asyncio.create_task(creates.add_item("gc-gone", worklist(patient_id="GONE")))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await creates.close()
        async with session_factory(engine)() as session:
            stored = await session.get(WorklistItem, "gc-gone")
    finally:
        await engine.dispose()
    assert stored is not None
