"""study.stable, reported through REST, deletes the study's worklist items — even items created after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.config import Settings
from tests.integration.conftest import ApiFactory
from tests.support.housekeeper import (
    Store,
    consumer_idle,
    eventually,
    more_passes,
    publish,
    running,
    stream_events,
    tags,
)
from tests.support.servers import NatsServer

Client = TestClient[Any, Any]
STUDY = "1.2.826.0.1.3680043.8.498.10"
OTHER = "1.2.826.0.1.3680043.8.498.20"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    yield store
    await store.close()


def settings(settings_factory: Any, **worklists: Any) -> Settings:
    made: Settings = settings_factory(Worklists={"HousekeepingInterval": 0.2, **worklists})
    return made


async def test_a_stable_study_deletes_its_items_and_no_others(
    settings_factory: Any, api_factory: ApiFactory, db: Store, nats_server: NatsServer
) -> None:
    api = await api_factory()
    await db.add("first", StudyInstanceUID=STUDY)
    await db.add("second", StudyInstanceUID=STUDY, AccessionNumber="A2")
    await db.add("other-study", StudyInstanceUID=OTHER)
    await db.add("no-study", StudyInstanceUID=None)
    await db.add("empty-study", StudyInstanceUID="")

    async with running(settings(settings_factory)):
        response = await api.post(
            "/studies/stable", json={"StudyInstanceUID": STUDY, "AccessionNumber": "A1"}
        )
        assert response.status == 202
        event_id = (await response.json())["EventID"]
        await eventually(lambda: db.ids_are({"other-study", "no-study", "empty-study"}))
        await eventually(db.outbox_empty)

    events = await stream_events(nats_server.url)
    stable = [p for s, p in events if s == "study.stable"]
    assert [p["event_id"] for p in stable] == [event_id]
    assert stable[0]["StudyInstanceUID"] == STUDY and stable[0]["source"] == "rest"
    deleted = {p["worklist_id"]: p["reason"] for s, p in events if s == "worklist.deleted"}
    assert deleted == {"first": "study-stable", "second": "study-stable"}


async def test_an_early_study_stable_deletes_the_item_as_soon_as_it_appears(
    settings_factory: Any, api_factory: ApiFactory, db: Store, nats_server: NatsServer
) -> None:
    # A long interval: the deletion must follow the item's creation, not wait for a periodic pass.
    hk_settings = settings(settings_factory, HousekeepingInterval=60)
    api = await api_factory()
    async with running(hk_settings):
        assert (await api.post("/studies/stable", json={"StudyInstanceUID": STUDY})).status == 202
        await eventually(lambda: consumer_idle(nats_server.url), what="study.stable handled")

        response = await api.post("/worklists/create", json={"Tags": tags(StudyInstanceUID=STUDY)})
        assert response.status == 200
        late = (await response.json())["ID"]
        kept = (
            await (await api.post("/worklists/create", json={"Tags": tags(StudyInstanceUID=OTHER)})).json()
        )["ID"]
        await eventually(lambda: db.ids_are({kept}), within=5, what="late item deleted")
        await eventually(db.outbox_empty)

    deleted = [p for s, p in await stream_events(nats_server.url) if s == "worklist.deleted"]
    assert [(p["worklist_id"], p["reason"]) for p in deleted] == [(late, "study-stable")]


async def test_with_delete_on_stable_study_off_items_stay(
    settings_factory: Any, api_factory: ApiFactory, db: Store, nats_server: NatsServer
) -> None:
    api = await api_factory()
    await db.add("kept", StudyInstanceUID=STUDY)
    async with running(settings(settings_factory, DeleteWorklistsOnStableStudy=False)) as housekeeper:
        assert (await api.post("/studies/stable", json={"StudyInstanceUID": STUDY})).status == 202
        await eventually(lambda: consumer_idle(nats_server.url), what="study.stable handled")
        await more_passes(housekeeper)
    assert await db.ids() == {"kept"}


async def test_malformed_events_are_dropped_and_the_next_ones_handled(
    settings_factory: Any, db: Store, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    await db.add("empty-study", StudyInstanceUID="")
    await db.add("target", StudyInstanceUID=STUDY)
    async with running(settings(settings_factory)):
        for payload in (
            {"StudyInstanceUID": ""},
            {"StudyInstanceUID": 12},
            {"no": "uid"},
            {"worklist_id": 5},
        ):
            subject = "worklist.created" if "worklist_id" in payload else "study.stable"
            await publish(nats_server.url, subject, payload)
        await publish(nats_server.url, "study.stable", b"not json")
        await publish(nats_server.url, "study.stable", {"StudyInstanceUID": STUDY, "event_id": "e1"})
        await eventually(lambda: db.ids_are({"empty-study"}))
        await eventually(lambda: consumer_idle(nats_server.url), what="every event settled")
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "StudyInstanceUID"),
        ({"StudyInstanceUID": None}, "StudyInstanceUID"),
        ({"StudyInstanceUID": 1.23}, "StudyInstanceUID"),
        ({"StudyInstanceUID": ""}, "StudyInstanceUID"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"StudyInstanceUID": "1.02.3"}, "StudyInstanceUID"),
        ({"StudyInstanceUID": "1." + "2" * 70}, "StudyInstanceUID"),
        ({"StudyInstanceUID": STUDY, "PatientID": 7}, "PatientID"),
        ({"StudyInstanceUID": STUDY, "AccessionNumber": ["A"]}, "AccessionNumber"),
    ],
)
async def test_a_bad_study_stable_request_names_the_field(
    api: Client, body: dict[str, Any], field: str
) -> None:
    response = await api.post("/studies/stable", json=body)
    assert response.status == 400
    error = await response.json()
    assert error["Field"] == field and field in error["Message"]


async def test_a_study_stable_request_that_is_not_json_is_refused(api: Client) -> None:
    response = await api.post("/studies/stable", data=b"StudyInstanceUID=1.2.3")
    assert response.status == 400
