"""The deletions the housekeeper decides — stable study (now or remembered), expiry — each one idempotent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from shared import folder, retention, store
from shared.config import WorklistsSettings
from shared.events import REASON_EXPIRED, REASON_STUDY_STABLE
from shared.models import SOURCE_REST, StableStudy, WorklistItem
from shared.store import utc

logger = logging.getLogger(__name__)

BATCH = 200


class InvalidEvent(ValueError):
    """An event the housekeeper cannot act on; redelivering it would not help."""


async def delete_items(
    session: AsyncSession, worklists: WorklistsSettings, item_ids: Iterable[str], *, reason: str
) -> int:
    """Delete each item (and its file) with one worklist.deleted each; one already gone was deleted by another
    replica or the API: fine. A few statements per BATCH items, not several per item: a pass over thousands
    of expired items holds its transaction and the pass lock for a moment, not for minutes."""
    ids = sorted(set(item_ids))
    deleted = 0
    for start in range(0, len(ids), BATCH):
        deleted += await _delete_batch(session, worklists, ids[start : start + BATCH], reason)
    return deleted


async def _delete_batch(
    session: AsyncSession, worklists: WorklistsSettings, ids: list[str], reason: str
) -> int:
    kept = []
    for item in await store.lock_items(session, ids):
        if item.source_path is not None and worklists.directory is not None:
            # The file goes first (else the folder sync would bring the item back); if it cannot be
            # removed, the item stays and nothing is written for it.
            try:
                await asyncio.to_thread(folder.remove_file, worklists.directory / item.source_path)
            except OSError as exc:
                logger.error(
                    "cannot remove the file of worklist %s (%s); the item stays", item.id, exc.strerror
                )
                continue
        kept.append(item)
    return len(await store.remove_items(session, kept, reason=reason))


async def on_study_stable(
    session: AsyncSession,
    worklists: WorklistsSettings,
    payload: dict[str, Any],
    *,
    now: datetime,
    memory_hours: float,
) -> int:
    """Delete the items of a stable study and remember it, so items created after it go too."""
    uid = retention.normalize_uid(payload.get("StudyInstanceUID"))
    if not uid:
        raise InvalidEvent("study.stable without a StudyInstanceUID")
    stable_at = retention.stable_study_time(payload.get("time"), now)
    until = retention.remember_until(stable_at, memory_hours)
    if retention.is_remembered(until, now):
        await _remember(
            session, uid, str(payload.get("event_id", "")), str(payload.get("source", "")), stable_at, until
        )
    rows = await session.execute(
        select(WorklistItem.id, WorklistItem.study_instance_uid)
        .where(WorklistItem.study_instance_uid == uid)
        .order_by(WorklistItem.id)
    )
    ids = [item_id for item_id, item_uid in rows if retention.deleted_by_stable_study(item_uid, uid)]
    return await delete_items(session, worklists, ids, reason=REASON_STUDY_STABLE)


async def on_item_changed(
    session: AsyncSession, worklists: WorklistsSettings, payload: dict[str, Any], *, now: datetime
) -> int:
    """A created or edited item whose study is already known to be stable is deleted at once."""
    item_id = payload.get("worklist_id")
    if not isinstance(item_id, str) or not item_id:
        raise InvalidEvent("worklist event without a worklist_id")
    return await _delete_remembered(session, worklists, now, WorklistItem.id == item_id)


async def delete_remembered(session: AsyncSession, worklists: WorklistsSettings, *, now: datetime) -> int:
    """The periodic safety net for items whose study.stable came first (e.g. an event handled while down)."""
    return await _delete_remembered(session, worklists, now)


async def _delete_remembered(
    session: AsyncSession, worklists: WorklistsSettings, now: datetime, *where: Any
) -> int:
    rows = await session.execute(
        select(
            WorklistItem.id,
            WorklistItem.study_instance_uid,
            StableStudy.study_instance_uid,
            StableStudy.expires_at,
        )
        .join(StableStudy, StableStudy.study_instance_uid == WorklistItem.study_instance_uid)
        .where(WorklistItem.study_instance_uid != "", StableStudy.expires_at > now, *where)
        .order_by(WorklistItem.id)
        .limit(BATCH)
    )
    ids = [
        item_id
        for item_id, item_uid, stable_uid, expires_at in rows
        if retention.deleted_by_stable_study(item_uid, stable_uid)
        and retention.is_remembered(utc(expires_at), now)
    ]
    return await delete_items(session, worklists, ids, reason=REASON_STUDY_STABLE)


async def forget_stable_studies(session: AsyncSession, *, now: datetime) -> int:
    result = await session.execute(delete(StableStudy).where(StableStudy.expires_at <= now))
    return int(getattr(result, "rowcount", 0) or 0)


async def expire_items(
    session: AsyncSession, worklists: WorklistsSettings, *, now: datetime, delay_hours: float
) -> int:
    """Delete one batch of REST-created items older than DeleteWorklistsDelay; rows another replica holds are
    skipped (FOR UPDATE SKIP LOCKED), not waited for."""
    cutoff = retention.expiry_cutoff(now, delay_hours)
    if cutoff is None:
        return 0
    rows = await session.execute(
        select(WorklistItem.id, WorklistItem.source, WorklistItem.created_at)
        .where(WorklistItem.source == SOURCE_REST, WorklistItem.created_at <= cutoff)
        .order_by(WorklistItem.created_at, WorklistItem.id)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    )
    ids = [
        item_id
        for item_id, source, created_at in rows
        if retention.is_expired(source=source, created_at=utc(created_at), now=now, delay_hours=delay_hours)
    ]
    return await delete_items(session, worklists, ids, reason=REASON_EXPIRED)


async def _remember(
    session: AsyncSession, uid: str, event_id: str, source: str, stable_at: datetime, until: datetime
) -> None:
    values = {
        "study_instance_uid": uid,
        "event_id": event_id[:36],
        "source": source[:32],
        "stable_at": stable_at,
        "expires_at": until,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(StableStudy).values(values)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[StableStudy.study_instance_uid],
            set_={key: statement.excluded[key] for key in ("event_id", "source", "stable_at", "expires_at")},
            # A replayed older event must not shorten what a newer one set.
            where=StableStudy.expires_at < statement.excluded.expires_at,
        )
    )
