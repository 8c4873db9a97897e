"""Worklist store operations; each change writes its event to the outbox in the same transaction."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, cast

import psycopg
from sqlalchemy import ColumnElement, Table, delete, func, insert, select
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import WORKLIST_CREATED, WORKLIST_DELETED, WORKLIST_UPDATED, Event, worklist_event
from shared.indexing import item_keys, step_rows, summary
from shared.models import OutboxEvent, ScheduledStep, WorklistItem

_ITEMS = cast(Table, WorklistItem.__table__)
_STEPS = cast(Table, ScheduledStep.__table__)
_OUTBOX = cast(Table, OutboxEvent.__table__)


class WorklistNotFound(LookupError):
    def __init__(self, worklist_id: str) -> None:
        super().__init__(f"unknown worklist {worklist_id}")
        self.worklist_id = worklist_id


@dataclass(frozen=True)
class StoredItem:
    id: str
    dataset: dict[str, Any]
    source: str
    source_path: str | None
    created_at: datetime
    updated_at: datetime


def utc(value: datetime) -> datetime:
    """SQLite gives back naive datetimes: every time we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _stored(row: WorklistItem) -> StoredItem:
    return StoredItem(
        id=row.id,
        dataset=json.loads(row.dataset),
        source=row.source,
        source_path=row.source_path,
        created_at=utc(row.created_at),
        updated_at=utc(row.updated_at),
    )


