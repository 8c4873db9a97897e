"""Hostile input for the C-FIND SCP: a seeded fuzzer sends 10,000 malformed or adversarial C-FIND identifiers
and command sets, then a few hundred malformed PDUs, and checks that each one gets a proper DICOM answer (a
status, an A-ASSOCIATE-RJ, an A-ABORT or a closed connection) in time, and that a normal query still gets
exactly the right worklist afterwards.

The identifiers travel over a handful of associations (an association costs tens of milliseconds, a C-FIND a
few); each PDU-level case gets a fresh connection. A failure names the case and the seed; MWL_FUZZ_SEED and
MWL_FUZZ_CASES explore other corpora (`MWL_FUZZ_SEED=7 MWL_FUZZ_CASES=50000 pytest tests/integration/...`).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom.dsutils import decode

from services.scp.server import ScpServer
from shared.migrate import upgrade
from tests.support import raw_dimse as rd
from tests.support.dicom_clients import add_items, c_echo, c_find, running_scp, worklist
from tests.support.fuzz_cases import IMPLICIT, Case, IdentifierFuzzer, encode
from tests.support.fuzz_pdus import PduFuzzer, RawCase
from tests.support.servers import NatsServer, free_port, service_env, wait_for_port

pytestmark = [
    # pydicom warns about every odd value it reads in the SCP's threads: thousands, all expected here.
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:pydicom.*"),
]

SEED = int(os.environ.get("MWL_FUZZ_SEED", "20251014"))
IDENTIFIER_CASES = int(os.environ.get("MWL_FUZZ_CASES", "10000"))
RAW_CASES = 300
TIMEOUT = 10.0  # seconds a single answer may take before the case counts as a hang
CHECK_EVERY = 250  # a normal query on each fuzzed association this often

PROPER_FINALS = frozenset({0x0000, 0xA700, 0xA900, 0xFE00}) | frozenset(range(0xC000, 0xD000))
# Final statuses that mean the SCP itself broke: our internal error, pynetdicom's "handler raised" and "answer
# could not be encoded". However hostile the query, it must never provoke them.
BROKEN = frozenset({0xC002, 0xC311, 0xC312})
# What the SCP may send on a connection that a fuzzer drives, before it aborts or closes.
PROPER_PDUS = frozenset({rd.ASSOCIATE_AC, rd.ASSOCIATE_RJ, rd.P_DATA_TF, rd.RELEASE_RP, rd.ABORT})


# --------------------------------------------------------------------------------------------------------
# The store, the SCP and what a normal query must find


def _item(patient_id: str, name: str, steps: list[dict[str, str]]) -> dict[str, object]:
    return worklist(name=name, patient_id=patient_id, accession=f"A-{patient_id}", steps=steps)


ITEMS = [
    _item("P1", "Doe^John", [{}]),
    _item("P2", "Müller^Jürgen", [{"Modality": "MR", "ScheduledStationAETitle": "MR01"}]),
    _item(
        "P3",
        "Иванов^Иван",
        [{}, {"Modality": "US", "ScheduledStationAETitle": "US01", "ScheduledProcedureStepID": "SPS2"}],
    ),
    _item("P4", "Yamada^Tarou=山田^太郎", [{"ScheduledProcedureStepStartDate": "20251015"}]),
]
EXPECTED = {("P1", "Doe^John", "SPS1"), ("P2", "Müller^Jürgen", "SPS1"), ("P3", "Иванов^Иван", "SPS1")}
EXPECTED |= {("P3", "Иванов^Иван", "SPS2"), ("P4", "Yamada^Tarou=山田^太郎", "SPS1")}


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """Only errors are logged: pydicom warns about, and the SCP logs, each of thousands of bad queries
    (and capturing that costs a third of the run). An internal error still shows, with its traceback."""
    loggers = [logging.getLogger(name) for name in ("pydicom", "pynetdicom", "services.scp")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@dataclass(frozen=True)
class Store:
    database_url: str
    nats_url: str
    folder: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("scp-fuzz")
    url = f"sqlite:///{folder / 'worklists.db'}"
    upgrade(url)
    add_items(url, ITEMS)
    nats = NatsServer(folder / "jetstream")
    nats.start()
    try:
        yield Store(url, nats.url, folder)
    finally:
        nats.stop()


@pytest.fixture(scope="module")
def scp(store: Store) -> Iterator[ScpServer]:
    """The SCP in this process: the PDU cases look at its associations."""
    with running_scp(store.database_url, store.nats_url) as server:
        yield server


@pytest.fixture(scope="module")
def scp_process(store: Store) -> Iterator[int]:
    """A second SCP, `python -m services.scp` on the same store, as deployments run one per core: it takes
    its share of the identifiers, so that the corpus uses both cores (each SCP is bound to one by its GIL)."""
    port = free_port()
    env = {"MWL_DATABASE_URL": store.database_url, "MWL_NATS_URL": store.nats_url}
    env |= {"MWL_DICOM_PORT": str(port), "MWL_SCP_HEALTH_PORT": "0"}
    with (store.folder / "scp-process.log").open("wb") as log:  # read it when a case fails there
        process = subprocess.Popen(
            [sys.executable, "-m", "services.scp"], env=service_env(**env), stdout=log, stderr=log
        )
        try:
            wait_for_port(port, timeout=30)
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)


def normal_query() -> Dataset:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.PatientName = ""
    query.PatientID = ""
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = ""
    step.ScheduledProcedureStepID = ""
    query.ScheduledProcedureStepSequence = [step]
    return query


def answers_of(identifiers: list[bytes], implicit: bool = True) -> set[tuple[str, str, str]]:
    found = set()
    for raw in identifiers:
        ds = decode(BytesIO(raw), implicit, True)
        ds.decode()
        found.add(
            (ds.PatientID, str(ds.PatientName), ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID)
        )
    return found


def assert_normal_query_works(client: rd.RawClient, message_id: int, context: int = IMPLICIT) -> None:
    result = client.find(
        encode(normal_query(), implicit=context == IMPLICIT), message_id=message_id, context_id=context
    )
    assert result.statuses == [0xFF00] * len(EXPECTED) + [0x0000], result
    assert answers_of(result.identifiers, context == IMPLICIT) == EXPECTED


def assert_scp_answers_normally(port: int) -> None:
    """A real SCU (pynetdicom) on a new association gets the whole worklist, and C-ECHO succeeds."""
    answers = c_find(port, normal_query())
    assert [a.status for a in answers] == [0xFF00] * len(EXPECTED) + [0x0000]
    found = {
        (
            a.identifier.PatientID,
            str(a.identifier.PatientName),
            a.identifier.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID,
        )
        for a in answers
        if a.identifier is not None
    }
    assert found == EXPECTED
    assert c_echo(port) == 0x0000


# --------------------------------------------------------------------------------------------------------
# Identifiers and command sets, many per association


class FuzzSession:
    """Sends cases over one association at a time, opening a new one when a case ended the last."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: rd.RawClient | None = None
        self.associations = 0
        self.message_id = 1
        self.normal = encode(normal_query(), implicit=True)

    def _client(self) -> rd.RawClient:
        if self.client is None:
            client = rd.RawClient(self.port, timeout=TIMEOUT)
            answer = client.associate()
            assert answer is not None and answer.type == rd.ASSOCIATE_AC, answer
            self.client, self.associations = client, self.associations + 1
        return self.client

    def _drop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _next_id(self) -> int:
        self.message_id = self.message_id % 0xFFFE + 2  # 1 is the id mangled command sets carry
        return self.message_id

    def close(self) -> None:
        if self.client is not None:
            assert self.client.release() is not None
        self._drop()

    def check_normal_query(self) -> None:
        assert_normal_query_works(self._client(), self._next_id())

    def run(self, case: Case) -> str:
        """Send the case, check what came back; the outcome's name, for the tally."""
        client = self._client()
        if case.command is not None:
            return self._run_command(client, case)
        message_id = self._next_id()
        command = rd.c_find_rq(message_id, has_dataset=case.identifier is not None)
        client.send(rd.message(case.context, command, case.identifier, client.peer_max_pdu))
        if case.cancel:
            client.send(rd.p_data([(case.context, 0x03, rd.c_cancel_rq(message_id))]))
        result = client.responses(message_id)
        # The identifier is opaque to the DIMSE layer: however broken, it is the C-FIND's business to answer.
        assert result.ended is None, f"the association ended ({result.ended}) instead of a C-FIND status"
        final = result.final
        assert final is not None and final in PROPER_FINALS, f"final status {final} of {result.statuses}"
        assert final not in BROKEN, f"the SCP broke: final status 0x{final:04X}"
        assert set(result.statuses[:-1]) <= rd.PENDING and len(result.identifiers) == len(result.statuses) - 1
        assert all(result.identifiers), "an empty pending identifier"
        if case.expect is not None:
            assert final in case.expect, f"final status 0x{final:04X}, expected {sorted(case.expect)}"
        if case.cancel:
            assert final in (0x0000, 0xFE00)
        return f"0x{final:04X}"

    def _run_command(self, client: rd.RawClient, case: Case) -> str:
        """A mangled command set, then a normal query: the mangled one may be answered, ignored or abort."""
        normal_id = self._next_id()
        mangled = rd.message(case.context, case.command or b"", case.identifier, client.peer_max_pdu)
        normal = rd.message(IMPLICIT, rd.c_find_rq(normal_id), self.normal, client.peer_max_pdu)
        if not _send(client, (mangled, normal)):  # the SCP aborted and closed before the normal query left
            self._drop()
            return "command-closed"
        result = client.responses(normal_id)
        if result.ended is not None:
            self._drop()
            return f"command-{result.ended}"
        for _, _, status in result.others:
            assert status is not None and status not in BROKEN, f"mangled command answered {result.others}"
        # A stray dataset may have been taken for the normal query's: the one after must be exact.
        if result.statuses != [0xFF00] * len(EXPECTED) + [0x0000]:
            self.check_normal_query()
        return "command-answered" if result.others else "command-ignored"


