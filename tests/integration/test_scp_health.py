"""The SCP's health port: /readyz follows its PostgreSQL going away and coming back (and stays ready without
NATS, answering from the store), and /metrics moves as modalities query, cancel and get refused."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from services.scp import association
from services.scp.server import MAX_ASSOCIATIONS, ScpServer
from shared.migrate import upgrade
from tests.support import raw_dimse as rd
from tests.support.dicom_clients import (
    VERIFICATION,
    add_items,
    c_echo,
    c_find,
    running_scp,
    scp_settings,
    worklist,
)
from tests.support.servers import NatsServer, Postgres, free_port

ITEMS = 300  # enough that a C-CANCEL after the first answer stops well before the end


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A PostgreSQL of this module's own, which a test may stop without disturbing the others."""
    server = Postgres(tmp_path_factory.mktemp("scp-health-pg") / "data")
    yield server
    server.stop()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def readiness(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(port, "/readyz")
    answer: dict[str, Any] = json.loads(body)
    return status, answer


def eventually(check: Callable[[], bool], *, within: float = 15.0, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {within}s: {what}")
        time.sleep(0.05)


def ready_with(port: int, status: int, check: str, predicate: Callable[[str], bool]) -> Callable[[], bool]:
    def probe() -> bool:
        code, body = readiness(port)
        value = body["checks"].get(check)
        return code == status and body["ready"] is (status == 200) and value is not None and predicate(value)

    return probe


def is_ok(value: str) -> bool:
    return value == "ok"


def metrics(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(port: int, name: str, **labels: str) -> float:
    return metrics(port).get((name, frozenset(labels.items())), 0.0)


class Delta:
    """How much metrics moved since creation: the module's tests share one SCP, in any order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.before = metrics(port)

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return metrics(self.port).get(key, 0.0) - self.before.get(key, 0.0)


def associate(port: int, aet: str) -> Association:
    ae = AE(ae_title=aet)
    ae.add_requested_context(VERIFICATION)
    return ae.associate("127.0.0.1", port, ae_title="ORTHANC")


def by_patient(patient_id: str) -> Dataset:
    query = Dataset()
    query.PatientID = patient_id
    query.AccessionNumber = ""
    return query


def everything() -> Dataset:
    query = by_patient("")
    step = Dataset()
    step.Modality = ""
    query.ScheduledProcedureStepSequence = [step]
    return query


def test_readyz_follows_postgresql_and_only_reports_nats(
    own_postgres: Postgres, nats_server: NatsServer
) -> None:
    database_url = own_postgres.new_database()
    upgrade(database_url)
    health = free_port()
    options = {"ScpHealthPort": health, "Worklists": {"HousekeepingInterval": 0.5}}
    with running_scp(database_url, nats_server.url, **options) as scp:
        assert scp.health_port == health
        eventually(ready_with(health, 200, "nats", is_ok), what="ready with store and NATS")
        assert readiness(health)[1]["checks"]["database"] == "ok"
        assert get(health, "/healthz")[0] == 200

        own_postgres.pause()
        try:
            eventually(
                ready_with(health, 503, "database", lambda v: v.startswith("unavailable")),
                what="not ready while PostgreSQL is stopped",
            )
            assert readiness(health)[1]["checks"]["nats"] == "ok"  # only the failing check is named
            assert get(health, "/healthz")[0] == 200  # alive: a restart would not bring the store back
            [answer] = c_find(scp.port, by_patient("ANY"))
            assert answer.status == 0xC001  # the modality is told, the SCP keeps running
        finally:
            own_postgres.resume()
        eventually(ready_with(health, 200, "database", is_ok), what="ready again with PostgreSQL back")

        # NATS away: still ready (answers come from the store), the check says what is missing.
        nats_server.stop()
        try:
            eventually(
                ready_with(health, 200, "nats", lambda v: v.startswith("degraded")),
                what="ready but degraded without NATS",
            )
            add_items(database_url, [worklist(patient_id="NO-NATS")])
            assert [a.status for a in c_find(scp.port, by_patient("NO-NATS"))] == [0xFF00, 0x0000]
        finally:
            nats_server.start()
        eventually(ready_with(health, 200, "nats", is_ok), what="NATS reported ok again")


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScpServer]:
    """One SCP (SQLite: the counting is the same on both stores) holding ITEMS items, called-AET checked."""
    folder: Path = tmp_path_factory.mktemp("scp-metrics")
    url = f"sqlite:///{folder / 'worklists.db'}"
    upgrade(url)
    add_items(url, [worklist(patient_id=f"M{n:04d}", accession=f"ACC{n:04d}") for n in range(ITEMS)])
    nats = NatsServer(folder / "jetstream")
    nats.start()
    settings = scp_settings(url, nats.url, ScpHealthPort=free_port(), DicomCheckCalledAet=True)
    server = ScpServer(settings).start()
    try:
        yield server
    finally:
        server.stop()
        nats.stop()


def test_metrics_count_cfinds_by_status_with_latency_and_answers(scp: ScpServer) -> None:
    port, health = scp.port, scp.health_port
    assert ("mwl_cfind_requests_total", frozenset({("status", "success")})) in metrics(health)  # 0 at start
    moved = Delta(health)

    assert [a.status for a in c_find(port, by_patient("M0001"))] == [0xFF00, 0x0000]
    assert [a.status for a in c_find(port, by_patient("NOBODY"))] == [0x0000]
    malformed = everything()
    malformed.ScheduledProcedureStepSequence.append(Dataset())
    assert [a.status for a in c_find(port, malformed)] == [0xA900]

    # A final failure is counted as pynetdicom closes the handler, just after it sent the status.
    eventually(
        lambda: moved("mwl_cfind_requests_total", status="identifier_does_not_match") == 1,
        what="the A900 counted",
    )
    assert moved("mwl_cfind_requests_total", status="success") == 2
    assert moved("mwl_cfind_duration_seconds_count") == 3
    assert moved("mwl_cfind_answers_count") == 3
    assert moved("mwl_cfind_answers_sum") == 1
    assert moved("mwl_cfind_answers_bucket", le="0.0") == 2
    assert value(health, "mwl_scp_cache_items") >= 1  # the answered item was loaded into the cache
    assert ("mwl_scp_cache_resync_age_seconds", frozenset()) in metrics(health)


def test_a_cancel_is_counted_once(scp: ScpServer) -> None:
    moved = Delta(scp.health_port)
    answers = c_find(scp.port, everything(), cancel_after=1)
    assert answers[-1].status == 0xFE00
    eventually(lambda: moved("mwl_cfind_cancellations_total") == 1, what="the cancel counted")
    assert moved("mwl_cfind_requests_total", status="cancelled") == 1
    assert moved("mwl_cfind_requests_total", status="success") == 0
    assert moved("mwl_cfind_answers_sum") == len(answers) - 1  # the answers sent before the FE00


def test_each_refused_association_is_counted_once_by_reason(scp: ScpServer) -> None:
    moved = Delta(scp.health_port)

    def refused(reason: str) -> float:
        return moved("mwl_associations_refused_total", reason=reason)

    with pytest.raises(ConnectionError):
        c_echo(scp.port, aec="SOMEONE")  # DicomCheckCalledAet
    assert refused("called_aet") == 1

    # The acceptor's own rejection when every association slot is taken.
    scp.set_maximum_associations(1)
    try:
        held = associate(scp.port, "HOLDER")
        assert held.is_established
        try:
            assert associate(scp.port, "LATE").is_rejected
        finally:
            held.release()
    finally:
        scp.set_maximum_associations(MAX_ASSOCIATIONS)
    assert refused("too_many_associations") == 1
    assert refused("called_aet") == 1
    assert refused("calling_aet_host") == 0 and refused("other") == 0
    assert c_echo(scp.port) == 0x0000  # accepted again once there is room
    assert refused("too_many_associations") == 1


def test_an_ending_association_stops_counting_before_the_modality_sees_it_end(
    scp: ScpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A modality opens its next association the moment the A-RELEASE-RP (or an A-ASSOCIATE-RJ) arrives:
    if the ended one still counted then, 32 modalities querying back to back got "too many associations"."""
    counted_when_sent: dict[bytes, bool] = {}
    send = association.Connection.send

    def recording_send(connection: association.Connection, data: bytes) -> None:
        counted_when_sent[data[:1]] = connection in connection.server._connections
        send(connection, data)

    monkeypatch.setattr(association.Connection, "send", recording_send)
    with rd.RawClient(scp.port, timeout=10) as client:
        client.associate()
        assert client.release() is not None
    with rd.RawClient(scp.port, timeout=10) as client:
        assert client.associate(rd.associate_rq(called="SOMEONE")).type == rd.ASSOCIATE_RJ  # type: ignore[union-attr]
    assert counted_when_sent[bytes([rd.ASSOCIATE_AC])] is True
    assert counted_when_sent[bytes([rd.RELEASE_RP])] is False
    assert counted_when_sent[bytes([rd.ASSOCIATE_RJ])] is False


def test_after_its_last_pdu_the_scp_waits_for_the_modality_to_close(scp: ScpServer) -> None:
    """Sta13 (PS3.8 AE-8, AR-4): the requestor closes the connection. An acceptor closing first made
    pynetdicom's requestor, now and then, report an abort instead of the rejection it had been sent."""
    for request, answer in ((rd.associate_rq(called="SOMEONE"), rd.ASSOCIATE_RJ), (None, rd.RELEASE_RP)):
        with rd.RawClient(scp.port, timeout=10) as client:
            if request is None:
                client.associate()
                assert client.release().type == answer  # type: ignore[union-attr]
            else:
                assert client.associate(request).type == answer  # type: ignore[union-attr]
            client.sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.sock.recv(1)  # no end-of-file: the SCP is waiting for us