def _encode(dataset: dict[str, Any]) -> str:
    return json.dumps(dataset, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _outbox_row(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "subject": event.subject,
        "payload": event.encode().decode(),
        "created_at": datetime.now(UTC),
    }


def enqueue(session: AsyncSession, event: Event) -> None:
    """Write `event` to the outbox; it is published once the surrounding transaction commits."""
    session.add(OutboxEvent(**_outbox_row(event)))


async def _enqueue_now(session: AsyncSession, event: Event) -> None:
    """enqueue() as one Core INSERT, without the unit-of-work flush at commit that an ORM object costs.

    session.execute autoflushes first, so events enqueue()d earlier in the transaction keep their order.
    """
    await session.execute(insert(_OUTBOX), _outbox_row(event))


async def _insert_steps(session: AsyncSession, item_id: str, dataset: dict[str, Any]) -> None:
    rows = step_rows(dataset)
    if rows:
        # Core INSERTs on the tables rather than ORM bulk inserts on the classes: the same rows, without the
        # ORM's per-statement bookkeeping (a large share of a REST create's CPU).
        await session.execute(insert(_STEPS), [{"item_id": item_id, **row} for row in rows])


def _item_columns(dataset: dict[str, Any]) -> dict[str, Any]:
    keys = item_keys(dataset)
    return {
        "dataset": _encode(dataset),
        "patient_id": keys.patient_id[:64],
        "patient_name": keys.patient_name[:324],
        "accession_number": keys.accession_number[:64],
        "study_instance_uid": keys.study_instance_uid[:64],
    }


async def add_item(
    session: AsyncSession,
    item_id: str,
    dataset: dict[str, Any],
    *,
    source: str,
    source_path: str | None = None,
    source_digest: str | None = None,
    now: datetime | None = None,
) -> StoredItem:
    now = now or datetime.now(UTC)
    columns = _item_columns(dataset)
    await session.execute(
        insert(_ITEMS),
        {
            "id": item_id,
            "source": source,
            "source_path": source_path,
            "source_digest": source_digest,
            "created_at": now,
            "updated_at": now,
            **columns,
        },
    )
    await _insert_steps(session, item_id, dataset)
    event = worklist_event(WORKLIST_CREATED, item_id, summary(dataset), source=source, now=now)
    await _enqueue_now(session, event)
    return StoredItem(
        id=item_id,
        dataset=json.loads(columns["dataset"]),
        source=source,
        source_path=source_path,
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True)
class _CreationRows:
    items: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    outbox: list[dict[str, Any]]


def _creation_rows(items: Sequence[tuple[str, dict[str, Any]]], source: str, now: datetime) -> _CreationRows:
    """The rows and events add_item writes, for many items."""
    return _CreationRows(
        items=[
            {
                "id": item_id,
                "source": source,
                "source_path": None,
                "source_digest": None,
                "created_at": now,
                "updated_at": now,
                **_item_columns(dataset),
            }
            for item_id, dataset in items
        ],
        steps=[{"item_id": item_id, **row} for item_id, dataset in items for row in step_rows(dataset)],
        outbox=[
            _outbox_row(worklist_event(WORKLIST_CREATED, item_id, summary(dataset), source=source, now=now))
            for item_id, dataset in items
        ],
    )


async def add_items(
    session: AsyncSession,
    items: Sequence[tuple[str, dict[str, Any]]],
    *,
    source: str,
    now: datetime | None = None,
) -> None:
    """Create many items at once (bulk loads, benchmarks, REST creates sharing a transaction): the rows and
    events add_item writes, in three multi-row INSERTs instead of three INSERTs per item."""
    if not items:
        return
    rows = _creation_rows(items, source, now or datetime.now(UTC))
    await session.execute(insert(_ITEMS), rows.items)
    if rows.steps:
        await session.execute(insert(_STEPS), rows.steps)
    await session.execute(insert(_OUTBOX), rows.outbox)


async def create_items_pg(
    connection: psycopg.AsyncConnection[Any],
    items: Sequence[tuple[str, dict[str, Any]]],
    *,
    source: str,
    now: datetime | None = None,
) -> None:
    """add_items and its COMMIT on the driver's own (idle) PostgreSQL connection, for REST group commits.

    The same rows, in one statement: an INSERT per table, the first two as WITH clauses of the third, run
    on its own (autocommit), which makes it a transaction that is all written or not at all. One round trip
    instead of BEGIN, three INSERTs and COMMIT; and without SQLAlchemy's per-row parameter processing and
    result set-up, nor executemany's send per row, which were most of a create's database CPU. A batch too
    large for one statement (65,535 parameters: thousands of steps) takes an explicit transaction and more
    INSERTs. Errors are psycopg's.
    """
    if not items:
        return
    rows = _creation_rows(items, source, now or datetime.now(UTC))
    tables = ((_ITEMS, rows.items), (_STEPS, rows.steps), (_OUTBOX, rows.outbox))
    # A raw cursor takes the $n placeholders as they are: psycopg would otherwise parse every statement
    # (too long for its cache) to turn %s into them.
    async with psycopg.AsyncRawCursor(connection) as cursor:
        if sum(len(_pg_columns(table)) * len(table_rows) for table, table_rows in tables) > PG_MAX_PARAMETERS:
            async with connection.transaction():
                for table, table_rows in tables:  # items first: the steps refer to them
                    for statement, values in _pg_inserts(table, table_rows):
                        await cursor.execute(statement, values)
            return
        values = [
            row[name] for table, table_rows in tables for row in table_rows for name in _pg_columns(table)
        ]
        await connection.set_autocommit(True)  # shared.db.psycopg_connection turns it off again
        await cursor.execute(_pg_create(len(rows.items), len(rows.steps)), values, prepare=False)


# The most parameters one PostgreSQL statement takes (the protocol counts them in 16 bits).
PG_MAX_PARAMETERS = 65_535


def _pg_inserts(table: Table, rows: list[dict[str, Any]]) -> Iterator[tuple[str, list[Any]]]:
    """INSERTs of the rows into the table, each within the parameter limit."""
    columns = _pg_columns(table)
    size = PG_MAX_PARAMETERS // len(columns)
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        values = [row[name] for row in chunk for name in columns]
        yield _pg_insert(table, len(chunk), itertools.count(1)), values


@lru_cache(maxsize=256)
def _pg_create(items: int, steps: int) -> str:
    """WITH new_items AS (INSERT items), new_steps AS (INSERT steps) INSERT events, for these counts (a few
    recur: group commits hold up to MAX_BATCH items). The foreign keys are checked at the statement's end."""
    numbers = itertools.count(1)
    clauses = [f"new_items AS ({_pg_insert(_ITEMS, items, numbers)})"]
    if steps:
        clauses.append(f"new_steps AS ({_pg_insert(_STEPS, steps, numbers)})")
    return f"WITH {', '.join(clauses)} {_pg_insert(_OUTBOX, items, numbers)}"


@cache
def _pg_columns(table: Table) -> tuple[str, ...]:
    """Every column but a generated id (the outbox's follows the VALUES' order: events keep theirs)."""
    return tuple(
        column.name for column in table.columns if not (column.primary_key and column.autoincrement is True)
    )


def _pg_insert(table: Table, rows: int, numbers: Iterator[int]) -> str:
    """INSERT INTO table (columns) VALUES ($n, ...), ... for `rows` rows, numbering on from `numbers`."""
    quote = postgresql_psycopg.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    columns = _pg_columns(table)
    names = ", ".join(quote.quote(name) for name in columns)
    values = ", ".join("(" + ", ".join(f"${next(numbers)}" for _ in columns) + ")" for _ in range(rows))
    return f"INSERT INTO {quote.format_table(table)} ({names}) VALUES {values}"


async def replace_item(
    session: AsyncSession,
    item_id: str,
    dataset: dict[str, Any],
    *,
    source_digest: str | None = None,
    now: datetime | None = None,
) -> StoredItem:
    """Replace the item's content. Its creation time stays: an edit does not restart the deletion delay."""
    row = await session.get(WorklistItem, item_id, with_for_update=True)
    if row is None:
        raise WorklistNotFound(item_id)
    now = now or datetime.now(UTC)
    for column, value in _item_columns(dataset).items():
        setattr(row, column, value)
    row.source_digest = source_digest
    row.updated_at = now
    await session.execute(delete(ScheduledStep).where(ScheduledStep.item_id == item_id))
    await _insert_steps(session, item_id, dataset)
    enqueue(session, worklist_event(WORKLIST_UPDATED, item_id, summary(dataset), source=row.source, now=now))
    await session.flush()
    return _stored(row)


async def lock_items(session: AsyncSession, item_ids: Sequence[str]) -> list[StoredItem]:
    """The items still there among `item_ids`, locked for deletion in id order (as every deleter locks
    them, so two deleters of the same items wait for each other instead of deadlocking)."""
    rows = await session.scalars(
        select(WorklistItem).where(WorklistItem.id.in_(item_ids)).order_by(WorklistItem.id).with_for_update()
    )
    return [_stored(row) for row in rows.all()]


async def remove_items(session: AsyncSession, items: Sequence[StoredItem], *, reason: str) -> set[str]:
    """Delete the items (read by `lock_items` or `get_item`) with one worklist.deleted each; returns the ids
    this transaction deleted. One deleted meanwhile by someone else gets no second event: SQLite has no row
    locks, so RETURNING, not the earlier read, says which rows were still there."""
    ids = [item.id for item in items]
    if not ids:
        return set()
    await session.execute(delete(ScheduledStep).where(ScheduledStep.item_id.in_(ids)))
    gone = set(
        (
            await session.execute(
                delete(WorklistItem).where(WorklistItem.id.in_(ids)).returning(WorklistItem.id),
                execution_options={"synchronize_session": False},
            )
        ).scalars()
    )
    for item in items:
        if item.id in gone:
            event = worklist_event(
                WORKLIST_DELETED, item.id, summary(item.dataset), source=item.source, reason=reason
            )
            enqueue(session, event)
    return gone


async def remove_item(session: AsyncSession, item_id: str, *, reason: str) -> StoredItem:
    """Delete the item; raises WorklistNotFound when it is already gone (callers may count that a success)."""
    locked = await lock_items(session, [item_id])
    if not locked or not await remove_items(session, locked, reason=reason):
        raise WorklistNotFound(item_id)
    return locked[0]


async def get_item(session: AsyncSession, item_id: str) -> StoredItem:
    row = await session.get(WorklistItem, item_id)
    if row is None:
        raise WorklistNotFound(item_id)
    return _stored(row)


async def list_items(
    session: AsyncSession,
    *,
    limit: int | None = None,
    offset: int = 0,
    where: Sequence[ColumnElement[bool]] = (),
    order_by: Sequence[ColumnElement[Any]] = (),
) -> Sequence[StoredItem]:
    """Items in creation order (or `order_by`), optionally filtered by `where` clauses on worklist_items."""
    order = order_by or (WorklistItem.created_at, WorklistItem.id)
    query = select(WorklistItem).where(*where).order_by(*order).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [_stored(row) for row in (await session.scalars(query)).all()]


async def count_items(session: AsyncSession, *, where: Sequence[ColumnElement[bool]] = ()) -> int:
    query = select(func.count()).select_from(WorklistItem).where(*where)
    return int(await session.scalar(query) or 0)
