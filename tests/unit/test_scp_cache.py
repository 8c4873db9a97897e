"""The SCP's item cache: compact entries, answers only from the version the narrowing read, copies that a
query may keep, and a warm-up that never holds the whole store's text at once."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from pydicom import Dataset

from services.scp.cache import RESYNC_BATCH, ItemCache
from services.scp.listener import CacheListener
from services.scp.lookup import Candidate, ItemStore, LoadedItem, candidates_query
from shared.events import WORKLIST_UPDATED
from shared.matching import MatchOptions, compile_query
from tests.support.dicom_clients import worklist


@dataclass
class FakeStore:
    items: dict[str, dict[str, Any]]
    version: int = 1
    loads: list[int] = field(default_factory=list)

    def load(self, item_ids: Sequence[str]) -> list[LoadedItem]:
        self.loads.append(len(item_ids))
        found = [key for key in item_ids if key in self.items]
        return [LoadedItem(key, self.version, json.dumps(self.items[key])) for key in found]

    def versions(self) -> dict[str, int]:
        return {key: self.version for key in self.items}


def cache_of(count: int, capacity: int = 100_000) -> tuple[ItemCache, FakeStore]:
    fake = FakeStore({f"id{n:05d}": worklist(patient_id=f"P{n}", accession=f"A{n}") for n in range(count)})
    return ItemCache(cast(ItemStore, fake), capacity), fake


def test_cached_items_come_back_equal_and_each_query_gets_its_own_copy() -> None:
    cache, fake = cache_of(3)
    candidates = [Candidate(key, 1) for key in fake.items]
    first = dict(cache.items(candidates))
    assert first == fake.items and fake.loads == [3]
    first["id00000"]["00100020"]["Value"] = ["CHANGED"]  # a query that alters what it was given
    second = dict(cache.items(candidates))
    assert fake.loads == [3]  # answered from the cache
    assert second == fake.items


def test_an_entry_of_another_version_is_read_again() -> None:
    cache, fake = cache_of(2)
    list(cache.items([Candidate(key, 1) for key in fake.items]))
    fake.version = 2
    fake.items["id00001"] = worklist(patient_id="NEW")
    found = dict(cache.items([Candidate("id00000", 1), Candidate("id00001", 2)]))
    assert fake.loads == [2, 1]
    assert found["id00001"]["00100020"]["Value"] == ["NEW"]


def test_resync_warms_in_batches_up_to_capacity() -> None:
    cache, fake = cache_of(RESYNC_BATCH * 2 + 10, capacity=RESYNC_BATCH * 2 + 5)
    report = cache.resync()
    assert report.loaded == len(cache) == RESYNC_BATCH * 2 + 5
    assert max(fake.loads) <= RESYNC_BATCH  # never the whole store's text in memory at once


def test_an_item_takes_a_fraction_of_its_parsed_size() -> None:
    cache, fake = cache_of(1000)
    parsed = [json.loads(json.dumps(item)) for item in fake.items.values()]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache.resync()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        copies = [json.loads(json.dumps(item)) for item in parsed]
        as_objects = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(copies) == len(cache) == 1000
    # 100,000 items in ~50 MB rather than ~1.3 GB: what keeps the SCP within a few hundred MB.
    assert held * 5 < as_objects, (held, as_objects)


def test_queries_with_the_same_keys_share_one_statement() -> None:
    def compiled(patient_id: str, modality: str) -> Any:
        query = Dataset()
        query.PatientID = patient_id
        step = Dataset()
        step.Modality = modality
        query.ScheduledProcedureStepSequence = [step]
        return compile_query(query, MatchOptions())

    first, first_params = candidates_query(compiled("P1", "CT"), "postgresql")
    second, second_params = candidates_query(compiled("P2", "MR"), "postgresql")
    assert first is second  # built, and its SQLAlchemy cache key computed, once
    assert first_params == {"patient_id": "P1", "modality": "CT"}
    assert second_params == {"patient_id": "P2", "modality": "MR"}
    only_patient, _ = candidates_query(compiled("P1", ""), "postgresql")
    assert only_patient is not first


def _event(subject: str, item_id: str) -> Any:
    return SimpleNamespace(subject=subject, data=json.dumps({"worklist_id": item_id}).encode())


def test_an_updated_item_stays_cached_while_its_new_version_loads() -> None:
    cache, fake = cache_of(1)
    cache.resync()
    cached_during_reload: list[bool] = []
    load = fake.load

    def watched_load(item_ids: Sequence[str]) -> list[LoadedItem]:
        cached_during_reload.append("id00000" in cache)
        return load(item_ids)

    fake.load = watched_load  # type: ignore[method-assign]
    fake.version = 2
    listener = CacheListener(cache, "nats://127.0.0.1:1", 60)
    asyncio.run(listener._on_message(_event(WORKLIST_UPDATED, "id00000")))
    assert cached_during_reload == [True]  # queries never fall back to the store meanwhile
    assert cache.steps("id00000", 2) == 1  # and the new version replaced the old one
    fake.load = lambda item_ids: (_ for _ in ()).throw(OSError("store away"))  # type: ignore[method-assign]
    asyncio.run(listener._on_message(_event(WORKLIST_UPDATED, "id00000")))
    assert "id00000" not in cache  # not reloadable: the old version only held memory, it goes
