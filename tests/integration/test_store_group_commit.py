"""Concurrent REST creates share transactions (shared.group_commit) without sharing each other's failures."""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
from sqlalchemy import func, make_url, select
from sqlalchemy.exc import IntegrityError

from shared.db import create_async_db_engine, session_factory
from shared.group_commit import GroupCommit
from shared.migrate import upgrade
from shared.models import OutboxEvent, ScheduledStep, WorklistItem
from tests.support.dicom_clients import worklist
from tests.support.servers import Postgres


async def test_concurrent_creates_share_transactions_and_each_gets_its_rows_and_event(
    database_url: str,
) -> None:
    engine = create_async_db_engine(database_url)
    commits: list[int] = []
    creates = GroupCommit(engine, source="rest", on_commit=lambda: commits.append(1))
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
    creates = GroupCommit(engine, source="rest")
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
    creates = GroupCommit(engine, source="rest")
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


async def test_a_create_after_the_server_closed_the_pooled_connections_succeeds(postgres: Postgres) -> None:
    # No ping per checkout (liveness="socket", as the API runs): a connection the server ended while it sat
    # in the pool (a restart, an idle timeout, pg_terminate_backend) is replaced, not handed to a create.
    url = postgres.new_database()
    upgrade(url)
    engine = create_async_db_engine(url, liveness="socket", pool_size=2, max_overflow=0)
    creates = GroupCommit(engine, source="rest")
    try:
        await asyncio.gather(*(creates.add_item(f"before-{n}", worklist()) for n in range(4)))
        _terminate_connections(postgres, make_url(url).database or "")
        await creates.add_item("after", worklist(patient_id="AFTER"))
        async with session_factory(engine)() as session:
            stored = set(await session.scalars(select(WorklistItem.id)))
    finally:
        await creates.close()
        await engine.dispose()
    assert "after" in stored


def _terminate_connections(postgres: Postgres, database: str) -> None:
    with psycopg.connect(postgres.admin_uri, autocommit=True) as admin:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        pids = [pid for (pid,) in admin.execute(query, (database,)).fetchall()]
        assert pids, "the pool holds no connection to end"
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 5
        while admin.execute(query, (database,)).fetchall():
            assert time.monotonic() < deadline, "the connections did not end"
            time.sleep(0.01)
