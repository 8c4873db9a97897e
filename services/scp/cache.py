"""In-memory cache of parsed worklist items, checked against the version each lookup reads from the store."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.scp.lookup import Candidate, ItemStore, LoadedItem, Version

logger = logging.getLogger(__name__)

# A parsed item holds about 12 kB of Python objects: 20,000 of them stay near 250 MB. Items beyond this are
# loaded from the store when a query needs them, so a larger store costs time, not memory.
DEFAULT_CAPACITY = 20_000
# Candidates resolved per step: small enough that the first answer leaves before all items are loaded.
BATCH = 100


@dataclass(frozen=True, slots=True)
class ResyncReport:
    dropped: int
    loaded: int


class ItemCache:
    """Item id -> (version, parsed DICOM JSON), shared by every association thread.

    Reads take no lock (a dict lookup is atomic under the GIL), so concurrent queries never wait on each
    other; only writers (misses, events, resync) serialise on `_write`. An entry is used only when its
    version equals the one the narrowing query read, so a missed or late event can never make a query
    answer from stale data: events and resync only keep memory tidy and the cache warm.
    """

    def __init__(self, store: ItemStore, capacity: int = DEFAULT_CAPACITY) -> None:
        self.store = store
        self.capacity = capacity
        # Ordered for first-in-first-out eviction: popitem(last=False) is O(1), where deleting a plain
        # dict's first key makes the next `next(iter(dict))` skip every slot freed before it.
        self._entries: OrderedDict[str, tuple[Version, dict[str, Any]]] = OrderedDict()
        self._write = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entries

    def items(self, candidates: Sequence[Candidate]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The parsed items of `candidates`, in their order; items deleted meanwhile are skipped.

        Treat the datasets as read-only: they are shared with other threads.
        """
        for item_id, _version, dataset in self.entries(candidates):
            yield item_id, dataset

    def entries(self, candidates: Sequence[Candidate]) -> Iterator[tuple[str, Version, dict[str, Any]]]:
        """As items(), with the version of each dataset yielded (what an encoded answer is keyed by)."""
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start : start + BATCH]
            found: dict[str, tuple[Version, dict[str, Any]]] = {}
            missing: list[str] = []
            for candidate in batch:
                entry = self._entries.get(candidate.item_id)
                if entry is not None and entry[0] == candidate.version:
                    found[candidate.item_id] = entry
                else:
                    missing.append(candidate.item_id)
            if missing:
                # The store's current version may be newer than the narrowed one: exact matching runs on it.
                for loaded in self.store.load(missing):
                    self._put(loaded)
                    found[loaded.item_id] = (loaded.version, loaded.dataset)
            for candidate in batch:
                entry = found.get(candidate.item_id)
                if entry is not None:
                    yield candidate.item_id, entry[0], entry[1]

    def evict(self, item_id: str) -> None:
        with self._write:
            self._entries.pop(item_id, None)

    def refresh(self, item_ids: Sequence[str]) -> None:
        """Reload these items now (after a created/updated event), dropping those that no longer exist."""
        loaded = self.store.load(item_ids)
        for item in loaded:
            self._put(item)
        gone = set(item_ids) - {item.item_id for item in loaded}
        for item_id in gone:
            self.evict(item_id)

    def resync(self) -> ResyncReport:
        """Drop entries the store no longer has (or has in another version), then warm up to capacity."""
        versions = self.store.versions()
        with self._write:
            stale = [key for key, (version, _) in self._entries.items() if versions.get(key) != version]
            for key in stale:
                del self._entries[key]
        room = self.capacity - len(self._entries)
        missing = [key for key in versions if key not in self._entries][: max(room, 0)]
        for item in self.store.load(missing):
            self._put(item)
        return ResyncReport(dropped=len(stale), loaded=len(missing))

    def _put(self, item: LoadedItem) -> None:
        if self.capacity <= 0:
            return
        with self._write:
            if item.item_id not in self._entries and len(self._entries) >= self.capacity:
                # First in, first out: cheap, lock-short, and good enough for a cache that resync refills.
                self._entries.popitem(last=False)
            self._entries[item.item_id] = (item.version, item.dataset)
