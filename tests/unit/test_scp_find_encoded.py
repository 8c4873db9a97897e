"""find_encoded: a C-FIND identifier as received (bytes) answers exactly as find() of its decoded Dataset,
and each distinct identifier is decoded and compiled once."""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any, cast

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import decode, encode

from services.scp import cache as cache_module
from services.scp import prepared as prepared_module
from services.scp.cache import ItemCache
from services.scp.find import FindOptions, FindOutcome, Response, WorklistFinder
from services.scp.lookup import ItemStore
from services.scp.prepared import PreparedQueries, PreparedQuery, Unanswerable
from shared.matching import MatchOptions
from tests.support.dicom_clients import worklist
from tests.unit.test_scp_find import TWO_STEPS, FakeStore, query

ITEMS = [
    TWO_STEPS,
    worklist(name="Müller^Jörg", patient_id="P2", accession="A2", charset="ISO_IR 100"),
    worklist(
        name="Smith^Anna",
        patient_id="P3",
        accession="A3",
        steps=[
            {
                "Modality": "MR",
                "ScheduledStationAETitle": "MR01",
                "ScheduledProcedureStepStartDate": "20251015",
            }
        ],
    ),
    worklist(name="山田^太郎", patient_id="P4", accession="A4"),
]


def finder(items: Sequence[dict[str, Any]] = ITEMS, **options: Any) -> WorklistFinder:
    store = cast(ItemStore, FakeStore({f"id{n}": item for n, item in enumerate(items)}))
    return WorklistFinder(store, ItemCache(store), FindOptions(MatchOptions(), "ISO_IR 100", **options))


def encoded(ds: Dataset, implicit: bool) -> bytes:
    data = encode(ds, implicit, True)
    assert data is not None
    return bytes(data)


def with_keys(**keys: Any) -> Dataset:
    """test_scp_find's query with PatientID as a return key too."""
    return query(**{"PatientID": "", **keys})


def charset_query() -> Dataset:
    q = with_keys(PatientName="Müller*")
    q.SpecificCharacterSet = "ISO_IR 100"
    return q


def private_key_query() -> Dataset:
    q = with_keys()
    q.add_new(0x00091010, "LO", "something")
    return q


def two_sps_items() -> Dataset:
    q = with_keys(Modality="CT")
    extra = Dataset()
    extra.Modality = "MR"
    q.ScheduledProcedureStepSequence.append(extra)
    return q


def empty_query() -> Dataset:
    return Dataset()


# Valid identifiers, identifiers find() refuses (InvalidIdentifier) and ones pydicom reads but cannot convert.
IDENTIFIERS: dict[str, Callable[[], Dataset]] = {
    "universal": with_keys,
    "patient_id": lambda: with_keys(PatientID="P3"),
    "name_wildcard": lambda: with_keys(PatientName="SMI*"),
    "declared_charset": charset_query,
    "station_and_date_range": lambda: with_keys(
        ScheduledStationAETitle="MR01", ScheduledProcedureStepStartDate="20251015-20251016"
    ),
    "no_match": lambda: with_keys(Modality="US"),
    "unsupported_key_ff01": private_key_query,
    "two_sps_items_a900": two_sps_items,
    "bad_date_a900": lambda: with_keys(ScheduledProcedureStepStartDate="2025-13-45-1"),
    "no_key_a900": empty_query,
}
# Explicit VR US of 3 bytes: read_dataset keeps it raw, converting it fails.
UNCONVERTIBLE = struct.pack("<HH2sH", 0x0028, 0x0010, b"US", 3) + b"abc\0"
# A sequence of undefined length over garbage: read_dataset itself fails.
UNREADABLE = struct.pack("<HH2sHI", 0x0040, 0x0100, b"SQ", 0, 0xFFFFFFFF) + bytes(range(1, 9))

Run = tuple[list[Response], FindOutcome]


def from_dataset(f: WorklistFinder, data: bytes, implicit: bool, calling: str) -> Run:
    outcome = FindOutcome()
    identifier = decode(BytesIO(data), implicit, True)
    return list(f.find(identifier, calling, lambda: False, outcome, implicit)), outcome


