"""The AE access policy from the outside, as a hospital configures it for production: only listed modalities
query, each from its own host, calling our AE title. Real associations over loopback, a caller's address
chosen by binding to 127.0.0.2 (the whole 127.0.0.0/8 is loopback on Linux)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from services.scp.server import ScpServer
from shared.migrate import upgrade
from tests.support.dicom_clients import MWL_FIND, VERIFICATION, running_scp, worklist
from tests.support.dicom_clients import add_items as store_items
from tests.support.servers import NatsServer

MODALITY_HOST = "127.0.0.1"
OTHER_HOST = "127.0.0.2"
# A-ASSOCIATE-RJ as PS3.8 9.3.4 defines it: rejected-permanent (1) by the DICOM UL service-user (1).
REJECTED_PERMANENT, SERVICE_USER = 0x01, 0x01
CALLING_AET_NOT_RECOGNIZED, CALLED_AET_NOT_RECOGNIZED = 0x03, 0x07
PRODUCTION = {
    "DicomAlwaysAllowFindWorklist": False,
    "DicomCheckModalityHost": True,
    "DicomCheckCalledAet": True,
    "DicomModalities": {
        "ct": ["CT01", MODALITY_HOST, 104],
        "mr": {"AET": "MR01", "Host": "localhost", "Port": 104},  # a name, resolved at start-up
    },
}


@dataclass
class Env:
    database_url: str
    nats_url: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("scp-access")
    url = f"sqlite:///{folder / 'worklists.db'}"
    upgrade(url)
    store_items(url, [worklist(name="Access^Amy", patient_id="ACC-P1", accession="ACCESS1")])
    nats = NatsServer(folder / "jetstream")
    nats.start()
    try:
        yield Env(url, nats.url)
    finally:
        nats.stop()


@pytest.fixture(scope="module")
def production(env: Env) -> Iterator[ScpServer]:
    with running_scp(env.database_url, env.nats_url, **PRODUCTION) as server:
        yield server


def associate(port: int, *, aet: str, source: str = MODALITY_HOST, called: str = "ORTHANC") -> Association:
    ae = AE(ae_title=aet)
    ae.add_requested_context(MWL_FIND)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title=called, bind_address=(source, 0))


def rejection(assoc: Association) -> tuple[int, int, int]:
    """(result, source, diagnostic) of the A-ASSOCIATE-RJ the SCP sent."""
    assert assoc.is_rejected, "the association was not rejected"
    answer = assoc.acceptor.primitive
    return (answer.result, answer.result_source, answer.diagnostic)


def find_statuses(assoc: Association) -> list[int]:
    query = Dataset()
    query.PatientID = ""
    query.AccessionNumber = ""
    try:
        return [int(status.Status) for status, _ in assoc.send_c_find(query, MWL_FIND) if status]
    finally:
        assoc.release()


def refused_count(server: ScpServer, reason: str) -> float:
    value = server.metrics.registry.get_sample_value("mwl_associations_refused_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize("aet", ["CT01", "ct01 ", "MR01"])
def test_listed_modality_from_its_host_queries(production: ScpServer, aet: str) -> None:
    assoc = associate(production.port, aet=aet)
    assert assoc.is_established
    assert find_statuses(assoc) == [0xFF00, 0x0000]


def test_listed_ae_title_from_another_host_is_rejected(
    production: ScpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.scp")
    before = refused_count(production, "calling_aet_host")
    for aet in ("CT01", "MR01"):  # an address, and a host name resolved to the loopback addresses
        assoc = associate(production.port, aet=aet, source=OTHER_HOST)
        assert rejection(assoc) == (REJECTED_PERMANENT, SERVICE_USER, CALLING_AET_NOT_RECOGNIZED)
    assert refused_count(production, "calling_aet_host") == before + 2
    assert f"association from 'CT01' at {OTHER_HOST} rejected" in caplog.text


def test_unlisted_ae_title_may_echo_but_not_query(production: ScpServer) -> None:
    for source in (MODALITY_HOST, OTHER_HOST):
        assoc = associate(production.port, aet="STRANGER", source=source)
        assert assoc.is_established
        echo = assoc.send_c_echo()
        assert echo and int(echo.Status) == 0x0000
        assert find_statuses(assoc) == [0xC003]  # refused, and no answer carries an item


def test_wrong_called_ae_title_is_rejected(production: ScpServer) -> None:
    assoc = associate(production.port, aet="CT01", called="SOMEONE_ELSE")
    assert rejection(assoc) == (REJECTED_PERMANENT, SERVICE_USER, CALLED_AET_NOT_RECOGNIZED)
    accepted = associate(production.port, aet="CT01", called="orthanc")  # compared as Orthanc does
    assert accepted.is_established
    accepted.release()


@pytest.mark.parametrize(
    ("options", "aet", "source"),
    [
        # Each check on its own: with it off, the same caller gets through.
        ({**PRODUCTION, "DicomCheckModalityHost": False}, "CT01", OTHER_HOST),
        ({**PRODUCTION, "DicomAlwaysAllowFindWorklist": True}, "STRANGER", OTHER_HOST),
        ({}, "ANYONE", OTHER_HOST),  # the quick start's defaults: open
    ],
    ids=["host-not-checked", "find-always-allowed", "defaults"],
)
def test_each_check_can_be_turned_off(env: Env, options: dict[str, Any], aet: str, source: str) -> None:
    with running_scp(env.database_url, env.nats_url, **options) as scp:
        assoc = associate(scp.port, aet=aet, source=source)
        assert assoc.is_established
        assert find_statuses(assoc) == [0xFF00, 0x0000]
