"""No patient data in the logs at the default level: a whole working day (REST, the `.wl` folder, C-FIND,
the housekeeper deleting on a stable study) with unmistakable patient names and IDs, and every line logged
on the way read back, as text and as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset

from services.api import __main__ as api_main
from shared import folder, jsonlog, startup
from shared.migrate import upgrade
from tests.integration.conftest import ApiFactory
from tests.support.dicom_clients import c_find, running_scp
from tests.support.housekeeper import document, eventually, running
from tests.support.servers import NatsServer

STUDY = "1.2.826.0.1.3680043.8.498.7731"
REST_PATIENT = {
    "PatientName": "Zqxjvortel^Phineasz",
    "PatientID": "PHI-7Q3X9",
    "PatientBirthDate": "19230417",
    "AccessionNumber": "ACCPHI88213",
    "StudyInstanceUID": STUDY,
}
FOLDER_PATIENT = {"PatientName": "Wyqqzel^Ottilie", "PatientID": "PHI-F5521", "AccessionNumber": "ACCPHI4410"}
BROKEN_FILE_TEXT = b"not DICOM: Brokkvist^Hedda PHI-B0042"
# Every piece of patient data the day handles; none may reach a log line.
PHI = [
    "Zqxjvortel", "Phineasz", "PHI-7Q3X9", "19230417", "ACCPHI88213",
    "Wyqqzel", "Ottilie", "PHI-F5521", "ACCPHI4410",
    "Brokkvist", "PHI-B0042", "Badvalue-Qorb",
]  # fmt: skip


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(url)
    return url


def tags(**step: str) -> dict[str, Any]:
    """The REST patient's item, its one step overridden by `step`."""
    first = {"Modality": "CT", "ScheduledStationAETitle": "CT01"}
    first["ScheduledProcedureStepStartDate"] = "20251014"
    return {**REST_PATIENT, "ScheduledProcedureStepSequence": [{**first, **step}]}


def query(**keys: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def test_a_working_day_logs_no_patient_data(
    api_factory: ApiFactory,
    settings_factory: Any,
    database_url: str,
    nats_server: NatsServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As shared.logs sets the levels. The root last: set_level also sets the capturing handler's level.
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    caplog.set_level(logging.ERROR, logger="pydicom")
    caplog.set_level(logging.INFO)  # the services' default level
    wl_dir = tmp_path / "worklists"
    wl_dir.mkdir()
    worklists = {
        "Directory": str(wl_dir),
        "SaveInOrthancDatabase": True,
        "HousekeepingInterval": 0.2,
        "FileSettleTime": 0,
    }
    folder.write_atomically(wl_dir / "ris-0001.wl", folder.encode_worklist(document(**FOLDER_PATIENT)))
    (wl_dir / "broken.wl").write_bytes(BROKEN_FILE_TEXT)

    api = await api_factory(Worklists=worklists)
    async with running(settings_factory(Worklists=worklists)):
        # REST: create, a rejected create quoting patient data, read, list with filters, replace.
        resp = await api.post("/worklists/create", json={"Tags": tags()})
        assert resp.status == 200, await resp.text()
        item = f"/worklists/{(await resp.json())['ID']}"
        bad = {**tags(), "PatientSex": "Badvalue-Qorb"}
        assert (await api.post("/worklists/create", json={"Tags": bad})).status == 400
        assert (await api.get(item)).status == 200
        listed = await api.get("/worklists", params={"PatientName": "Zqxjvortel*", "q": "Phineasz PHI-7Q3X9"})
        assert len(await listed.json()) == 1
        replaced = tags(ScheduledStationAETitle="CT02")
        assert (await api.put(item, json={"Tags": replaced})).status == 200

        # The folder: the good file is served, the broken one reported.
        async def folder_item_served() -> bool:
            found = await api.get("/worklists", params={"PatientID": "PHI-F5521"})
            return len(await found.json()) == 1

        await eventually(folder_item_served, what="the .wl file indexed")

        # C-FIND: matching queries for both patients, and one the SCP must refuse (two SPS items).
        with running_scp(database_url, nats_server.url) as scp:
            for keys in (
                {"PatientName": "Zqxjvortel*"},
                {"PatientID": "PHI-F5521"},
                {"AccessionNumber": "ACCPHI88213"},
            ):
                answers = await asyncio.to_thread(c_find, scp.port, query(**keys))
                assert [a.status for a in answers] == [0xFF00, 0x0000]
            two_steps = query(PatientName="Wyqqzel*")
            two_steps.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
            two_steps.ScheduledProcedureStepSequence[0].Modality = "CT"
            answers = await asyncio.to_thread(c_find, scp.port, two_steps)
            assert answers[-1].status == 0xA900

        # The housekeeper: a stable study (naming the patient) deletes the REST item; a removed file, its own.
        stable = {"StudyInstanceUID": STUDY, "PatientID": "PHI-7Q3X9", "AccessionNumber": "ACCPHI88213"}
        assert (await api.post("/studies/stable", json=stable)).status == 202
        (wl_dir / "ris-0001.wl").unlink()

        async def both_gone() -> bool:
            rest_gone = (await api.get(item)).status == 404
            folder_gone = await api.get("/worklists", params={"PatientID": "PHI-F5521"})
            return rest_gone and await folder_gone.json() == []

        await eventually(both_gone, what="both items deleted")

    # The test server's access log quotes query strings (filters are patient data); the API service runs
    # without one (test_the_api_runs_without_an_access_log).
    records = [r for r in caplog.records if r.name != "aiohttp.access"]
    assert any("broken.wl" in r.getMessage() for r in records), "the broken file was not reported"
    assert any("C-FIND from 'PYSCU'" in r.getMessage() for r in records), "C-FINDs were not logged"
    text, as_json = jsonlog.formatter("text"), jsonlog.formatter("json")
    for record in records:
        for line in (text.format(record), as_json.format(record)):
            leaked = [value for value in PHI if value in line]
            assert leaked == [], f"patient data {leaked} logged by {record.name}: {line}"
    # JSON lines stay JSON: a collector can parse each.
    assert all(json.loads(as_json.format(record)) for record in records)


def test_the_api_runs_without_an_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's access log would write every URL, and listing filters put patient names in URLs."""
    started: dict[str, Any] = {}
    monkeypatch.setattr(api_main.web, "run_app", lambda app, **options: started.update(options))
    monkeypatch.setattr(startup, "configure_logging", lambda **_: None)
    for name in [name for name in os.environ if name.startswith("MWL_")]:
        monkeypatch.delenv(name)
    assert api_main.main([]) == 0
    assert "access_log" in started and started["access_log"] is None