def from_bytes(f: WorklistFinder, data: bytes, implicit: bool, calling: str) -> Run:
    outcome = FindOutcome()
    return list(f.find_encoded(data, implicit, calling, lambda: False, outcome)), outcome


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("name", sorted(IDENTIFIERS))
def test_bytes_answer_exactly_as_the_decoded_dataset(name: str, implicit: bool) -> None:
    data = encoded(IDENTIFIERS[name](), implicit)
    expected = from_dataset(finder(), data, implicit, "CT01")
    f = finder()
    assert from_bytes(f, data, implicit, "CT01") == expected
    assert from_bytes(f, bytes(bytearray(data)), implicit, "CT01") == expected  # prepared, then reused


@pytest.mark.parametrize("implicit", [True, False])
def test_pending_answers_are_bytes_in_the_requested_transfer_syntax(implicit: bool) -> None:
    responses, outcome = from_bytes(finder(), encoded(with_keys(PatientID="P3"), implicit), implicit, "X")
    [(status, answer)] = responses
    assert status == 0xFF00 and isinstance(answer, bytes)
    assert decode(BytesIO(answer), implicit, True).PatientID == "P3"
    assert (outcome.answers, outcome.status) == (1, 0)


@pytest.mark.parametrize("implicit", [True, False])
def test_unconvertible_identifier_is_a900_cannot_be_decoded_as_from_a_dataset(
    implicit: bool, caplog: pytest.LogCaptureFixture
) -> None:
    expected = from_dataset(finder(), UNCONVERTIBLE, implicit, "CT01")
    f = finder()
    for _ in range(2):  # the second time from the prepared-query cache, logged all the same
        caplog.clear()
        responses, outcome = from_bytes(f, UNCONVERTIBLE, implicit, "CT01")
        assert (responses, outcome) == expected
        assert "cannot be decoded (BytesLengthException)" in caplog.text
    [(status, answer)] = responses
    assert isinstance(status, Dataset) and answer is None
    assert (status.Status, status.ErrorComment) == (0xA900, "Identifier cannot be decoded")
    assert outcome.status == 0xA900


def test_unreadable_identifier_is_a900_cannot_be_decoded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    responses, outcome = from_bytes(finder(), UNREADABLE, False, "CT01")
    [(status, answer)] = responses
    assert isinstance(status, Dataset) and answer is None
    assert (status.Status, status.ErrorComment) == (0xA900, "Identifier cannot be decoded")
    assert "OffendingElement" not in status
    assert outcome.status == 0xA900
    assert "from CT01 cannot be decoded (OSError)" in caplog.text


def test_invalid_identifier_names_the_offending_element_every_time() -> None:
    f = finder()
    data = encoded(two_sps_items(), True)
    for _ in range(2):
        [(status, answer)], outcome = from_bytes(f, data, True, "CT01")
        assert isinstance(status, Dataset) and answer is None
        assert status.Status == 0xA900 and status.OffendingElement == 0x00400100
        assert status.ErrorComment == "More than one item in sequence (0040,0100)"
        assert outcome.status == 0xA900


@pytest.mark.parametrize("station", ["", "*", "CT01"])
def test_filter_issuer_aet_follows_each_calling_ae_not_the_first_one(station: str) -> None:
    f = finder(filter_issuer_aet=True)
    data = encoded(with_keys(ScheduledStationAETitle=station), True)
    for calling in ("MR01", "CT01", "MR01 ", "US01"):
        assert from_bytes(f, data, True, calling) == from_dataset(
            finder(filter_issuer_aet=True), data, True, calling
        )
    modalities = [
        decode(BytesIO(cast(bytes, answer)), True, True).ScheduledProcedureStepSequence[0].Modality
        for _, answer in from_bytes(f, data, True, "MR01")[0]
    ]
    assert modalities == (["CT"] * 3 if station == "CT01" else ["MR"] * 2)


def test_filter_issuer_aet_off_answers_every_station() -> None:
    f = finder()
    data = encoded(with_keys(), True)
    assert from_bytes(f, data, True, "MR01") == from_bytes(f, data, True, "CT01")
    assert from_bytes(f, data, True, "MR01")[1].answers == 5


