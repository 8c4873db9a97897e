"""GET /worklists paging, filters (C-FIND matching rules) and X-Total-Count, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import insert

from shared.db import create_sync_engine
from shared.indexing import item_keys, step_rows
from shared.models import ScheduledStep, WorklistItem
from tests.integration.conftest import ApiFactory
from tests.integration.test_api_worklists import create

Client = TestClient[Any, Any]


def item(
    name: str = "Doe^Jane",
    pid: str = "P1",
    accession: str = "A1",
    steps: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    sequence = steps or [step()]
    return {
        "Tags": {
            "PatientName": name,
            "PatientID": pid,
            "AccessionNumber": accession,
            "ScheduledProcedureStepSequence": sequence,
            **extra,
        }
    }


def step(
    modality: str = "CT", station: str = "CT01", date: str = "20251014", time: str = "093000", **extra: str
) -> dict[str, str]:
    return {
        "Modality": modality,
        "ScheduledStationAETitle": station,
        "ScheduledProcedureStepStartDate": date,
        "ScheduledProcedureStepStartTime": time,
        **extra,
    }


async def ids(api: Client, query: str, *, status: int = 200) -> list[str]:
    resp = await api.get(f"/worklists?{query}")
    assert resp.status == status, await resp.text()
    return [w["ID"] for w in await resp.json()]


async def total(api: Client, query: str) -> int:
    resp = await api.get(f"/worklists?{query}")
    assert resp.status == 200, await resp.text()
    return int(resp.headers["X-Total-Count"])


async def bad(api: Client, query: str) -> dict[str, Any]:
    resp = await api.get(f"/worklists?{query}")
    assert resp.status == 400, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["HttpStatus"] == 400
    return body


async def test_pages_through_items_in_creation_order_with_a_total(api: Client) -> None:
    created = [(await create(api, item(accession=f"ACC{i}")))["ID"] for i in range(5)]

    assert await ids(api, "limit=2") == created[:2]
    assert await ids(api, "limit=2&offset=2") == created[2:4]
    assert await ids(api, "limit=2&offset=4") == created[4:]
    assert await ids(api, "limit=2&since=2") == created[2:4]  # Orthanc's name for the offset
    assert await ids(api, "offset=10") == []
    assert await ids(api, "limit=0") == created  # as in Orthanc: 0 is no limit
    assert await ids(api, "sort=-CreationDate&limit=2") == created[::-1][:2]
    assert await total(api, "limit=2&offset=4") == 5
    assert await total(api, "") == 5

    # The body stays Orthanc's array of {ID, Tags, CreationDate}.
    listing = await (await api.get("/worklists?limit=1&format=Short")).json()
    assert set(listing[0]) == {"ID", "Tags", "CreationDate"}
    assert listing[0]["Tags"]["0008,0050"] == "ACC0"


async def test_attribute_filters_match_as_cfind_does(api: Client) -> None:
    ct = (await create(api, item("Doe^Jane", "P1", "A1", [step("CT", "CT01", "20251014", "0930")])))["ID"]
    mr = (await create(api, item("Smith^John", "P2", "A2", [step("MR", "MR01", "20251015", "1400")])))["ID"]
    us = (await create(api, item("Smithers^Ann", "P3", "B3", [step("US", "US_2", "20251020", "0800")])))["ID"]

    assert await ids(api, "Modality=CT") == [ct]
    assert await ids(api, "Modality=ct") == []  # single value matching is case-sensitive
    assert await ids(api, "Modality=CT%5CMR") == [ct, mr]  # "\" separates values, any may match
    assert await ids(api, "ScheduledStationAETitle=*01") == [ct, mr]
    assert await ids(api, "ScheduledStationAETitle=US?2") == [us]
    assert await ids(api, "PatientName=Smith*") == [mr, us]
    assert await ids(api, "PatientName=smith*") == []  # CaseSensitivePN defaults to true
    assert await ids(api, "PatientName=Smith^John") == [mr]
    assert await ids(api, "PatientID=P2") == [mr]
    assert await ids(api, "AccessionNumber=A*") == [ct, mr]
    assert await ids(api, "AccessionNumber=*") == [ct, mr, us]  # universal
    assert await ids(api, "PatientID=") == [ct, mr, us]  # zero-length: universal
    assert await ids(api, "Modality=CT&PatientID=P2") == []
    assert await total(api, "AccessionNumber=A*&limit=1") == 2


async def test_dates_take_ranges_and_combine_with_times(api: Client) -> None:
    early = (await create(api, item(accession="E", steps=[step(date="20251014", time="0800")])))["ID"]
    late = (await create(api, item(accession="L", steps=[step(date="20251014", time="1930")])))["ID"]
    next_day = (await create(api, item(accession="N", steps=[step(date="20251015", time="0700")])))["ID"]
    later = (await create(api, item(accession="X", steps=[step(date="20251020", time="1200")])))["ID"]
    date = "ScheduledProcedureStepStartDate"
    time = "ScheduledProcedureStepStartTime"

    assert await ids(api, f"{date}=20251014") == [early, late]
    assert await ids(api, f"{date}=20251014-20251015") == [early, late, next_day]
    assert await ids(api, f"{date}=20251015-") == [next_day, later]
    assert await ids(api, f"{date}=-20251014") == [early, late]
    assert await ids(api, f"{time}=0700-0900") == [early, next_day]
    # Date and time together are one range: from the 14th 18:00 to the 15th 08:00 (PS3.4 C.2.2.2.5.4).
    assert await ids(api, f"{date}=20251014-20251015&{time}=1800-0800") == [late, next_day]
    assert await ids(api, "sort=ScheduledStart") == [early, late, next_day, later]
    assert await ids(api, "sort=-ScheduledStart&limit=1") == [later]


async def test_all_filters_must_match_within_one_scheduled_step(api: Client) -> None:
    both = item("Doe^Jane", "P1", "A1", [step("CT", "CT01"), step("MR", "MR01")])
    item_id = (await create(api, both))["ID"]

    assert await ids(api, "Modality=MR&ScheduledStationAETitle=MR01") == [item_id]
    assert await ids(api, "Modality=CT&ScheduledStationAETitle=MR01") == []


async def test_case_insensitive_names_when_case_sensitive_pn_is_false(api_factory: ApiFactory) -> None:
    api = await api_factory(CaseSensitivePN=False)
    muller = (await create(api, item("Müller^Jürgen", "P1")))["ID"]
    await create(api, item("Yamada^Tarou=山田^太郎", "P2"))

    assert await ids(api, "PatientName=MULLER*") == [muller]
    assert await ids(api, "PatientName=muller^jurgen") == [muller]
    assert len(await ids(api, "PatientName=yamada^tarou")) == 1  # the alphabetic group only


async def test_free_text_searches_name_id_and_accession_in_any_case(api: Client) -> None:
    jane = (await create(api, item("Doe^Jane", "PID-7", "ACC-100")))["ID"]
    muller = (await create(api, item("Müller^Jürgen", "X9", "ZZ-200")))["ID"]

    assert await ids(api, "q=jane%20doe") == [jane]  # every word, in any order
    assert await ids(api, "q=pid-7") == [jane]
    assert await ids(api, "q=acc-1") == [jane]
    assert await ids(api, "q=muller") == [muller]  # accents ignored
    assert await ids(api, "q=jane%20zz") == []
    assert await ids(api, "q=%25") == []  # SQL wildcards are literal


async def test_sql_wildcards_and_brackets_in_values_are_literal(api: Client) -> None:
    percent = (await create(api, item(pid="A%1")))["ID"]
    underscore = (await create(api, item(pid="A_1")))["ID"]
    bracket = (await create(api, item(pid="[A]1")))["ID"]
    other = (await create(api, item(pid="AB1")))["ID"]

    assert await ids(api, "PatientID=A%25*") == [percent]
    assert await ids(api, "PatientID=A_*") == [underscore]
    assert await ids(api, "PatientID=%5BA%5D*") == [bracket]
    assert await ids(api, "PatientID=A?1") == [percent, underscore, other]


async def test_items_without_a_scheduled_step_are_listed_only_when_nothing_constrains(api: Client) -> None:
    bare = (await create(api, {"Tags": {"PatientID": "P1", "PatientName": "Doe^Jane"}, "Force": True}))["ID"]

    assert await ids(api, "") == [bare]
    assert await ids(api, "PatientID=*") == [bare]
    assert await ids(api, "PatientID=P1") == []  # C-FIND never answers an item without an SPS


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=1.5", "offset"),
        ("offset=1&since=1", "since"),
        ("sort=PatientName", "sort"),
        ("Bogus=1", "Bogus"),
        ("PatientBirthDate=19700101", "PatientBirthDate"),
        ("Modality=CT&Modality=MR", "Modality"),
        ("ScheduledProcedureStepStartDate=2025-10", "ScheduledProcedureStepStartDate"),
        ("ScheduledProcedureStepStartDate=20251301", "ScheduledProcedureStepStartDate"),
        ("ScheduledProcedureStepStartTime=25", "ScheduledProcedureStepStartTime"),
        ("StudyInstanceUID=1.2.abc", "StudyInstanceUID"),
        ("PatientName=Yamada=山田", "PatientName"),
        ("ScheduledStationAETitle=CTé", "ScheduledStationAETitle"),
        ("q=" + "x" * 300, "q"),
    ],
)
async def test_invalid_parameters_are_rejected_naming_them(api: Client, query: str, field: str) -> None:
    body = await bad(api, query)
    assert body["Field"] == field
    assert field in body["Details"]


async def test_ten_thousand_items_are_served_one_page_at_a_time(api: Client, database_url: str) -> None:
    _bulk_insert(database_url, 10_000)

    resp = await api.get("/worklists?limit=50&offset=9950&format=Short")
    assert resp.status == 200
    page = await resp.json()
    assert len(page) == 50
    assert resp.headers["X-Total-Count"] == "10000"
    assert page[-1]["ID"] == "bulk-09999"

    resp = await api.get("/worklists?Modality=MR&ScheduledProcedureStepStartDate=20251101-20251102&limit=25")
    page = await resp.json()
    assert len(page) == 25
    assert all(w["Tags"]["ScheduledProcedureStepSequence"][0]["Modality"] == "MR" for w in page)
    # Every 4th item is MR; dates cycle over 30 days, so two days hold 1/15 of them.
    assert resp.headers["X-Total-Count"] == str(sum(1 for i in range(10_000) if i % 4 == 1 and i % 30 < 2))

    resp = await api.get("/worklists?q=bulk%20patient%2007777&sort=-CreationDate")
    assert [w["ID"] for w in await resp.json()] == ["bulk-07777"]


def _bulk_insert(database_url: str, count: int) -> None:
    """Rows written straight into the store (no outbox): a large store in seconds."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    modalities = ["CT", "MR", "US", "DX"]
    items: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for i in range(count):
        dataset = {
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"Bulk^Patient {i:05d}"}]},
            "00100020": {"vr": "LO", "Value": [f"BP{i:05d}"]},
            "00080050": {"vr": "SH", "Value": [f"BA{i:05d}"]},
            "00400100": {
                "vr": "SQ",
                "Value": [
                    {
                        "00080060": {"vr": "CS", "Value": [modalities[i % 4]]},
                        "00400001": {"vr": "AE", "Value": ["STATION"]},
                        "00400002": {"vr": "DA", "Value": [f"202511{i % 30 + 1:02d}"]},
                        "00400003": {"vr": "TM", "Value": ["080000"]},
                    }
                ],
            },
        }
        item_id = f"bulk-{i:05d}"
        keys = item_keys(dataset)
        created = start + timedelta(seconds=i)
        items.append(
            {
                "id": item_id,
                "dataset": json.dumps(dataset),
                "source": "rest",
                "patient_id": keys.patient_id,
                "patient_name": keys.patient_name,
                "accession_number": keys.accession_number,
                "study_instance_uid": "",
                "created_at": created,
                "updated_at": created,
            }
        )
        steps.extend({"item_id": item_id, **row} for row in step_rows(dataset))
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(WorklistItem), items)
            connection.execute(insert(ScheduledStep), steps)
    finally:
        engine.dispose()
