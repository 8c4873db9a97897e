"""Folder sync: `.wl` files added, changed or removed in Worklists.Directory appear, change or go.

A file is re-read when its size or modification time changed since the version the store reflects, and
re-indexed only when its SHA-256 differs from the stored one. Each file is handled in its own transaction: a
bad file is skipped, logged and reported once (a `folder_rejections` row and a `worklist.rejected` event),
and affects no other item. A file that becomes invalid keeps its last good item until it is fixed or removed
(a RIS rewriting a file in place must not make the exam flicker out of the worklist). A folder that cannot be
listed is an outage, not an empty folder: nothing is deleted until it can be listed again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import folder, store
from shared.events import REASON_FILE_REMOVED, worklist_rejected_event
from shared.models import SOURCE_FOLDER, FolderRejection, WorklistItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Indexed:
    item_id: str
    digest: str | None


class FolderSync:
    """Brings the store in line with the folder; `problem` says why the folder cannot be read, else None."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        directory: Path,
        *,
        default_character_set: str,
        settle_seconds: float,
        clock: Callable[[], datetime],
        on_deleted: Callable[[str, int], None] = lambda _reason, _count: None,
    ) -> None:
        self.sessions = sessions
        self.directory = directory
        self.default_character_set = default_character_set
        self.settle_seconds = settle_seconds
        self.clock = clock
        self.on_deleted = on_deleted  # (reason, count) after each committed deletion, for the metrics
        self.problem: str | None = None
        # (size, mtime) of the version of each file the store (or its rejection) reflects: unchanged files
        # are not read again.
        self._known: dict[str, tuple[int, int]] = {}

    async def run_pass(self) -> int:
        """One sync; returns how many items or rejections were written (their events wait in the outbox)."""
        # The index is read before the folder is listed: the API writes a file before it commits its row, so
        # every row seen here has its file listed below, and a new item is never mistaken for a removed file.
        async with self.sessions() as session:
            indexed = await _indexed(session)
            rejected = await _rejections(session)
        try:
            entries = await asyncio.to_thread(folder.scan, self.directory)
        except folder.FolderError as exc:
            if self.problem != str(exc):
                logger.error("%s; worklist files are not synchronised until it is fixed", exc)
            self.problem = str(exc)
            return 0
        if self.problem is not None:
            logger.info("Worklists.Directory %s is readable again", self.directory)
            self.problem = None
        changes = 0
        present = {entry.relative_path for entry in entries}
        for entry in entries:
            unchanged = self._known.get(entry.relative_path) == (entry.size, entry.mtime_ns)
            # A known file whose row vanished (deleted behind our back, a restored database) is read again.
            if unchanged and (entry.relative_path in indexed or entry.relative_path in rejected):
                continue
            try:
                changes += await self._sync_file(
                    entry, indexed.get(entry.relative_path), rejected.get(entry.relative_path)
                )
            except (IntegrityError, OperationalError) as exc:
                # The API (or another replica) is writing this item right now: look again at the next pass.
                logger.info(
                    "worklist file %s is being changed concurrently (%s); retrying",
                    entry.relative_path,
                    type(exc).__name__,
                )
            except Exception:
                logger.exception(
                    "synchronising worklist file %s failed; retrying at the next pass", entry.relative_path
                )
        for relative_path in self._known.keys() - present:
            del self._known[relative_path]
        changes += await self._remove_missing(indexed, present)
        await self._forget_rejections(set(rejected) - present)
        return changes

    async def _sync_file(self, entry: folder.FileEntry, indexed: Indexed | None, rejected: str | None) -> int:
        stat = (entry.size, entry.mtime_ns)
        try:
            data = await asyncio.to_thread(folder.read_bytes, self.directory, entry.relative_path)
        except FileNotFoundError:
            return 0  # removed since it was listed; the next pass removes its item
        except OSError as exc:
            reason = f"unreadable file ({exc.strerror or type(exc).__name__})"
            return await self._reject(entry, folder.digest(reason.encode()), reason, rejected)
        fingerprint = folder.digest(data)
        if indexed is not None and indexed.digest == fingerprint:
            if rejected is not None:
                await self._forget_rejections({entry.relative_path})
            self._known[entry.relative_path] = stat
            return 0
        try:
            dataset = folder.parse_worklist(data, default_character_set=self.default_character_set)
        except folder.InvalidWorklistFile as exc:
            if self._settling(entry):
                return 0  # maybe still being written: judge it at the next pass
            return await self._reject(entry, fingerprint, str(exc), rejected)
        async with self.sessions() as session, session.begin():
            if indexed is None:
                item_id = await _free_id(session, entry.relative_path)
                await store.add_item(
                    session,
                    item_id,
                    dataset,
                    source=SOURCE_FOLDER,
                    source_path=entry.relative_path,
                    source_digest=fingerprint,
                )
            elif not await _replace_if_changed(session, indexed.item_id, dataset, fingerprint):
                return 0  # deleted meanwhile: indexed afresh at the next pass
            await session.execute(
                delete(FolderRejection).where(FolderRejection.source_path == entry.relative_path)
            )
        self._known[entry.relative_path] = stat
        return 1

    def _settling(self, entry: folder.FileEntry) -> bool:
        age = self.clock().timestamp() - entry.mtime_ns / 1e9
        # A modification time ahead of our clock (a skewed file server) must not defer the file forever.
        return 0 <= age < self.settle_seconds

    async def _reject(
        self, entry: folder.FileEntry, fingerprint: str, reason: str, previous: str | None
    ) -> int:
        self._known[entry.relative_path] = (entry.size, entry.mtime_ns)
        if previous == fingerprint:
            return 0  # this version was reported already (maybe by another replica, or before a restart)
        now = self.clock()
        async with self.sessions() as session, session.begin():
            await _upsert_rejection(session, entry.relative_path, fingerprint, reason[:256], now)
            # The reason never quotes the file's content: events carry no patient data.
            store.enqueue(
                session,
                worklist_rejected_event(entry.relative_path, reason, source=SOURCE_FOLDER, now=now),
            )
        logger.warning("worklist file %s skipped: %s", entry.relative_path, reason)
        return 1

    async def _remove_missing(self, indexed: dict[str, Indexed], present: set[str]) -> int:
        removed = 0
        for relative_path, item in indexed.items():
            if relative_path in present:
                continue
            try:
                async with self.sessions() as session, session.begin():
                    await store.remove_item(session, item.item_id, reason=REASON_FILE_REMOVED)
                removed += 1
                self.on_deleted(REASON_FILE_REMOVED, 1)
            except store.WorklistNotFound:
                pass  # deleted through the API, or by another replica
            except Exception:
                logger.exception("removing the item of deleted file %s failed; retrying", relative_path)
        return removed

    async def _forget_rejections(self, paths: set[str]) -> None:
        if not paths:
            return
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(delete(FolderRejection).where(FolderRejection.source_path.in_(paths)))
        except Exception:
            logger.exception("forgetting rejected worklist files failed; retrying at the next pass")


