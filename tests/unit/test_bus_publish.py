"""The outbox relay's publishing (shared.bus): acknowledgements awaited together, never at the cost of an
item's event order or of an event whose acknowledgement did not come."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shared import bus
from shared.bus import Bus, _OutboxRow, _publish_in_order


def row(row_id: int, item: str | None) -> _OutboxRow:
    payload: dict[str, Any] = {"event_id": f"e{row_id}"}
    if item is not None:
        payload["worklist_id"] = item
    return _OutboxRow(row_id, f"e{row_id}", "worklist.created", json.dumps(payload))


class FakeJetStream:
    """Acknowledges each event on a later turn of the loop (as NATS does, after a round trip), unless told
    to refuse it or to leave it unanswered; records what was in flight when each event went out."""

    def __init__(self, *, refuse: frozenset[str] = frozenset(), ignore: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.ignore = ignore
        self.sent: list[str] = []
        self.in_flight_at_send: dict[str, set[str]] = {}
        self.futures: dict[str, asyncio.Future[object]] = {}

    async def publish_async(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[object]:
        event_id = headers["Nats-Msg-Id"]
        self.in_flight_at_send[event_id] = {e for e, f in self.futures.items() if not f.done()}
        self.sent.append(event_id)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.futures[event_id] = future
        if event_id in self.refuse:
            asyncio.get_running_loop().call_soon(future.set_exception, RuntimeError("refused"))
        elif event_id not in self.ignore:
            asyncio.get_running_loop().call_soon(future.set_result, object())
        return future


async def test_events_of_different_items_are_sent_before_their_acknowledgements_come() -> None:
    js: Any = FakeJetStream()
    rows = [row(n, f"item-{n}") for n in range(1, 6)]
    assert await _publish_in_order(js, rows) == [1, 2, 3, 4, 5]
    assert js.sent == ["e1", "e2", "e3", "e4", "e5"]
    assert js.in_flight_at_send["e5"] == {"e1", "e2", "e3", "e4"}  # one round trip, not five


async def test_an_items_later_event_waits_for_the_acknowledgement_of_its_earlier_one() -> None:
    js: Any = FakeJetStream()
    rows = [row(1, "a"), row(2, "b"), row(3, "a"), row(4, None), row(5, None)]
    assert await _publish_in_order(js, rows) == [1, 2, 3, 4, 5]
    assert js.sent == ["e1", "e2", "e3", "e4", "e5"]
    assert "e1" not in js.in_flight_at_send["e3"]  # a's created was stored before a's next event left
    assert js.in_flight_at_send["e5"] == {"e3", "e4"}  # events about no item are independent


async def test_a_refused_event_keeps_itself_and_every_later_event_in_the_outbox(
    caplog: pytest.LogCaptureFixture,
) -> None:
    js: Any = FakeJetStream(refuse=frozenset({"e3"}))
    rows = [row(n, f"item-{n}") for n in range(1, 6)]
    assert await _publish_in_order(js, rows) == [1, 2]
    assert "publishing outbox events paused: RuntimeError" in caplog.text


async def test_an_unacknowledged_event_is_kept_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus, "PUBLISH_ACK_TIMEOUT_SECONDS", 0.05)
    js: Any = FakeJetStream(ignore=frozenset({"e2"}))
    rows = [row(n, f"item-{n}") for n in range(1, 4)]
    assert await _publish_in_order(js, rows) == [1]
    assert js.futures["e2"].cancelled()  # nats-py drops its pending entry; a late answer is ignored


class FakeConnection:
    is_connected = True

    def jetstream(self) -> object:
        return object()


async def test_the_jetstream_context_is_kept_for_the_connection() -> None:
    # A context holds the subscription its asynchronous publishes are acknowledged on: one per relay pass
    # would pile subscriptions up on the connection.
    b = Bus("nats://127.0.0.1:1", "test")
    b.nc = FakeConnection()  # type: ignore[assignment]
    assert b.jetstream() is b.jetstream() is not None