class CountingDecode:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, stream: BytesIO, implicit: bool, little_endian: bool) -> Dataset:
        self.calls += 1
        return decode(stream, implicit, little_endian)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> CountingDecode:
    counting = CountingDecode()
    monkeypatch.setattr(prepared_module, "decode", counting)
    return counting


def test_a_repeated_identifier_is_decoded_once_per_transfer_syntax(decodes: CountingDecode) -> None:
    f = finder()
    q = with_keys(PatientID="P3")
    implicit, explicit = encoded(q, True), encoded(q, False)
    for _ in range(3):
        from_bytes(f, bytes(bytearray(implicit)), True, "CT01")  # equal bytes, another object each time
    assert decodes.calls == 1
    from_bytes(f, explicit, False, "CT01")
    from_bytes(f, explicit, False, "CT01")
    assert decodes.calls == 2
    assert len(f.prepared) == 2


def test_failures_are_prepared_once_too(decodes: CountingDecode) -> None:
    f = finder()
    for data in (UNREADABLE, UNCONVERTIBLE, encoded(two_sps_items(), False)):
        for _ in range(2):
            [(status, _)], _outcome = from_bytes(f, data, False, "CT01")
            assert isinstance(status, Dataset) and status.Status == 0xA900
    assert decodes.calls == 3


def test_find_of_a_dataset_does_not_use_the_cache() -> None:
    f = finder()
    run = f.find(with_keys(PatientID="P3"), "CT01", lambda: False, FindOutcome(), True)
    assert len(list(run)) == 1
    assert len(f.prepared) == 0


def test_cache_keeps_the_most_recently_used_identifiers_only(decodes: CountingDecode) -> None:
    f = finder()
    f.prepared = PreparedQueries(capacity=2)
    a, b, c = (encoded(with_keys(PatientID=pid), True) for pid in ("P1", "P2", "P3"))
    for data in (a, b, a, c):  # c evicts b, the least recently used
        from_bytes(f, data, True, "CT01")
    assert (len(f.prepared), decodes.calls) == (2, 3)
    from_bytes(f, a, True, "CT01")
    assert decodes.calls == 3
    from_bytes(f, b, True, "CT01")
    assert decodes.calls == 4


def test_large_identifiers_are_answered_but_not_kept(decodes: CountingDecode) -> None:
    f = finder()
    small = encoded(with_keys(PatientID="P3"), True)
    f.prepared = PreparedQueries(max_bytes=len(small))
    large = encoded(with_keys(PatientID="P3", PatientComments=""), True)
    first = from_bytes(f, large, True, "CT01")
    assert first == from_bytes(f, large, True, "CT01")
    assert first[1].answers == 1
    assert (len(f.prepared), decodes.calls) == (0, 2)
    from_bytes(f, small, True, "CT01")
    from_bytes(f, small, True, "CT01")
    assert (len(f.prepared), decodes.calls) == (1, 3)


def test_a_zero_capacity_cache_prepares_every_time(decodes: CountingDecode) -> None:
    f = finder()
    f.prepared = PreparedQueries(capacity=0)
    data = encoded(with_keys(), True)
    assert from_bytes(f, data, True, "CT01") == from_bytes(f, data, True, "CT01")
    assert (len(f.prepared), decodes.calls) == (0, 2)


def test_concurrent_queries_share_prepared_queries_safely() -> None:
    f = finder()
    identifiers = [encoded(with_keys(PatientID=f"P{n % 4 + 1}"), n % 2 == 0) for n in range(8)]
    expected = [from_dataset(finder(), data, n % 2 == 0, "CT01") for n, data in enumerate(identifiers)]
    results: dict[int, list[Run]] = {}

    def work(worker: int) -> None:
        results[worker] = [
            from_bytes(f, identifiers[(worker + k) % 8], (worker + k) % 2 == 0, "CT01") for k in range(40)
        ]

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for worker, got in results.items():
        assert got == [expected[(worker + k) % 8] for k in range(40)]
    assert len(f.prepared) == 4  # P1 and P3 implicit, P2 and P4 explicit


