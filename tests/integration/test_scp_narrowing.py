"""The SQL narrowing never drops a true match: for random queries, every item the pure matching accepts is
among the candidates the indexed scheduled_steps lookup returns (SQLite GLOB and PostgreSQL LIKE alike)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import Dataset

from services.scp.lookup import ItemStore, escape_glob, escape_like
from services.scp.server import create_engine
from shared.matching import MatchOptions, compile_query, match_item
from shared.migrate import upgrade
from tests.support.dicom_clients import add_items, worklist

NAMES = [
    "Doe^John",
    "DOE^JOHN",
    "Döe^Jöhn",
    "Müller^Jürgen",
    "MULLER^JURGEN",
    "O'Brien^Sean",
    "100%^Sure",
    "Under_Score^X",
    "Star*Name^Y",
    "Br[a]cket^Z",
    "Yamada^Tarou=山田^太郎",
    "Иванов^Иван",
]
IDS = ["P1", "P_1", "P%1", "p1", "P10"]
STATIONS = ["CT01", "CT_1", "MR01", "ct01", "MR01\\CT01"]  # ScheduledStationAETitle is 1-n
MODALITIES = ["CT", "MR", "US"]
DATES = ["20251014", "20251015", "20251016"]
TIMES = ["", "0700", "083000", "120000.5", "235959"]


def pool() -> list[dict[str, Any]]:
    rng = random.Random(7)
    items = []
    for _ in range(120):
        steps = [
            {
                "Modality": rng.choice(MODALITIES),
                "ScheduledStationAETitle": rng.choice(STATIONS),
                "ScheduledProcedureStepStartDate": rng.choice(DATES),
                "ScheduledProcedureStepStartTime": rng.choice(TIMES),
                "ScheduledProcedureStepID": rng.choice(["S1", "S2", "S_3"]),
            }
            for _ in range(rng.choice([1, 1, 2]))
        ]
        items.append(
            worklist(
                name=rng.choice(NAMES),
                patient_id=rng.choice(IDS),
                accession=rng.choice(["A1", "A_1", "A%"]),
                steps=steps,
                RequestedProcedureID=rng.choice(["R1", "R2"]),
                StudyInstanceUID=rng.choice(["1.2.3", "1.2.4", "1.2.5"]),
            )
        )
    return items


ITEMS = pool()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ItemStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('narrowing') / 'worklists.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    upgrade(url)
    ids = add_items(url, ITEMS)
    engine = create_engine(url)
    items_store = ItemStore(engine)
    items_store.ids_in_order = ids  # type: ignore[attr-defined]
    yield items_store
    engine.dispose()


def pattern(values: list[str]) -> st.SearchStrategy[str]:
    """A query value: a stored one, another case of it, its start with `*`, one `?`, or universal."""

    def variants(value: str) -> list[str]:
        return [value, value.lower(), value[: max(1, len(value) // 2)] + "*", "?" + value[1:], "*", ""]

    return st.sampled_from(values).flatmap(lambda v: st.sampled_from(variants(v)))


def date_range() -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["", *DATES]), st.sampled_from(["", *DATES])).map(
        lambda bounds: bounds[0] if bounds[0] == bounds[1] else f"{bounds[0]}-{bounds[1]}"
    )


@st.composite
def queries(draw: st.DrawFn) -> Dataset:
    ds = Dataset()
    ds.AccessionNumber = draw(st.sampled_from(["", "A1", "A_1", "A%", "A*"]))
    ds.PatientID = draw(pattern(IDS))
    ds.PatientName = draw(pattern(NAMES))
    if draw(st.booleans()):
        ds.StudyInstanceUID = draw(st.sampled_from(["", "1.2.3", "1.2.3\\1.2.5"]))
    ds.RequestedProcedureID = draw(st.sampled_from(["", "R1"]))
    step = Dataset()
    step.Modality = draw(st.sampled_from(["", *MODALITIES]))
    step.ScheduledStationAETitle = draw(pattern(STATIONS))
    step.ScheduledProcedureStepStartDate = draw(date_range())
    step.ScheduledProcedureStepStartTime = draw(
        st.sampled_from(["", "0800-1200", "1200-", "-0800", "180000-080000"])
    )
    step.ScheduledProcedureStepID = draw(st.sampled_from(["", "S1", "S_3"]))
    ds.ScheduledProcedureStepSequence = [step]
    return ds


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=queries(), case_sensitive=st.booleans())
def test_narrowing_keeps_every_true_match(store: ItemStore, query: Dataset, case_sensitive: bool) -> None:
    compiled = compile_query(query, MatchOptions(case_sensitive_pn=case_sensitive))
    ids: list[str] = store.ids_in_order  # type: ignore[attr-defined]
    true_matches = {item_id for item_id, item in zip(ids, ITEMS, strict=True) if match_item(compiled, item)}
    candidates = {c.item_id for c in store.candidates(compiled)}
    assert true_matches <= candidates


def test_like_and_glob_escapes_keep_literals() -> None:
    assert escape_like("100%_\\x") == "100\\%\\_\\\\x"
    assert escape_glob("a*b?c[d]") == "a[*]b[?]c[[]d]"
