"""Worklist store operations; each change writes its event to the outbox in the same transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, func, insert, select
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
    now = now or datetime.now(UTC)
    item_rows = [
        {"id": item_id, "source": source, "created_at": now, "updated_at": now, **_item_columns(dataset)}
        for item_id, dataset in items
    ]
    await session.execute(insert(_ITEMS), item_rows)
    steps = [{"item_id": item_id, **row} for item_id, dataset in items for row in step_rows(dataset)]
    if steps:
        await session.execute(insert(_STEPS), steps)
    events = [
        worklist_event(WORKLIST_CREATED, item_id, summary(dataset), source=source, now=now)
        for item_id, dataset in items
    ]
    await session.execute(insert(_OUTBOX), [_outbox_row(event) for event in events])


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
