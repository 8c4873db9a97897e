"""The SCP follows the store: created items show at once (NATS events warm its cache within 1 s), deleted ones
are never answered, it serves while NATS is down, and a broken store gives a failure status, not a crash."""

from __future__ import annotations

import time
from collections.abc import Callable

from pydicom import Dataset
from sqlalchemy import create_engine, text

from shared.db import sync_url
from tests.support.dicom_clients import (
    EventRelay,
    add_items,
    c_echo,
    c_find,
    remove_items,
    replace_item_sync,
    running_scp,
    worklist,
)
from tests.support.servers import NatsServer


def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until `check` held; fails after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def by_patient(patient_id: str) -> Dataset:
    query = Dataset()
    query.PatientID = patient_id
    query.AccessionNumber = ""
    step = Dataset()
    step.Modality = ""
    query.ScheduledProcedureStepSequence = [step]
    return query


def answered(port: int, patient_id: str) -> list[str]:
    answers = c_find(port, by_patient(patient_id))
    assert answers[-1].status == 0x0000
    return [str(a.identifier.AccessionNumber) for a in answers[:-1] if a.identifier is not None]


def test_created_item_is_answered_within_a_second_through_events(
    database_url: str, nats_server: NatsServer
) -> None:
    with running_scp(database_url, nats_server.url) as scp, EventRelay(database_url, nats_server.url):
        eventually(lambda: scp.listener.is_listening, 10, "SCP listening to NATS")
        created = time.monotonic()
        [item_id] = add_items(database_url, [worklist(patient_id="NEW1", accession="ACC-NEW")])
        # The worklist.created event reaches the SCP, which loads the item into its cache.
        eventually(lambda: item_id in scp.cache, 1.0, "the created item in the SCP cache")
        assert answered(scp.port, "NEW1") == ["ACC-NEW"]
        assert time.monotonic() - created < 1.5


def test_deleted_item_is_not_answered(database_url: str, nats_server: NatsServer) -> None:
    [item_id] = add_items(database_url, [worklist(patient_id="DEL1", accession="ACC-DEL")])
    with running_scp(database_url, nats_server.url) as scp, EventRelay(database_url, nats_server.url):
        eventually(lambda: scp.listener.is_listening, 10, "SCP listening to NATS")
        assert answered(scp.port, "DEL1") == ["ACC-DEL"]
        assert item_id in scp.cache
        remove_items(database_url, [item_id])
        # Never answered again, even before the event arrives: every lookup reads the store's index.
        assert answered(scp.port, "DEL1") == []
        eventually(lambda: item_id not in scp.cache, 1.0, "the deleted item leaving the SCP cache")


def test_updated_item_is_answered_with_its_new_content(database_url: str, nats_server: NatsServer) -> None:
    [item_id] = add_items(database_url, [worklist(patient_id="UPD1", accession="ACC-OLD")])
    with running_scp(database_url, nats_server.url) as scp:
        assert answered(scp.port, "UPD1") == ["ACC-OLD"]
        replace_item_sync(database_url, item_id, worklist(patient_id="UPD1", accession="ACC-NEW"))
        # No event relay runs here: the cached copy is stale, and the version check must catch it.
        assert answered(scp.port, "UPD1") == ["ACC-NEW"]


def test_serves_while_nats_is_down_and_connects_when_it_comes_up(
    database_url: str, nats_server: NatsServer
) -> None:
    nats_server.stop()
    with running_scp(database_url, nats_server.url) as scp:
        add_items(database_url, [worklist(patient_id="OFF1", accession="ACC-OFF")])
        assert answered(scp.port, "OFF1") == ["ACC-OFF"]
        nats_server.start()
        eventually(lambda: scp.listener.is_listening, 10, "SCP listening to NATS")


def test_store_failure_is_a_c001_status_and_the_scp_lives_on(
    database_url: str, nats_server: NatsServer
) -> None:
    add_items(database_url, [worklist(patient_id="BRK1")])
    with running_scp(database_url, nats_server.url) as scp:
        assert len(answered(scp.port, "BRK1")) == 1
        engine = create_engine(sync_url(database_url))
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE scheduled_steps"))
        engine.dispose()
        [failure] = c_find(scp.port, by_patient("BRK1"))
        assert failure.status == 0xC001
        assert "unavailable" in failure.status_dataset.ErrorComment
        assert failure.identifier is None
        assert c_echo(scp.port) == 0x0000
