"""Events on NATS: what a dashboard receives, and nothing lost while NATS is down (the outbox)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.test_api_worklists import create, tags
from tests.support.api import read_events
from tests.support.servers import NatsServer

Client = TestClient[Any, Any]


async def test_changes_are_published_with_dashboard_keys_only(api: Client, nats_server: NatsServer) -> None:
    item_id = (await create(api, {"Tags": tags()}))["ID"]
    assert (await api.put(f"/worklists/{item_id}", json={"Tags": tags(AccessionNumber="A2")})).status == 200
    assert (await api.delete(f"/worklists/{item_id}")).status == 200

    events = await read_events(nats_server.url, 3)
    assert [subject for subject, _ in events] == ["worklist.created", "worklist.updated", "worklist.deleted"]
    created, updated, deleted = (payload for _, payload in events)
    assert created["worklist_id"] == item_id
    assert created["Modality"] == "CT"
    assert created["ScheduledStationAETitle"] == "CT01"
    assert created["ScheduledProcedureStepStartDate"] == "20251014"
    assert created["AccessionNumber"] == "A1"
    assert created["source"] == "rest"
    assert updated["AccessionNumber"] == "A2"
    assert deleted["reason"] == "rest"
    assert len({p["event_id"] for _, p in events}) == 3
    for _, payload in events:
        assert "time" in payload
        assert "Doe" not in str(payload) and "P1" not in payload.values()


async def test_no_event_is_lost_while_nats_is_down(api: Client, nats_server: NatsServer) -> None:
    first = (await create(api, {"Tags": tags()}))["ID"]
    assert [s for s, _ in await read_events(nats_server.url, 1)] == ["worklist.created"]

    nats_server.stop()
    ids = [(await create(api, {"Tags": tags(AccessionNumber=f"ACC{i}")}))["ID"] for i in range(5)]
    assert (await api.delete(f"/worklists/{ids[0]}")).status == 200
    nats_server.start()

    events = await read_events(nats_server.url, 7, within=20)
    assert [p["worklist_id"] for _, p in events] == [first, *ids, ids[0]]
    assert [s for s, _ in events][-1] == "worklist.deleted"
