"""Streaming answers: a long worklist reaches the modality whole and in order, and a modality that vanishes
in the middle of it frees its association at once instead of leaving the SCP encoding answers for nobody."""

from __future__ import annotations

import time
from collections.abc import Iterator
from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from pynetdicom import AE
from pynetdicom.dsutils import decode, encode

from services.scp.server import ScpServer
from shared.migrate import upgrade
from tests.support import raw_dimse as rd
from tests.support.dicom_clients import add_items, running_scp, worklist
from tests.support.servers import NatsServer

ITEMS = 600


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScpServer]:
    folder = tmp_path_factory.mktemp("scp-streaming")
    url = f"sqlite:///{folder / 'worklists.db'}"
    upgrade(url)
    add_items(url, [worklist(patient_id=f"S{n:04d}", accession=f"ACC{n:04d}") for n in range(ITEMS)])
    nats = NatsServer(folder / "jetstream")
    nats.start()
    try:
        with running_scp(url, nats.url) as server:
            yield server
    finally:
        nats.stop()


def everything(implicit: bool) -> bytes:
    query = Dataset()
    query.AccessionNumber = ""
    query.PatientID = ""
    query.ScheduledProcedureStepSequence = [Dataset()]
    data = encode(query, implicit, True)
    assert data is not None
    return data


@pytest.mark.parametrize(
    ("syntax", "max_length"),
    [(rd.IMPLICIT_VR_LE, 65536), (rd.EXPLICIT_VR_LE, 65536), (rd.IMPLICIT_VR_LE, 256)],
)
def test_every_answer_arrives_whole_in_the_negotiated_syntax(
    scp: ScpServer, syntax: str, max_length: int
) -> None:
    # 256 bytes: every answer is split over several PDUs, none longer than the modality accepts.
    implicit = syntax == rd.IMPLICIT_VR_LE
    with rd.RawClient(scp.port, timeout=30) as client:
        request = rd.associate_rq(contexts=[(1, rd.MWL_FIND, [syntax])], max_length=max_length)
        client.associate(request)
        assert client.accepted == {1: syntax}
        result = client.find(everything(implicit), message_id=5)
        client.release()
    assert result.statuses == [0xFF00] * ITEMS + [0x0000]
    accessions = [decode(BytesIO(data), implicit, True).AccessionNumber for data in result.identifiers]
    assert sorted(accessions) == [f"ACC{n:04d}" for n in range(ITEMS)]


def test_a_modality_gone_mid_answer_frees_its_association(scp: ScpServer) -> None:
    with rd.RawClient(scp.port, timeout=30) as client:
        client.associate()
        client.send(rd.message(1, rd.c_find_rq(3), everything(True), client.peer_max_pdu))
        assert client.read_pdu() is not None  # the first answer is on its way
        client.abort_connection()
    deadline = time.monotonic() + 5
    while scp.active_associations:
        assert time.monotonic() < deadline, "the SCP kept answering a modality that was gone"
        time.sleep(0.05)


@pytest.mark.parametrize("syntax", [DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_a_modality_proposing_only_deflated_or_big_endian_is_answered_in_it(
    scp: ScpServer, syntax: str
) -> None:
    ae = AE(ae_title="OLDCT")
    ae.add_requested_context(rd.MWL_FIND, [syntax])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="ORTHANC")
    assert assoc.is_established
    try:
        assert assoc.accepted_contexts[0].transfer_syntax[0] == syntax
        query = Dataset()
        query.PatientID = "S0007"
        query.AccessionNumber = ""
        responses = list(assoc.send_c_find(query, rd.MWL_FIND))
    finally:
        assoc.release()
    assert [int(status.Status) for status, _ in responses] == [0xFF00, 0x0000]
    assert responses[0][1].AccessionNumber == "ACC0007"
