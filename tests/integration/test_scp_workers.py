"""ScpWorkers: `python -m services.scp` starts that many SCP processes on one DICOM port, so that queries use
every core; they answer alike, stop together on SIGTERM, and a worker that dies takes the set down (so that
its supervisor restarts it) rather than leaving a process that silently serves less."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pydicom import Dataset

from bench.procstat import children, cpu_seconds
from shared.migrate import upgrade
from tests.support.dicom_clients import add_items, c_find, worklist
from tests.support.servers import NatsServer, free_port, service_env, wait_for_port


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.scp"],
        env=service_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on 127.0.0.1:`port` (state 0A in /proc/net/tcp)."""
    with open("/proc/net/tcp", encoding="ascii") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return {row[9] for row in rows if row[1].endswith(f":{port:04X}") and row[3] == "0A"}


def listens(pid: int, inodes: set[str]) -> bool:
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


def workers_of(process: subprocess.Popen[str], port: int, count: int, timeout: float = 60) -> list[int]:
    """The worker processes' ids, once `count` of them run and every one listens on the DICOM port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = children(process.pid)
        inodes = listening_inodes(port)
        if len(pids) == count and all(listens(pid, inodes) for pid in pids):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{count} listening workers not started within {timeout} s")


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_share_the_port_and_stop_together(tmp_path: Path, nats_server: NatsServer) -> None:
    database_url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(database_url)
    add_items(database_url, [worklist(patient_id="WORKERS1")])
    port, health = free_port(), free_port()
    process = start(
        {
            "MWL_DATABASE_URL": database_url,
            "MWL_NATS_URL": nats_server.url,
            "MWL_DICOM_PORT": str(port),
            "MWL_SCP_HEALTH_PORT": str(health),
            "MWL_SCP_WORKERS": "3",
        }
    )
    try:
        wait_for_port(port, timeout=30)
        wait_for_port(health, timeout=10)
        workers = workers_of(process, port, 2)
        before = cpu_seconds(workers)
        query = Dataset()
        query.PatientID = "WORKERS1"
        for _ in range(96):
            assert [a.status for a in c_find(port, query)] == [0xFF00, 0x0000]
        # The kernel spread the associations: the extra workers did some of the work (a C-FIND costs them
        # ~1-2 ms of CPU: about 64 of them, against CPU time counted in 10 ms ticks).
        assert cpu_seconds(workers) > before + 0.03
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert output.count("Modality Worklist SCP ORTHANC listening on") == 3, output
    assert not any(running(pid) for pid in workers)


def test_a_worker_that_dies_stops_the_set(tmp_path: Path, nats_server: NatsServer) -> None:
    database_url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(database_url)
    port = free_port()
    process = start(
        {
            "MWL_DATABASE_URL": database_url,
            "MWL_NATS_URL": nats_server.url,
            "MWL_DICOM_PORT": str(port),
            "MWL_SCP_HEALTH_PORT": "0",
            "MWL_SCP_WORKERS": "2",
        }
    )
    try:
        wait_for_port(port, timeout=30)
        (worker,) = workers_of(process, port, 1)
        os.kill(worker, signal.SIGKILL)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, output
    assert f"SCP worker {worker} exited" in output, output