class Corpus:
    """The cases, handed out one at a time to whichever runner is free; stops once one runner failed."""

    def __init__(self, cases: list[Case]) -> None:
        self._cases = iter(enumerate(cases))
        self._lock = threading.Lock()
        self.failed = False

    def next(self) -> tuple[int, Case] | None:
        with self._lock:
            return None if self.failed else next(self._cases, None)


def fuzz(port: int, corpus: Corpus) -> tuple[Counter[str], int]:
    """Run cases of the corpus over one association at a time, the next when the last was answered; the
    outcome tally and how many associations it took."""
    session = FuzzSession(port)
    outcomes: Counter[str] = Counter()
    while (drawn := corpus.next()) is not None:
        index, case = drawn
        try:
            outcomes[session.run(case)] += 1
            if sum(outcomes.values()) % CHECK_EVERY == 0:
                session.check_normal_query()
        except (AssertionError, OSError) as exc:  # a socket timeout is an OSError: the SCP hung
            corpus.failed = True
            where = f"case {index} ({case.name}) of seed {SEED}, SCP on port {port}"
            raise AssertionError(f"{where}: {exc!r}") from exc
    session.close()
    return outcomes, session.associations


def test_hostile_identifiers_get_a_status_and_the_scp_keeps_answering(
    scp: ScpServer, scp_process: int
) -> None:
    corpus = Corpus(IdentifierFuzzer(random.Random(SEED)).cases(IDENTIFIER_CASES))
    ports = [scp.port, scp_process]
    with ThreadPoolExecutor(len(ports)) as pool:
        results = [run.result() for run in [pool.submit(fuzz, port, corpus) for port in ports]]
    for port in ports:
        assert_scp_answers_normally(port)
    outcomes = sum((tally for tally, _ in results), Counter[str]())
    associations = sum(count for _, count in results)
    # The corpus reached every stage: decoding failures, the matcher (answers and successes), FE00.
    assert outcomes["0xA900"] > IDENTIFIER_CASES // 10, outcomes
    assert outcomes["0x0000"] > IDENTIFIER_CASES // 10, outcomes
    assert outcomes["0xFE00"] + outcomes["0x0000"] > 0
    assert associations < 100, f"{associations} associations for {IDENTIFIER_CASES} cases"