def test_prepared_failure_keeps_no_patient_data() -> None:
    prepared = prepared_module.prepare_encoded(UNCONVERTIBLE, False, "ISO_IR 100", MatchOptions())
    assert prepared == Unanswerable("Identifier cannot be decoded", (), "BytesLengthException")


@pytest.fixture
def restores(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Items restored from the item cache (each call appends 1)."""
    calls: list[int] = []
    unpack = cache_module._unpack

    def counting(blob: bytes) -> dict[str, Any]:
        calls.append(1)
        return unpack(blob)

    monkeypatch.setattr(cache_module, "_unpack", counting)
    return calls


def test_a_repeated_query_neither_restores_nor_matches_an_unchanged_item(restores: list[int]) -> None:
    f = finder()
    data = encoded(with_keys(Modality="MR"), True)
    expected = from_dataset(finder(), data, True, "CT01")
    assert from_bytes(f, data, True, "CT01") == expected  # items loaded from the store, matched
    assert from_bytes(f, data, True, "CT01") == expected  # steps and answers known: nothing restored
    assert restores == []
    assert cast(FakeStore, f.store).loads == [len(ITEMS)]


def test_an_updated_item_is_matched_again() -> None:
    items = [worklist(patient_id="P1", accession="A1"), worklist(patient_id="P2", accession="A2")]
    f = finder(items)
    data = encoded(with_keys(PatientID="P1"), False)
    assert from_bytes(f, data, False, "CT01")[1].answers == 1
    store = cast(FakeStore, f.store)
    store.items["id1"] = worklist(patient_id="P1", accession="A2")  # now P1's too
    store.version = 2
    again = from_bytes(f, data, False, "CT01")
    assert again == from_dataset(finder(list(store.items.values())), data, False, "CT01")
    assert again[1].answers == 2


def test_memo_entries_are_bounded_and_released_with_their_query(restores: list[int]) -> None:
    f = finder()
    f.prepared = PreparedQueries(capacity=1, memo_capacity=12)  # 3 per query
    constrained = encoded(with_keys(Modality="CT"), True)
    expected = from_dataset(finder(), constrained, True, "CT01")
    assert from_bytes(f, constrained, True, "CT01") == expected
    assert f.prepared.memo_entries == 3  # of 4 items: the fourth is matched again each time
    assert from_bytes(f, constrained, True, "CT01") == expected
    assert len(restores) == 1
    from_bytes(f, encoded(with_keys(PatientID="P3"), True), True, "CT01")  # evicts the first query
    assert f.prepared.memo_entries == 3
    assert len(f.prepared) == 1


def test_one_query_takes_at_most_a_quarter_of_the_memo(restores: list[int]) -> None:
    f = finder()
    f.prepared = PreparedQueries(capacity=2, memo_capacity=8)
    first = encoded(with_keys(Modality="CT"), True)
    second = encoded(with_keys(Modality="CT", PatientName="*"), True)  # other bytes, the same matches
    from_bytes(f, first, True, "CT01")
    assert f.prepared.memo_entries == 2  # of 4 items: a quarter of the room
    from_bytes(f, second, True, "CT01")
    assert f.prepared.memo_entries == 4  # the second query still gets its share


def test_queries_asking_the_same_keys_share_one_response_shape() -> None:
    f = finder()
    for pid in ("P1", "P2", "P3"):
        from_bytes(f, encoded(with_keys(PatientID=pid), True), True, "CT01")
    from_bytes(f, encoded(with_keys(PatientID="P1"), False), False, "CT01")
    other_keys = with_keys(PatientID="P1")
    other_keys.PatientBirthDate = ""
    from_bytes(f, encoded(other_keys, True), True, "CT01")

    def shape(data: bytes, implicit: bool) -> object:
        prepared = f.prepared.get(data, implicit, lambda: pytest.fail("not cached"))
        assert isinstance(prepared, PreparedQuery)
        return prepared.shape

    same = {shape(encoded(with_keys(PatientID=pid), True), True) for pid in ("P1", "P2", "P3")}
    assert same == {shape(encoded(with_keys(PatientID="P1"), False), False)}
    assert shape(encoded(other_keys, True), True) not in same
