"""The SCP's narrowing query on a real SQLite store: the driver-level path returns exactly what SQLAlchemy
returns, fails as SQLAlchemy fails (without patient data), and survives a connection the store closed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from services.scp.lookup import Candidate, ItemStore, candidates_query
from services.scp.server import create_engine
from shared.matching import CompiledQuery, MatchOptions, compile_query
from shared.migrate import upgrade
from tests.support.dicom_clients import add_items_async, worklist

ITEMS = [
    worklist(name="Smith^Anna", patient_id="P1", accession="A1"),
    worklist(
        name="Smirnov^Ivan",
        patient_id="P2",
        accession="A2",
        steps=[
            {
                "Modality": "MR",
                "ScheduledStationAETitle": "MR01",
                "ScheduledProcedureStepStartDate": "20251015",
            }
        ],
    ),
    worklist(
        name="Müller^Jörg",
        patient_id="P3",
        accession="A3_%",
        steps=[{}, {"Modality": "MR", "ScheduledStationAETitle": ["MR01", "MR02"]}],
    ),
    worklist(name="Doe^John", patient_id="P1", accession="A4", StudyInstanceUID="1.2.3.4"),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('lookup') / 'store.db'}"
    upgrade(url)
    asyncio.run(add_items_async(url, ITEMS))
    engine = create_engine(url)
    yield engine
    engine.dispose()


def compiled(**keys: Any) -> CompiledQuery:
    query = Dataset()
    query.PatientName = ""
    step = Dataset()
    step.Modality = ""
    for keyword, value in keys.items():
        setattr(step if keyword.startswith(("Scheduled", "Modality")) else query, keyword, value)
    query.ScheduledProcedureStepSequence = [step]
    return compile_query(query, MatchOptions())


QUERIES: dict[str, dict[str, Any]] = {
    "universal": {},
    "patient_id": {"PatientID": "P1"},
    "accession_with_like_characters": {"AccessionNumber": "A3_%"},
    "name_prefix": {"PatientName": "SMI*"},
    "folded_name_prefix": {"PatientName": "mül*"},
    "station": {"ScheduledStationAETitle": "MR01"},
    "station_and_modality": {"ScheduledStationAETitle": "CT01", "Modality": "CT"},
    "date_range": {"ScheduledProcedureStepStartDate": "20251015-"},
    "study_uid_list": {"StudyInstanceUID": ["1.2.3.4", "9.9"]},  # an expanding parameter: SQLAlchemy's path
    "nothing": {"PatientID": "NOBODY"},
}


def through_sqlalchemy(engine: Engine, query: CompiledQuery) -> list[Candidate]:
    statement, params = candidates_query(query, engine.dialect.name)
    with engine.connect() as connection:
        return [Candidate(row[0], row[1]) for row in connection.execute(statement, params)]


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_candidates_are_what_sqlalchemy_returns(engine: Engine, name: str) -> None:
    query = compiled(**QUERIES[name])
    store = ItemStore(engine)
    expected = through_sqlalchemy(engine, query)
    assert store.candidates(query) == expected
    assert store.candidates(query) == expected  # the compiled statement reused
    if name != "nothing":
        assert expected


def test_candidate_versions_equal_the_loaded_ones_so_the_item_cache_hits(engine: Engine) -> None:
    store = ItemStore(engine)
    found = store.candidates(compiled())
    loaded = {item.item_id: item.version for item in store.load([c.item_id for c in found])}
    assert {c.item_id: c.version for c in found} == loaded


def test_a_store_error_is_sqlalchemys_without_the_query_values(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated: no tables
    try:
        with pytest.raises(OperationalError) as raised:
            ItemStore(engine).candidates(compiled(PatientID="SECRET-PID"))
        assert isinstance(raised.value, DBAPIError)
        assert "SECRET-PID" not in str(raised.value)
        assert not raised.value.connection_invalidated
    finally:
        engine.dispose()


def test_a_connection_the_store_closed_is_replaced(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ItemStore(engine)
    query = compiled(PatientID="P1")
    expected = store.candidates(query)
    fetched: list[int | None] = []
    fetch = store._fetch

    def spy(*args: Any) -> Any:
        rows = fetch(*args)
        fetched.append(None if rows is None else len(rows))
        return rows

    monkeypatch.setattr(store, "_fetch", spy)
    pooled = engine.raw_connection()
    driver_connection = pooled.dbapi_connection
    pooled.close()  # back into the pool...
    assert driver_connection is not None
    driver_connection.close()  # ...where the store closes it (a restart, an idle timeout)
    assert store.candidates(query) == expected
    assert fetched == [None]  # the closed one was invalidated and the read retried through SQLAlchemy
    assert store.candidates(query) == expected
    assert fetched == [None, len(expected)]


def test_a_store_that_cannot_be_reached_is_sqlalchemys_error() -> None:
    # Port 1 on loopback refuses at once: the connect itself fails, before any statement.
    engine = create_engine("postgresql+psycopg://mwl@127.0.0.1:1/mwl")
    try:
        with pytest.raises(DBAPIError):
            ItemStore(engine).candidates(compiled(PatientID="P1"))
    finally:
        engine.dispose()
