"""Real DICOM clients for the SCP tests (DCMTK findscu, a pynetdicom SCU), an in-process SCP, item helpers."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE

from services.scp.server import ScpServer
from shared.bus import Bus, OutboxRelay
from shared.config import Settings, load_settings
from shared.db import create_async_db_engine, session_factory
from shared.store import add_item, remove_item, replace_item

FINDSCU = "/usr/bin/findscu"
WLMSCPFS = "/usr/bin/wlmscpfs"
MWL_FIND = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"

dcmtk = pytest.mark.dcmtk
# CI installs dcmtk and fails when these tests are skipped; locally they skip only when it is missing.
needs_dcmtk = pytest.mark.skipif(
    shutil.which(FINDSCU) is None, reason="dcmtk is not installed (/usr/bin/findscu missing)"
)


# --------------------------------------------------------------------------------------------------------
# DCMTK findscu


@dataclass
class FindscuResult:
    returncode: int
    answers: list[Dataset]
    output: str

    @property
    def final(self) -> str:
        """findscu's words for the final status, e.g. "Success" (empty when none arrived)."""
        found = re.findall(r"Received Final Find Response \(([^)]*)\)", self.output)
        return found[-1] if found else ""

    @property
    def rejected(self) -> bool:
        return "Association Rejected" in self.output


def findscu(
    port: int,
    keys: Sequence[str | bytes],
    *,
    aet: str = "FINDSCU",
    aec: str = "ORTHANC",
    extra: Sequence[str] = (),
    timeout: float = 60,
) -> FindscuResult:
    """Run `findscu -W` with `-k` keys (bytes keys carry non-UTF-8 text); answers read from its -X files."""
    with tempfile.TemporaryDirectory(prefix="findscu-") as out:
        args: list[str | bytes] = [FINDSCU, "-W", "-v", "-X", "-od", out, "-aet", aet, "-aec", aec, *extra]
        for key in keys:
            args += ["-k", key]
        args += ["127.0.0.1", str(port)]
        # DCMTK reads TCP_NODELAY from the environment; with Nagle on, each query waits tens of ms.
        env = {**os.environ, "TCP_NODELAY": "1"}
        done = subprocess.run(args, capture_output=True, timeout=timeout, check=False, env=env)
        answers: list[Dataset] = [pydicom.dcmread(path) for path in sorted(Path(out).glob("rsp*.dcm"))]
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    return FindscuResult(done.returncode, answers, output)


# --------------------------------------------------------------------------------------------------------
# pynetdicom SCU


@dataclass
class Answer:
    status: int
    identifier: Dataset | None
    status_dataset: Dataset


def _scu(aet: str) -> AE:
    ae = AE(ae_title=aet)
    ae.add_requested_context(MWL_FIND)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def c_find(
    port: int, query: Dataset, *, aet: str = "PYSCU", aec: str = "ORTHANC", cancel_after: int | None = None
) -> list[Answer]:
    """Every response of one C-FIND; with cancel_after, a C-CANCEL is sent after that many answers."""
    assoc = _scu(aet).associate("127.0.0.1", port, ae_title=aec)
    if not assoc.is_established:
        raise ConnectionError("association rejected or aborted")
    answers: list[Answer] = []
    try:
        for status, identifier in assoc.send_c_find(query, MWL_FIND, msg_id=7):
            if not status:  # no response within the DIMSE timeout
                raise TimeoutError("no C-FIND response")
            answers.append(Answer(int(status.Status), identifier, status))
            if cancel_after is not None and len(answers) == cancel_after:
                assoc.send_c_cancel(7, query_model=MWL_FIND)
    finally:
        assoc.release()
    return answers


def c_echo(port: int, *, aet: str = "PYSCU", aec: str = "ORTHANC") -> int:
    assoc = _scu(aet).associate("127.0.0.1", port, ae_title=aec)
    if not assoc.is_established:
        raise ConnectionError("association rejected or aborted")
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


# --------------------------------------------------------------------------------------------------------
# Worklist items