# --------------------------------------------------------------------------------------------------------
# PDUs, one connection each


def _send(client: rd.RawClient, chunks: tuple[bytes, ...]) -> bool:
    """Send the chunks; False when the server had already closed (which is its right)."""
    try:
        for chunk in chunks:
            client.send(chunk)
    except OSError:
        return False
    return True


def run_raw(port: int, case: RawCase) -> list[int]:
    """Play one PDU-level case; the types of the PDUs the server sent back."""
    with rd.RawClient(port, timeout=TIMEOUT) as client:
        received: list[int] = []
        if case.associate_first:
            answer = client.associate()
            assert answer is not None and answer.type == rd.ASSOCIATE_AC, answer
        sent = _send(client, case.chunks)
        if case.mode == "close":
            return received
        if case.mode == "reset":
            client.abort_connection()
            return received
        if case.mode == "eof":
            if sent:
                with suppress(OSError):  # the server may have closed already
                    client.sock.shutdown(socket.SHUT_WR)
            return [pdu.type for pdu in client.read_until_closed()]
        while (pdu := client.read_pdu()) is not None:  # "reply": the server must act without our EOF
            received.append(pdu.type)
            if pdu.type == rd.ASSOCIATE_AC and (rd.ASSOCIATE_AC, rd.RELEASE_RP) in (case.replies or ()):
                _send(client, (rd.RELEASE_RQ_PDU,))  # accepted: release it the orderly way
            if pdu.type in (rd.ABORT, rd.ASSOCIATE_RJ, rd.RELEASE_RP):
                break
        return received


def wait_for_associations_below(server: ScpServer, count: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while server.active_associations >= count:
        assert time.monotonic() < deadline, f"{len(server.ae.active_associations)} associations never end"
        time.sleep(0.005)


def test_hostile_pdus_get_an_answer_or_a_close_and_the_scp_keeps_answering(scp: ScpServer) -> None:
    cases = PduFuzzer(random.Random(SEED)).cases(RAW_CASES)
    for index, case in enumerate(cases):
        wait_for_associations_below(scp, 8)  # never near MaximumAssociations: a refusal would hide a bug
        try:
            received = run_raw(scp.port, case)
            assert set(received) <= PROPER_PDUS, f"the SCP sent PDU types {received}"
            assert case.replies is None or tuple(received) in case.replies, f"the SCP answered {received}"
            if index % 50 == 49:
                with rd.RawClient(scp.port, timeout=TIMEOUT) as client:
                    client.associate()
                    assert_normal_query_works(client, 1)
                    client.release()
        except (AssertionError, OSError) as exc:
            raise AssertionError(f"raw case {index} ({case.name}) of seed {SEED}: {exc!r}") from exc
    assert_scp_answers_normally(scp.port)
    # Nothing hangs on the server's side either: every association the cases opened comes to an end.
    wait_for_associations_below(scp, 1)
