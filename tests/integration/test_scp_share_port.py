"""`python -m services.scp --share-port`: several SCP processes serve one DICOM port (one per core), each
answering correctly; without the flag a second SCP on a taken port still refuses to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydicom import Dataset

from shared.migrate import upgrade
from tests.support.dicom_clients import add_items, c_find, worklist
from tests.support.servers import NatsServer, free_port, service_env, wait_for_port


def start(env: dict[str, str], *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.scp", *flags],
        env=service_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    output, _ = process.communicate(timeout=20)
    return output


def test_shared_port_serves_from_every_process(tmp_path: Path, nats_server: NatsServer) -> None:
    database_url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(database_url)
    add_items(database_url, [worklist(patient_id="SHARED1")])
    port = free_port()
    env = {"MWL_DATABASE_URL": database_url, "MWL_NATS_URL": nats_server.url, "MWL_DICOM_PORT": str(port)}
    processes = []
    try:
        for _ in range(2):
            health = free_port()
            processes.append(start({**env, "MWL_SCP_HEALTH_PORT": str(health)}, "--share-port"))
            wait_for_port(health, timeout=30)  # each process is up once its own health port listens
        query = Dataset()
        query.PatientID = "SHARED1"
        query.ScheduledProcedureStepSequence = [Dataset()]
        # The kernel spreads connections over both processes: every one of them answers the same.
        for _ in range(12):
            assert [a.status for a in c_find(port, query)] == [0xFF00, 0x0000]
    finally:
        outputs = [stop(p) for p in processes]
    assert all("listening on" in output for output in outputs), outputs
    # Both took associations (12 connections, two listeners: all on one would be 1 in 2048).
    assert all("C-FIND from" in output for output in outputs), outputs


def test_without_the_flag_a_taken_port_is_refused(tmp_path: Path, nats_server: NatsServer) -> None:
    database_url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(database_url)
    port = free_port()
    env = {"MWL_DATABASE_URL": database_url, "MWL_NATS_URL": nats_server.url, "MWL_DICOM_PORT": str(port)}
    first = start({**env, "MWL_SCP_HEALTH_PORT": str(free_port())})
    try:
        wait_for_port(port, timeout=30)
        second = start({**env, "MWL_SCP_HEALTH_PORT": str(free_port())})
        output, _ = second.communicate(timeout=30)
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in output
    finally:
        stop(first)