def worklist(
    *,
    name: str | None = "Doe^John",
    patient_id: str = "P1",
    accession: str = "ACC1",
    steps: Sequence[dict[str, Any]] = ({},),
    charset: str | None = "ISO_IR 192",
    **top: Any,
) -> dict[str, Any]:
    """A worklist item as DICOM JSON; each step dict overrides SPS keywords (defaults: CT at CT01)."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    if name is not None:
        ds.PatientName = name
    ds.PatientID = patient_id
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = top.pop("StudyInstanceUID", f"1.2.826.0.1.3680043.10.1.{uuid.uuid4().int % 10**12}")
    ds.RequestedProcedureID = top.pop("RequestedProcedureID", "RP1")
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    sequence = []
    for index, overrides in enumerate(steps):
        step = Dataset()
        step.Modality = "CT"
        step.ScheduledStationAETitle = "CT01"
        step.ScheduledProcedureStepStartDate = "20251014"
        step.ScheduledProcedureStepStartTime = "090000"
        step.ScheduledProcedureStepID = f"SPS{index + 1}"
        step.ScheduledProcedureStepDescription = "Scheduled step"
        for keyword, value in overrides.items():
            setattr(step, keyword, value)
        sequence.append(step)
    if steps:
        ds.ScheduledProcedureStepSequence = sequence
    return ds.to_json_dict()


async def add_items_async(database_url: str, items: Sequence[dict[str, Any]]) -> list[str]:
    """Store items through shared.store (scheduled_steps rows and outbox events included)."""
    engine = create_async_db_engine(database_url)
    ids = [str(uuid.uuid4()) for _ in items]
    try:
        async with session_factory(engine)() as session, session.begin():
            for item_id, item in zip(ids, items, strict=True):
                await add_item(session, item_id, item, source="rest")
    finally:
        await engine.dispose()
    return ids


async def remove_items_async(database_url: str, item_ids: Sequence[str]) -> None:
    engine = create_async_db_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            for item_id in item_ids:
                await remove_item(session, item_id, reason="rest")
    finally:
        await engine.dispose()


async def replace_item_async(database_url: str, item_id: str, item: dict[str, Any]) -> None:
    engine = create_async_db_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await replace_item(session, item_id, item)
    finally:
        await engine.dispose()


def add_items(database_url: str, items: Sequence[dict[str, Any]]) -> list[str]:
    return asyncio.run(add_items_async(database_url, items))


def remove_items(database_url: str, item_ids: Sequence[str]) -> None:
    asyncio.run(remove_items_async(database_url, item_ids))


def replace_item_sync(database_url: str, item_id: str, item: dict[str, Any]) -> None:
    asyncio.run(replace_item_async(database_url, item_id, item))


# --------------------------------------------------------------------------------------------------------
# Servers


def scp_settings(database_url: str, nats_url: str, **options: Any) -> Settings:
    # No health port unless a test asks for one: 8043 may be taken, and 0 there means "not served".
    overrides: dict[str, Any] = {
        "DatabaseUrl": database_url,
        "NatsUrl": nats_url,
        "DicomPort": 0,
        "ScpHealthPort": 0,
    }
    overrides.update(options)
    return load_settings(environ={}, overrides=overrides)


@contextmanager
def running_scp(database_url: str, nats_url: str, **options: Any) -> Iterator[ScpServer]:
    """An in-process SCP on a free loopback port (DicomPort 0) with these Orthanc-style options."""
    server = ScpServer(scp_settings(database_url, nats_url, **options)).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class EventRelay:
    """The API's outbox relay (shared.bus.OutboxRelay) on a loop of its own: publishes stored changes."""

    database_url: str
    nats_url: str
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> EventRelay:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            with suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        engine = create_async_db_engine(self.database_url)
        bus = Bus(self.nats_url, "test-relay")
        bus.start()
        relay = OutboxRelay(session_factory(engine), bus, poll_interval=0.05)
        task = asyncio.create_task(relay.run())
        await asyncio.wait_for(bus.connected.wait(), 10)
        self._ready.set()
        await self._stop.wait()
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await bus.close()
        await engine.dispose()
