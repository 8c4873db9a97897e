"""C-CANCEL: a modality that stops a long worklist query gets 0xFE00 promptly, not the rest of the list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom import Dataset

from shared.migrate import upgrade
from tests.support.dicom_clients import add_items, c_find, dcmtk, findscu, needs_dcmtk, running_scp, worklist
from tests.support.servers import NatsServer

ITEMS = 300


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def port(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("scp-cancel")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'worklists.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    upgrade(url)
    add_items(url, [worklist(patient_id=f"C{n:04d}", accession=f"ACC{n:04d}") for n in range(ITEMS)])
    nats = NatsServer(folder / "jetstream")
    nats.start()
    try:
        with running_scp(url, nats.url) as server:
            yield server.port
    finally:
        nats.stop()


def everything() -> Dataset:
    query = Dataset()
    query.PatientID = ""
    query.AccessionNumber = ""
    step = Dataset()
    step.Modality = ""
    query.ScheduledProcedureStepSequence = [step]
    return query


def test_pynetdicom_cancel_ends_with_fe00(port: int) -> None:
    answers = c_find(port, everything(), cancel_after=1)
    statuses = [a.status for a in answers]
    assert statuses[-1] == 0xFE00
    assert answers[-1].identifier is None
    assert set(statuses[:-1]) == {0xFF00}
    # Stopped promptly: answers already on the wire may arrive, the rest of the 300 does not.
    assert len(statuses) < ITEMS / 2


def test_uncancelled_query_gets_everything(port: int) -> None:
    statuses = [a.status for a in c_find(port, everything())]
    assert statuses == [0xFF00] * ITEMS + [0x0000]


@dcmtk
@needs_dcmtk
def test_findscu_cancel(port: int) -> None:
    result = findscu(port, ["AccessionNumber"], extra=["--cancel", "2"])
    assert result.returncode == 0, result.output
    assert result.final == "Cancel: MatchingTerminatedDueToCancelRequest", result.output
    assert len(result.answers) < ITEMS / 2
