"""`make run`'s launcher from a fresh folder: migrates, starts NATS and the services, stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from tests.support.servers import free_port, service_env, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _find_modalities(port: int) -> list[str]:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    assert assoc.is_established
    query = Dataset()
    query.PatientName = ""
    sps = Dataset()
    sps.Modality = "CT"
    query.ScheduledProcedureStepSequence = [sps]
    found = [
        str(identifier.ScheduledProcedureStepSequence[0].Modality)
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind)
        if status and status.Status in (0xFF00, 0xFF01)
    ]
    assoc.release()
    return found


def test_launcher_runs_everything_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    http_port, dicom_port, nats_port = free_port(), free_port(), free_port()
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "HttpPort": http_port,
                "DicomPort": dicom_port,
                "NatsUrl": f"nats://127.0.0.1:{nats_port}",
                # Not the defaults 8043/8044, which another run on this machine may hold.
                "ScpHealthPort": free_port(),
                "HousekeeperHealthPort": free_port(),
            }
        )
    )
    env = service_env(PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.run_local", "--config", "config.json"],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for_port(http_port, timeout=30)
        wait_for_port(dicom_port, timeout=30)
        assert (tmp_path / "data" / "worklists.db").exists()
        created = _post(
            f"http://127.0.0.1:{http_port}/worklists/create",
            {
                "Tags": {
                    "PatientName": "Run^Local",
                    "ScheduledProcedureStepSequence": [
                        {"Modality": "CT", "ScheduledProcedureStepStartDate": "20251014"}
                    ],
                }
            },
        )
        assert created["Path"] == f"/worklists/{created['ID']}"
        deadline = time.monotonic() + 5
        while _find_modalities(dicom_port) != ["CT"]:
            assert time.monotonic() < deadline, "the created item never reached C-FIND"
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        code = process.wait(timeout=20)
    assert code == 0
