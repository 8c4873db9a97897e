"""Status logic of the C-FIND handler: what a modality receives for each situation (PS3.4 K.4.1.1.4).

The store is faked here only to produce candidates and failures on demand; the network paths, the SQL and
the real store are covered by tests/integration/test_scp_*.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from pydicom import Dataset
from sqlalchemy.exc import OperationalError

from services.scp.cache import ItemCache
from services.scp.find import (
    FindOptions,
    FindOutcome,
    Response,
    WorklistFinder,
    steps_at_station,
)
from services.scp.lookup import Candidate, ItemStore, LoadedItem
from services.scp.prepared import issuer_filter_applies
from shared.matching import CompiledQuery, MatchOptions
from tests.support.dicom_clients import worklist


@dataclass
class FakeStore:
    items: dict[str, dict[str, Any]]
    fail: Exception | None = None
    loads: list[int] = field(default_factory=list)
    version: int = 1  # every item's (updated_at stand-in)

    def candidates(self, query: CompiledQuery) -> list[Candidate]:
        if self.fail is not None:
            raise self.fail
        return [Candidate(key, self.version) for key in self.items]

    def load(self, item_ids: Sequence[str]) -> list[LoadedItem]:
        self.loads.append(len(item_ids))
        found = [key for key in item_ids if key in self.items]
        return [LoadedItem(key, self.version, json.dumps(self.items[key])) for key in found]


def finder(items: Sequence[dict[str, Any]], fail: Exception | None = None, **options: Any) -> WorklistFinder:
    store = cast(ItemStore, FakeStore({f"id{n}": item for n, item in enumerate(items)}, fail))
    return WorklistFinder(store, ItemCache(store), FindOptions(MatchOptions(), "ISO_IR 100", **options))


def query(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.PatientName = ""
    ds.AccessionNumber = ""
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = ""
    step.ScheduledProcedureStepID = ""
    for keyword, value in keys.items():
        setattr(step if keyword.startswith(("Scheduled", "Modality")) else ds, keyword, value)
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def run(
    f: WorklistFinder, q: Dataset, calling: str = "CT01", cancel_after: int | None = None
) -> list[Response]:
    responses: list[Response] = []

    def cancelled() -> bool:
        return cancel_after is not None and len(responses) >= cancel_after

    for response in f.find(q, calling, cancelled, FindOutcome()):
        responses.append(response)
    return responses


def statuses(responses: Sequence[Response]) -> list[int]:
    return [int(s) if isinstance(s, int) else int(s.Status) for s, _ in responses]


TWO_STEPS = worklist(steps=[{}, {"Modality": "MR", "ScheduledStationAETitle": "MR01"}])


def test_one_pending_answer_per_matching_step() -> None:
    responses = run(finder([TWO_STEPS]), query())
    assert statuses(responses) == [0xFF00, 0xFF00]
    steps = [ds.ScheduledProcedureStepSequence for _, ds in responses if isinstance(ds, Dataset)]
    assert [len(s) for s in steps] == [1, 1]
    assert {s[0].Modality for s in steps} == {"CT", "MR"}


def test_no_match_is_plain_success() -> None:
    # The generator ends without a status: pynetdicom then sends the final 0x0000 itself.
    assert run(finder([TWO_STEPS]), query(Modality="US")) == []


def test_two_items_in_the_sps_sequence_is_a900() -> None:
    q = query()
    extra = Dataset()
    extra.Modality = "MR"
    first = q.ScheduledProcedureStepSequence[0]
    first.Modality = "CT"
    q.ScheduledProcedureStepSequence.append(extra)
    [(status, identifier)] = run(finder([TWO_STEPS]), q)
    assert isinstance(status, Dataset)
    assert status.Status == 0xA900
    assert status.OffendingElement == 0x00400100
    assert status.ErrorComment
    assert identifier is None


def test_key_that_cannot_be_matched_gives_ff01() -> None:
    q = query()
    q.add_new(0x00091010, "LO", "something")
    assert statuses(run(finder([TWO_STEPS]), q)) == [0xFF01, 0xFF01]


def test_limit_answers_sends_exactly_n_then_says_the_list_was_cut() -> None:
    items = [worklist(accession=f"A{n}") for n in range(3)]
    responses = run(finder(items, limit_answers=2), query())
    assert statuses(responses) == [0xFF00, 0xFF00, 0xA700]
    final = responses[-1][0]
    assert isinstance(final, Dataset)
    assert final.ErrorComment == "LimitAnswers 2 reached: list cut"
    assert responses[-1][1] is None


def test_limit_answers_not_reached_is_success() -> None:
    items = [worklist(accession=f"A{n}") for n in range(3)]
    assert statuses(run(finder(items, limit_answers=3), query())) == [0xFF00] * 3


def test_cancel_stops_with_fe00() -> None:
    items = [worklist(accession=f"A{n}") for n in range(10)]
    responses = run(finder(items), query(), cancel_after=2)
    assert statuses(responses) == [0xFF00, 0xFF00, 0xFE00]
    assert responses[-1][1] is None


def test_store_down_is_c001_with_comment() -> None:
    down = OperationalError("SELECT", {}, Exception("connection refused"))
    [(status, identifier)] = run(finder([TWO_STEPS], fail=down), query())
    assert isinstance(status, Dataset)
    assert status.Status == 0xC001
    assert "unavailable" in status.ErrorComment
    assert identifier is None


def test_unexpected_error_is_c002(caplog: pytest.LogCaptureFixture) -> None:
    [(status, _)] = run(finder([TWO_STEPS], fail=RuntimeError("bug")), query())
    assert isinstance(status, Dataset)
    assert status.Status == 0xC002
    assert "RuntimeError" in caplog.text  # logged with its traceback for the operator


def test_first_answer_leaves_before_all_items_are_loaded() -> None:
    items = [worklist(accession=f"A{n}") for n in range(250)]
    f = finder(items)
    answers = cast(Generator[Response, None, None], f.find(query(), "CT01", lambda: False, FindOutcome()))
    next(answers)
    store = cast(FakeStore, f.store)
    assert store.loads == [100]  # one batch, not 250 items
    answers.close()


@pytest.mark.parametrize(
    ("station", "applies"),
    [(None, True), ("", True), ("*", True), ("**", True), ("CT01", False), ("CT*", False)],
)
def test_issuer_filter_applies_only_to_absent_empty_or_universal_station(
    station: str | None, applies: bool
) -> None:
    q = query()
    step = q.ScheduledProcedureStepSequence[0]
    if station is None:
        del step.ScheduledStationAETitle
    else:
        step.ScheduledStationAETitle = station
    assert issuer_filter_applies(q) is applies


def test_issuer_filter_applies_without_sps_sequence() -> None:
    q = Dataset()
    q.PatientID = ""
    assert issuer_filter_applies(q)


def test_steps_at_station_keeps_only_the_callers_steps() -> None:
    trimmed = steps_at_station(TWO_STEPS, "MR01")
    assert trimmed is not None
    assert [s["00080060"]["Value"] for s in trimmed["00400100"]["Value"]] == [["MR"]]
    assert steps_at_station(TWO_STEPS, "US01") is None
    assert steps_at_station(worklist(), "CT01") is not None


@pytest.mark.parametrize(("station", "expected"), [("", ["MR"]), ("*", ["MR"]), ("CT01", ["CT"])])
def test_filter_issuer_aet_restricts_only_when_the_query_leaves_the_station_open(
    station: str, expected: list[str]
) -> None:
    f = finder([TWO_STEPS], filter_issuer_aet=True)
    responses = run(f, query(ScheduledStationAETitle=station), calling="MR01")
    assert [
        ds.ScheduledProcedureStepSequence[0].Modality for _, ds in responses if isinstance(ds, Dataset)
    ] == expected
