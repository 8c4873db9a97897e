"""The Orthanc Worklists REST flow on a real store (SQLite and PostgreSQL) with a real NATS."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import ApiFactory

Client = TestClient[Any, Any]

# The Orthanc Book's example, sent as curl sends it (--data: form content type, JSON body).
SEED_BODY = """{
    "Tags" : {
        "PatientID": "PID-45",
        "PatientName": "Toto",
        "ScheduledProcedureStepSequence" : [
            {
                "Modality": "US",
                "ScheduledProcedureStepStartDate": "20251014"
            }
        ]
    }
}"""
CURL_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def tags(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "PatientID": "P1",
        "PatientName": "Doe^Jane",
        "AccessionNumber": "A1",
        "ScheduledProcedureStepSequence": [
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT01",
                "ScheduledProcedureStepStartDate": "20251014",
                "ScheduledProcedureStepStartTime": "093000",
                "ScheduledProcedureStepID": "SPS1",
            }
        ],
        "RequestedProcedureID": "RP1",
    }
    base.update(extra)
    return base


async def create(api: Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = await api.post("/worklists/create", json=body)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def test_seed_document_flow(api: Client) -> None:
    resp = await api.post("/worklists/create", data=SEED_BODY, headers=CURL_HEADERS)
    assert resp.status == 200, await resp.text()
    created = await resp.json()
    item_id = created["ID"]
    assert created["Path"] == f"/worklists/{item_id}"

    resp = await api.get(f"/worklists/{item_id}")
    assert resp.status == 200
    item = await resp.json()
    assert item["ID"] == item_id
    assert item["Tags"]["PatientID"] == "PID-45"
    assert item["Tags"]["PatientName"] == "Toto"
    assert item["Tags"]["SpecificCharacterSet"] == "ISO_IR 192"
    assert item["Tags"]["StudyInstanceUID"].startswith("1.2.")
    assert item["Tags"]["ScheduledProcedureStepSequence"] == [
        {"Modality": "US", "ScheduledProcedureStepStartDate": "20251014"}
    ]

    listing = await (await api.get("/worklists")).json()
    assert [w["ID"] for w in listing] == [item_id]
    assert len(listing[0]["CreationDate"]) == 15 and listing[0]["CreationDate"][8] == "T"

    resp = await api.delete(f"/worklists/{item_id}")
    assert resp.status == 200 and await resp.json() == {}
    assert (await api.get(f"/worklists/{item_id}")).status == 404
    gone = await api.delete(f"/worklists/{item_id}")
    assert gone.status == 404
    assert (await gone.json())["HttpStatus"] == 404
    assert await (await api.get("/worklists")).json() == []


async def test_formats_have_orthancs_shapes(api: Client) -> None:
    item_id = (
        await create(
            api,
            {
                "Tags": {
                    "PatientName": "Toto",
                    "ScheduledProcedureStepSequence": [
                        {"Modality": "US", "ScheduledProcedureStepStartDate": "20251014"}
                    ],
                }
            },
        )
    )["ID"]
    simplify = (await (await api.get(f"/worklists/{item_id}?format=Simplify")).json())["Tags"]
    assert simplify["PatientName"] == "Toto"
    assert simplify["ScheduledProcedureStepSequence"] == [
        {"Modality": "US", "ScheduledProcedureStepStartDate": "20251014"}
    ]
    short = (await (await api.get(f"/worklists/{item_id}?format=Short")).json())["Tags"]
    assert short["0010,0010"] == "Toto"
    assert short["0040,0100"] == [{"0008,0060": "US", "0040,0002": "20251014"}]
    full = (await (await api.get(f"/worklists/{item_id}?format=Full")).json())["Tags"]
    assert full["0010,0010"] == {"Name": "PatientName", "Type": "String", "Value": "Toto"}
    assert full["0040,0100"]["Name"] == "ScheduledProcedureStepSequence"
    assert full["0040,0100"]["Type"] == "Sequence"
    assert full["0040,0100"]["Value"][0]["0008,0060"] == {"Name": "Modality", "Type": "String", "Value": "US"}
    listed = await (await api.get("/worklists?format=Short")).json()
    assert listed[0]["Tags"]["0010,0010"] == "Toto"


async def test_unknown_format_is_rejected(api: Client) -> None:
    resp = await api.get("/worklists?format=simplify")
    assert resp.status == 400
    body = await resp.json()
    assert body["Field"] == "format"
    assert body["HttpError"] == "Bad Request"
    assert body["Uri"] == "/worklists"
    assert body["Method"] == "GET"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"Tags": {"PatientName": "X"}}, "ScheduledProcedureStepSequence"),
        (
            {"Tags": {"ScheduledProcedureStepSequence": [{"ScheduledProcedureStepStartDate": "20251014"}]}},
            "ScheduledProcedureStepSequence[0].Modality",
        ),
        (
            {"Tags": {"ScheduledProcedureStepSequence": [{"Modality": "CT"}]}},
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
        ),
        ({"Tags": tags(NotAKeyword="x")}, "NotAKeyword"),
        ({"Tags": tags(PatientID=12)}, "PatientID"),
        ({"Tags": tags(PatientID=True)}, "PatientID"),
        ({"Tags": tags(PatientName=["a"])}, "PatientName"),
        ({"Tags": tags(PatientBirthDate="19991340")}, "PatientBirthDate"),
        ({"Tags": tags(StudyInstanceUID="1.2.abc")}, "StudyInstanceUID"),
        ({"Tags": tags(ScheduledProcedureStepSequence="CT")}, "ScheduledProcedureStepSequence"),
        ({"Tags": "nope"}, "Tags"),
        ({}, "Tags"),
        ({"Tags": tags(), "Force": "yes"}, "Force"),
    ],
)
async def test_invalid_creates_name_the_field(api: Client, body: dict[str, Any], field: str) -> None:
    resp = await api.post("/worklists/create", json=body)
    assert resp.status == 400, await resp.text()
    error = await resp.json()
    assert error["HttpStatus"] == 400
    assert error["Field"] == field
    assert field.split("[")[0].split(".")[-1] in error["Details"]
    assert await (await api.get("/worklists")).json() == []


async def test_force_skips_orthancs_minimum_but_not_value_checks(api: Client) -> None:
    resp = await api.post("/worklists/create", json={"Tags": {"PatientName": "X"}, "Force": True})
    assert resp.status == 200
    resp = await api.post("/worklists/create", json={"Tags": {"PatientBirthDate": "x"}, "Force": True})
    assert resp.status == 400


async def test_missing_type1_keys_are_warned(api: Client) -> None:
    steps = [{"Modality": "US", "ScheduledProcedureStepStartDate": "20251014"}]
    answer = await create(
        api, {"Tags": {"PatientName": "Toto", "PatientID": "P", "ScheduledProcedureStepSequence": steps}}
    )
    joined = " ".join(answer["Warnings"])
    assert "ScheduledStationAETitle" in joined
    assert "ScheduledProcedureStepID" in joined
    complete = await create(api, {"Tags": tags(StudyInstanceUID="1.2.3")})
    assert complete["Warnings"] == []


async def test_study_instance_uid_kept_or_generated(api_factory: ApiFactory) -> None:
    api = await api_factory(Worklists={"SetStudyInstanceUidIfMissing": False})
    item_id = (await create(api, {"Tags": tags()}))["ID"]
    item = await (await api.get(f"/worklists/{item_id}")).json()
    assert "StudyInstanceUID" not in item["Tags"]
    kept = (await create(api, {"Tags": tags(StudyInstanceUID="1.2.840.99")}))["ID"]
    assert (await (await api.get(f"/worklists/{kept}")).json())["Tags"]["StudyInstanceUID"] == "1.2.840.99"


async def test_put_replaces_validates_and_upserts(api: Client) -> None:
    item_id = (await create(api, {"Tags": tags()}))["ID"]
    resp = await api.put(f"/worklists/{item_id}", json={"Tags": tags(PatientName="Roe^Richard")})
    assert resp.status == 200, await resp.text()
    item = await (await api.get(f"/worklists/{item_id}")).json()
    assert item["Tags"]["PatientName"] == "Roe^Richard"
    bad = await api.put(f"/worklists/{item_id}", json={"Tags": tags(PatientBirthDate="2025")})
    assert bad.status == 400
    assert (await (await api.get(f"/worklists/{item_id}")).json())["Tags"]["PatientName"] == "Roe^Richard"
    assert (await api.put("/worklists/unknown-id", json={"Tags": tags()})).status == 404
    upsert = await api.put("/worklists/ris-order-42", json={"Tags": tags(), "Upsert": True})
    assert upsert.status == 200
    assert (await api.get("/worklists/ris-order-42")).status == 200
    # Upserted ids are ASCII only: an id is also a file name in folder mode.
    for bad_id in ("r%C3%A9sum%C3%A9", "%D9%A3", "a%20b", "x" * 65):
        refused = await api.put(f"/worklists/{bad_id}", json={"Tags": tags(), "Upsert": True})
        assert refused.status == 400 and (await refused.json())["Field"] == "id"


async def test_hostile_bodies_get_4xx(api_factory: ApiFactory) -> None:
    api = await api_factory(MaxBodySize=10_000)
    assert (await api.post("/worklists/create", data=b"x" * 20_000)).status == 413
    assert (await api.post("/worklists/create", data=b'{"Tags": {"PatientName": "\xff"}}')).status == 400
    deep = '{"Tags": {"ScheduledProcedureStepSequence": ' + "[" * 5000 + "]" * 5000 + "}}"
    assert (await api.post("/worklists/create", data=deep)).status in (400, 413)
    nested = {"Tags": tags()}
    seq: list[Any] = []
    node = nested["Tags"]
    for _ in range(40):
        seq = [{"ScheduledProcedureStepSequence": []}]
        node["ScheduledProcedureStepSequence"] = seq
        node = seq[0]
    assert (await api.post("/worklists/create", data=json.dumps(nested))).status == 400
    assert (await api.post("/worklists/create", data="[]")).status == 400
    assert (await api.post("/worklists/create", data="not json")).status == 400
    assert await (await api.get("/worklists")).json() == []


async def test_health_endpoints(api: Client) -> None:
    assert (await api.get("/healthz")).status == 200
    ready = await api.get("/readyz")
    body = await ready.json()
    assert body["checks"]["database"] == "ok"
