"""`python -m services.scp` as `make run` starts it: serves, stops cleanly on SIGTERM, and refuses to start
with a clear message on a bad configuration or an unmigrated store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from pydicom import Dataset

from shared.migrate import upgrade
from tests.support.dicom_clients import add_items, c_echo, c_find, worklist
from tests.support.servers import NatsServer, free_port, service_env, wait_for_port


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.scp"],
        env=service_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serves_until_sigterm_then_exits_cleanly(tmp_path: Path, nats_server: NatsServer) -> None:
    # One backend is enough here: the process wiring is the same, the store paths are tested elsewhere.
    database_url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(database_url)
    add_items(database_url, [worklist(patient_id="MAIN1")])
    port, health = free_port(), free_port()
    # In the file, not MWL_LOG_FORMAT: the format must come from the settings, read after logging started.
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"LogFormat": "json"}))
    process = start(
        {
            "MWL_DATABASE_URL": database_url,
            "MWL_NATS_URL": nats_server.url,
            "MWL_DICOM_PORT": str(port),
            "MWL_SCP_HEALTH_PORT": str(health),
            "MWL_CONFIG": str(config),
        }
    )
    try:
        wait_for_port(port, timeout=30)
        assert c_echo(port) == 0x0000
        query = Dataset()
        query.PatientID = "MAIN1"
        assert [a.status for a in c_find(port, query)] == [0xFF00, 0x0000]
        wait_for_port(health, timeout=10)
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as response:
            assert 'mwl_cfind_requests_total{status="success"} 1.0' in response.read().decode()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "listening on 127.0.0.1" in output
    assert "MAIN1" not in output  # no patient data in the log
    # LogFormat json: one object per line, the C-FIND line with the fields a dashboard reads.
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [done] = [e for e in entries if e["message"].startswith("C-FIND from")]
    assert (done["calling_ae"], done["status"], done["answers"]) == ("PYSCU", "0x0000", 1)
    assert done["duration_ms"] >= 0


def test_unmigrated_store_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    process = start(
        {"MWL_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "MWL_DICOM_PORT": str(free_port())}
    )
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "not migrated" in output and "make migrate" in output


@pytest.mark.parametrize(("name", "value", "option"), [("MWL_DICOM_PORT", "99999", "DicomPort")])
def test_bad_configuration_exits_2_naming_the_option(name: str, value: str, option: str) -> None:
    process = start({name: value})
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert option in output
