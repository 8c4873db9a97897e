"""In-memory cache of worklist items, checked against the version each lookup reads from the store.

Items are kept compressed (about 0.5 kB each), not as parsed Python objects (about 13 kB each: a dict and a
list per element): 100,000 items then fit in ~50 MB. A query restores the candidates its narrowing returned,
~20 µs each: the parsed DICOM JSON serialised with marshal (restored twice as fast as JSON is parsed), then
compressed with zlib's fastest level.
"""

from __future__ import annotations

import logging
import marshal
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.scp.lookup import Candidate, ItemStore, Version

logger = logging.getLogger(__name__)

# Items beyond this are loaded from the store when a query needs them, so a larger store costs time, not
# memory: at ~0.5 kB an item, 100,000 take ~50 MB.
DEFAULT_CAPACITY = 100_000
# zlib's fastest level: an item's marshal data shrinks ~2.3 times; inflating it costs ~5 µs.
_LEVEL = 1
_SPS_KEY = "00400100"  # ScheduledProcedureStepSequence
# Items read from the store per round trip while warming up.
RESYNC_BATCH = 1_000
# Candidates resolved per step: small enough that the first answer leaves before all items are loaded.
BATCH = 100


@dataclass(frozen=True, slots=True)
class ResyncReport:
    dropped: int
    loaded: int


class ItemCache:
    """Item id -> (version, compressed DICOM JSON), shared by every association thread.

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
        # id -> (version, packed dataset, number of Scheduled Procedure Steps)
        self._entries: OrderedDict[str, tuple[Version, bytes, int]] = OrderedDict()
        self._write = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._entries

    def items(self, candidates: Sequence[Candidate]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The parsed items of `candidates`, in their order; items deleted meanwhile are skipped.

        Each dataset is parsed for this call: the caller may keep it, no other thread sees it.
        """
        for item_id, _version, dataset in self.entries(candidates):
            yield item_id, dataset

    def entries(self, candidates: Sequence[Candidate]) -> Iterator[tuple[str, Version, dict[str, Any]]]:
        """As items(), with the version of each dataset yielded (what an encoded answer is keyed by)."""
        for start in range(0, len(candidates), BATCH):
            batch = candidates[start : start + BATCH]
            cached: dict[str, tuple[Version, bytes, int]] = {}
            missing: list[str] = []
            for candidate in batch:
                entry = self._entries.get(candidate.item_id)
                if entry is not None and entry[0] == candidate.version:
                    cached[candidate.item_id] = entry
                else:
                    missing.append(candidate.item_id)
            loaded: dict[str, tuple[Version, dict[str, Any]]] = {}
            if missing:
                # The store's current version may be newer than the narrowed one: exact matching runs on it.
                for item in self.store.load(missing):
                    dataset = item.dataset
                    self._put(item.item_id, item.version, dataset)
                    loaded[item.item_id] = (item.version, dataset)
            for candidate in batch:
                hit = cached.get(candidate.item_id)
                if hit is not None:
                    yield candidate.item_id, hit[0], _unpack(hit[1])
                    continue
                fresh = loaded.get(candidate.item_id)
                if fresh is not None:
                    yield candidate.item_id, fresh[0], fresh[1]

    def steps(self, item_id: str, version: Version) -> int | None:
        """How many Scheduled Procedure Steps the item has, if it is cached at this version (else None)."""
        entry = self._entries.get(item_id)
        return entry[2] if entry is not None and entry[0] == version else None

    def evict(self, item_id: str) -> None:
        with self._write:
            self._entries.pop(item_id, None)

    def refresh(self, item_ids: Sequence[str]) -> None:
        """Reload these items now (after a created/updated event), dropping those that no longer exist."""
        loaded = self.store.load(item_ids)
        for item in loaded:
            self._put(item.item_id, item.version, item.dataset)
        gone = set(item_ids) - {item.item_id for item in loaded}
        for item_id in gone:
            self.evict(item_id)

    def resync(self) -> ResyncReport:
        """Drop entries the store no longer has (or has in another version), then warm up to capacity."""
        versions = self.store.versions()
        with self._write:
            stale = [key for key, entry in self._entries.items() if versions.get(key) != entry[0]]
            for key in stale:
                del self._entries[key]
        room = self.capacity - len(self._entries)
        missing = [key for key in versions if key not in self._entries][: max(room, 0)]
        # A batch at a time: the whole store's text at once would be a peak of memory for nothing.
        for start in range(0, len(missing), RESYNC_BATCH):
            for item in self.store.load(missing[start : start + RESYNC_BATCH]):
                self._put(item.item_id, item.version, item.dataset)
        return ResyncReport(dropped=len(stale), loaded=len(missing))

    def _put(self, item_id: str, version: Version, dataset: dict[str, Any]) -> None:
        if self.capacity <= 0:
            return
        blob = _pack(dataset)  # outside the lock: writers compress in parallel
        with self._write:
            if item_id not in self._entries and len(self._entries) >= self.capacity:
                # First in, first out: cheap, lock-short, and good enough for a cache that resync refills.
                self._entries.popitem(last=False)
            self._entries[item_id] = (version, blob, _step_count(dataset))


def _step_count(dataset: dict[str, Any]) -> int:
    """The steps shared.matching sees: the object values of an SQ-typed ScheduledProcedureStepSequence."""
    element = dataset.get(_SPS_KEY)
    if not isinstance(element, dict) or element.get("vr") != "SQ":
        return 0
    return sum(1 for step in element.get("Value") or () if isinstance(step, dict))


def _pack(dataset: dict[str, Any]) -> bytes:
    return zlib.compress(marshal.dumps(dataset), _LEVEL)


def _unpack(blob: bytes) -> dict[str, Any]:
    restored: dict[str, Any] = marshal.loads(zlib.decompress(blob))
    return restored
