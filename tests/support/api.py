"""Helpers for API tests: a JetStream reader of the events stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
from nats.js.api import DeliverPolicy

from shared.events import STREAM


async def read_events(nats_url: str, count: int, within: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
    """Replay the events stream from its start and return the first `count` events (subject, payload)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + within
        while True:  # the stream is created by the service once it connects
            try:
                await js.stream_info(STREAM)
                break
            except Exception:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        sub = await js.subscribe(">", stream=STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        events = []
        while len(events) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                break
            events.append((msg.subject, json.loads(msg.data)))
        return events
    finally:
        await nc.close()
