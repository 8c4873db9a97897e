"""Fault: PostgreSQL stopped and started again (same data directory, same socket) while REST creates and
C-FINDs keep coming, against the real `python -m services.api` and `python -m services.scp` processes.

During the outage every request fails cleanly and promptly: REST 503 with a JSON message, C-FIND a failure
status with an ErrorComment (or a refused association); both processes live on. Within 5 s of PostgreSQL's
return both serve again without being restarted, and no item is lost or duplicated.

The session's PostgreSQL is the one stopped: the suite runs its tests one at a time, and every other test
has its own database and engines (pool_pre_ping), so this spares a second server's start-up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from sqlalchemy import create_engine, select

from shared.db import sync_url
from shared.migrate import upgrade
from shared.models import WorklistItem
from tests.support.dicom_clients import c_find
from tests.support.housekeeper import Store, eventually, stream_events
from tests.support.servers import NatsServer, Postgres, free_port, service_env, wait_for_port

OUTAGE_SECONDS = 3.0
RECOVERY_SECONDS = 5.0  # the bound: services serve again within 5 s of PostgreSQL's return
PROMPT_SECONDS = 5.0  # a request during the outage is answered within this, never left hanging
FIRST_PATIENT = "PG-00000"


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    kind: str  # "ok", or an expected failure ("503", "failure-status", "refused"), or "bad: what came back"
    detail: str

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


class Traffic:
    """REST creates and C-FINDs in a loop each, in threads, recording every outcome with its times."""

    def __init__(self, http_port: int, dicom_port: int) -> None:
        self.http_port = http_port
        self.dicom_port = dicom_port
        self.creates: list[Outcome] = []
        self.finds: list[Outcome] = []
        self.patients: dict[str, int] = {}  # PatientID sent -> HTTP status (0: no answer)
        self._next = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(self.create, self.creates, 0.05), daemon=True),
            threading.Thread(target=self._loop, args=(self.find, self.finds, 0.1), daemon=True),
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)

    def _loop(self, action: Callable[[], tuple[str, str]], outcomes: list[Outcome], pause: float) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                kind, detail = action()
            except Exception as exc:  # recorded, so the test fails on it rather than the thread dying
                kind, detail = "bad: exception", repr(exc)
            outcomes.append(Outcome(started, time.monotonic(), kind, detail))
            time.sleep(pause)

    def create(self) -> tuple[str, str]:
        patient = f"PG-{self._next:05d}"
        self._next += 1
        body = json.dumps({"Tags": tags(patient)}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/worklists/create", data=body, method="POST"
        )
        self.patients[patient] = 0
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        self.patients[patient] = status
        if status == 200:
            return "ok", text
        if status == 503:
            answer = json.loads(text)  # a JSON error in Orthanc's shape, not a bare 503
            if answer.get("HttpStatus") == 503 and answer.get("Message"):
                return "503", answer["Message"]
        return f"bad: {status}", text

    def find(self) -> tuple[str, str]:
        try:
            answers = c_find(self.dicom_port, by_patient(FIRST_PATIENT))
        except ConnectionError as exc:  # association refused or aborted: allowed while the store is away
            return "refused", repr(exc)
        statuses = [answer.status for answer in answers]
        comment = str(answers[-1].status_dataset.get("ErrorComment", ""))
        detail = f"{[hex(s) for s in statuses]} {comment}"
        if statuses == [0xFF00, 0x0000]:
            return "ok", detail
        if len(statuses) == 1 and 0xC000 <= statuses[0] <= 0xCFFF and comment:
            return "failure-status", detail  # "unable to process", saying why
        return "bad", detail


def tags(patient: str) -> dict[str, Any]:
    return {
        "PatientID": patient,
        "PatientName": "Restart^Patient",
        "AccessionNumber": patient.replace("PG-", "PA"),
        "ScheduledProcedureStepSequence": [
            {
                "Modality": "CT",
                "ScheduledStationAETitle": "CT01",
                "ScheduledProcedureStepStartDate": "20251014",
                "ScheduledProcedureStepStartTime": "093000",
                "ScheduledProcedureStepID": "SPS1",
            }
        ],
    }


def by_patient(patient: str) -> Dataset:
    query = Dataset()
    query.PatientID = patient
    query.AccessionNumber = ""
    return query


@dataclass
class Services:
    database_url: str
    nats_url: str
    http_port: int
    dicom_port: int
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]


@pytest.fixture
def services(postgres: Postgres, nats_server: NatsServer, tmp_path: Path) -> Iterator[Services]:
    """The API and the SCP as `make run` starts them, on a fresh database of the session's PostgreSQL.
    Their logs go to files: a pipe nobody reads would block a service once full."""
    database_url = postgres.new_database()
    upgrade(database_url)
    http_port, dicom_port = free_port(), free_port()
    env = service_env(
        MWL_DATABASE_URL=database_url,
        MWL_NATS_URL=nats_server.url,
        MWL_HTTP_PORT=str(http_port),
        MWL_DICOM_PORT=str(dicom_port),
        MWL_SCP_HEALTH_PORT="0",
        MWL_WORKLISTS_HOUSEKEEPING_INTERVAL="1",
    )
    logs = [tmp_path / f"{name}.log" for name in ("api", "scp")]
    processes = []
    for name, log in zip(("api", "scp"), logs, strict=True):
        with log.open("wb") as output:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"], env=env, stdout=output, stderr=output
                )
            )
    try:
        wait_for_port(http_port, timeout=30)
        wait_for_port(dicom_port, timeout=30)
        yield Services(database_url, nats_server.url, http_port, dicom_port, processes, logs)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def published(database_url: str, nats_url: str) -> list[tuple[str, dict[str, Any]]]:
    """The stream's events once the API's relay has emptied the outbox."""
    db = Store(database_url)
    try:
        await eventually(db.outbox_empty, within=10, what="the outbox relayed after the outage")
    finally:
        await db.close()
    return await stream_events(nats_url)


def both(traffic: Traffic) -> tuple[list[Outcome], list[Outcome]]:
    return traffic.creates, traffic.finds


def first_success_after(outcomes: list[Outcome], moment: float) -> Outcome:
    after = [o for o in outcomes if o.ok and o.ended >= moment]
    assert after, "no success after PostgreSQL came back"
    return min(after, key=lambda o: o.ended)


@pytest.mark.timeout(90)
def test_postgres_restart_fails_cleanly_and_recovers_within_5s(
    postgres: Postgres, services: Services
) -> None:
    traffic = Traffic(services.http_port, services.dicom_port)
    assert traffic.create()[0] == "ok"  # FIRST_PATIENT, whom every C-FIND asks for
    with traffic:
        deadline = time.monotonic() + 20
        while not (any(o.ok for o in traffic.creates) and any(o.ok for o in traffic.finds)):
            assert time.monotonic() < deadline, "no successful create and C-FIND before the outage"
            time.sleep(0.05)
        stopping = time.monotonic()
        postgres.pause()
        stopped = time.monotonic()  # from here until `resuming`, nothing can reach the store
        try:
            time.sleep(OUTAGE_SECONDS)
        finally:
            # Recovery is timed from here, before PostgreSQL accepts connections again: an upper bound.
            resuming = time.monotonic()
            postgres.resume()
        back = time.monotonic()
        deadline = back + RECOVERY_SECONDS + PROMPT_SECONDS
        while not all(any(o.ok and o.started >= back for o in outcomes) for outcomes in both(traffic)):
            assert time.monotonic() < deadline, (
                f"not serving again after PostgreSQL came back: {traffic.creates[-2:]} {traffic.finds[-2:]}"
            )
            time.sleep(0.05)
        time.sleep(1.0)  # some traffic after the recovery, to see that it holds

    for outcomes in (traffic.creates, traffic.finds):
        slow = [o for o in outcomes if o.ended - o.started > PROMPT_SECONDS]
        assert not slow, f"requests left hanging: {slow[:3]}"
    bad = [o for o in traffic.creates + traffic.finds if o.kind.startswith("bad")]
    assert not bad, f"unclean failures: {bad[:3]}"
    # Requests made wholly while PostgreSQL was stopped.
    during = [o for o in traffic.creates if stopped <= o.started and o.ended < resuming]
    assert during and all(o.kind == "503" for o in during), [o.detail for o in during][:3]
    during = [o for o in traffic.finds if stopped <= o.started and o.ended < resuming]
    assert during and all(o.kind in ("failure-status", "refused") for o in during)
    assert any(o.kind == "failure-status" and "0xc001" in o.detail for o in during)

    create_back = first_success_after(traffic.creates, resuming).ended - resuming
    find_back = first_success_after(traffic.finds, resuming).ended - resuming
    assert create_back < RECOVERY_SECONDS and find_back < RECOVERY_SECONDS
    for outcomes in both(traffic):  # once back, it stays back
        first = first_success_after(outcomes, resuming)
        assert all(o.ok for o in outcomes if o.started >= first.ended), "failures after the recovery"
    for process in services.processes:
        assert process.poll() is None, "a service died during the outage"

    # Every create answered 200 is stored exactly once; a 503 stored nothing (or, if its commit had just
    # gone through when the connection dropped, once).
    engine = create_engine(sync_url(services.database_url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(WorklistItem.id, WorklistItem.patient_id)).all()
            stored = Counter(patient for _, patient in rows)
            stored_ids = [item_id for item_id, _ in rows]
    finally:
        engine.dispose()
    accepted = {patient for patient, status in traffic.patients.items() if status == 200}
    assert accepted and accepted <= set(stored)
    assert max(stored.values()) == 1
    assert set(stored) <= set(traffic.patients)
    # And each stored item's worklist.created reached NATS once (written with it, relayed after the outage).
    events = asyncio.run(published(services.database_url, services.nats_url))
    assert Counter(payload["worklist_id"] for _, payload in events) == Counter(stored_ids)
    # The outage is logged, without the patient data of the statements that failed.
    api_log, scp_log = (log.read_text(errors="replace") for log in services.logs)
    assert "database unavailable during POST /worklists/create" in api_log
    assert "worklist store unavailable" in scp_log
    for log in (api_log, scp_log):
        assert "Restart^Patient" not in log and "PG-0" not in log and "Traceback" not in log
    print(  # the figures the issue asks for, shown with pytest -s
        f"PostgreSQL down {back - stopping:.1f} s (resumed in {back - resuming:.2f} s); "
        f"creates {len(traffic.creates)} "
        f"({sum(not o.ok for o in traffic.creates)} refused with 503), C-FINDs {len(traffic.finds)} "
        f"({sum(not o.ok for o in traffic.finds)} failed); serving again {create_back:.2f} s (REST) and "
        f"{find_back:.2f} s (C-FIND) after its start was asked for; slowest request during the outage "
        f"{max(o.ended - o.started for o in traffic.creates + traffic.finds):.2f} s"
    )