async def _indexed(session: AsyncSession) -> dict[str, Indexed]:
    rows = await session.execute(
        select(WorklistItem.source_path, WorklistItem.id, WorklistItem.source_digest).where(
            WorklistItem.source_path.is_not(None)
        )
    )
    return {path: Indexed(item_id, item_digest) for path, item_id, item_digest in rows if path is not None}


async def _rejections(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(select(FolderRejection.source_path, FolderRejection.fingerprint))
    return {path: fingerprint for path, fingerprint in rows}


async def _free_id(session: AsyncSession, relative_path: str) -> str:
    """The file's stem, unless another item has that id (a.wl beside A.WL, a REST item named alike)."""
    preferred = folder.preferred_id(relative_path)
    if await session.get(WorklistItem, preferred) is None:
        return preferred
    return folder.hashed_id(relative_path)


async def _replace_if_changed(
    session: AsyncSession, item_id: str, dataset: dict[str, object], fingerprint: str
) -> bool:
    """Re-index under the row lock, unless the API just wrote this very content (its PUT rewrote the file)."""
    row = await session.get(WorklistItem, item_id, with_for_update=True, populate_existing=True)
    if row is None:
        return False
    if row.source_digest != fingerprint:
        await store.replace_item(session, item_id, dataset, source_digest=fingerprint)
    return True


async def _upsert_rejection(
    session: AsyncSession, path: str, fingerprint: str, reason: str, now: datetime
) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(FolderRejection).values(
        source_path=path, fingerprint=fingerprint, reason=reason, reported_at=now
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[FolderRejection.source_path],
            set_={"fingerprint": fingerprint, "reason": reason, "reported_at": now},
        )
    )
