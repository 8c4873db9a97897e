"""Encoded C-FIND answers: the bytes sent are exactly pynetdicom's encoding of the answers the finder
builds as Datasets, whatever the transfer syntax, character set or PDU size, and the cache never serves an
answer of another item version or another set of requested keys."""

from __future__ import annotations

from io import BytesIO
from typing import Any, cast

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import decode, encode

from services.scp import cache as cache_module
from services.scp.answers import ENTRY_OVERHEAD, AnswerCache
from services.scp.cache import ItemCache
from services.scp.find import FindOptions, FindOutcome, WorklistFinder
from services.scp.lookup import ItemStore
from shared.matching import MatchOptions, compile_query, match_item, matching_steps, response, response_shape
from tests.support.dicom_clients import worklist
from tests.unit.test_scp_find import FakeStore, query

ITEMS = [
    worklist(name="Müller^Jürgen", patient_id="P1", charset="ISO_IR 100"),
    worklist(
        name="Doe^John",
        patient_id="P2",
        steps=[{}, {"Modality": "MR", "ScheduledStationAETitle": "MR01"}],
    ),
    worklist(name="山田^太郎", patient_id="P3", charset="ISO_IR 192"),
    worklist(name="Plain^Ascii", patient_id="P4", charset=None),
]


def make_finder(
    items: list[dict[str, Any]], answers: AnswerCache | None = None
) -> tuple[WorklistFinder, FakeStore]:
    store = FakeStore({f"id{n}": item for n, item in enumerate(items)})
    typed = cast(ItemStore, store)
    return WorklistFinder(typed, ItemCache(typed), FindOptions(MatchOptions(), "ISO_IR 100"), answers), store


def answers(finder: WorklistFinder, q: Dataset, implicit: bool | None) -> list[Any]:
    return [a for _, a in finder.find(q, "CT01", lambda: False, FindOutcome(), implicit) if a is not None]


def charset_query(charset: str | None, **keys: Any) -> Dataset:
    q = query(**keys)
    if charset is not None:
        q.SpecificCharacterSet = charset
    return q


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192"])
def test_encoded_answers_are_the_datasets_as_pynetdicom_encodes_them(
    implicit: bool, charset: str | None
) -> None:
    finder, _ = make_finder(ITEMS)
    datasets = answers(finder, charset_query(charset), None)
    encoded = answers(finder, charset_query(charset), implicit)
    assert len(encoded) == len(datasets) == 5  # one per step
    assert encoded == [encode(ds, implicit, True) for ds in datasets]


def test_cached_answers_are_reused_for_the_same_keys() -> None:
    cache = AnswerCache()
    finder, _ = make_finder(ITEMS, cache)
    first = answers(finder, charset_query("ISO_IR 100"), True)
    assert len(cache) == len(first)
    again = answers(finder, charset_query("ISO_IR 100"), True)
    assert again == first and len(cache) == len(first)


def test_other_requested_keys_are_encoded_anew() -> None:
    cache = AnswerCache()
    finder, _ = make_finder(ITEMS, cache)
    answers(finder, charset_query("ISO_IR 100"), True)
    q = charset_query("ISO_IR 100")
    q.PatientBirthDate = ""
    with_birth_date = answers(finder, q, True)
    assert all(b"\x10\x00\x30\x00" in data for data in with_birth_date)  # (0010,0030) now returned


def test_a_new_item_version_is_never_answered_from_the_old_encoding() -> None:
    cache = AnswerCache()
    finder, store = make_finder(ITEMS[:1], cache)
    before = answers(finder, charset_query(None), True)
    store.items["id0"] = worklist(name="Changed^Name", patient_id="P1")
    store.version = 2
    after = answers(finder, charset_query(None), True)
    assert before != after
    assert decode(BytesIO(after[0]), True, True).PatientName == "Changed^Name"


def test_cache_stays_within_its_budget() -> None:
    cache = AnswerCache(budget=1500)
    finder, _ = make_finder(ITEMS, cache)
    answers(finder, charset_query(None), True)
    assert 0 < cache.size <= 1500


def test_a_repeated_universal_query_is_answered_without_restoring_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    finder, store = make_finder(ITEMS, AnswerCache())
    first = answers(finder, charset_query(None), True)
    restored: list[bytes] = []
    original = cache_module._unpack
    monkeypatch.setattr(cache_module, "_unpack", lambda blob: restored.append(blob) or original(blob))
    again = answers(finder, charset_query(None), True)
    assert again == first and len(first) == 5
    assert restored == []  # every answer came from the answer cache: no item restored nor matched
    assert len(answers(finder, charset_query(None, PatientID="P2"), True)) == 2
    assert len(restored) == len(ITEMS)  # a constraining query still matches each candidate itself
    store.items["id1"] = worklist(name="Changed^Name", patient_id="P2")
    store.version = 2  # every item changes version: no cached answer may serve it
    changed = answers(finder, charset_query(None), True)
    assert len(changed) == 4 and changed != first[: len(changed)]


def test_the_budget_counts_each_entrys_bookkeeping_not_only_its_bytes() -> None:
    # Small answers must not let the cache hold far more memory than its budget says.
    cache = AnswerCache(budget=10 * (100 + ENTRY_OVERHEAD))
    for n in range(20):
        cache.put((f"id{n}", 1, 0, (), None, True), b"x" * 100)
    assert len(cache) == 10
    assert cache.get(("id19", 1, 0, (), None, True)) is not None  # the oldest went first
    assert cache.get(("id0", 1, 0, (), None, True)) is None


def test_match_item_is_one_response_per_matching_step() -> None:
    compiled = compile_query(query(), MatchOptions())
    for item in ITEMS:
        assert match_item(compiled, item) == [
            response(compiled, item, i) for i in matching_steps(compiled, item)
        ]


def test_a_constraining_nested_sequence_has_no_reusable_shape() -> None:
    plain = query()
    assert response_shape(compile_query(plain, MatchOptions())) is not None
    code = Dataset()
    code.CodeValue = "X1"
    nested = query()
    nested.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [code]
    assert response_shape(compile_query(nested, MatchOptions())) is None


MWL_FIND = "1.2.840.10008.5.1.4.31"
