"""The durable JetStream pull consumer shared by the replicas: each event handled by one, at least once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.housekeeper.deletions import InvalidEvent
from services.housekeeper.timing import sleep_or_stop, wait_or_stop
from shared.bus import Bus
from shared.events import STREAM, STUDY_STABLE, WORKLIST_CREATED, WORKLIST_UPDATED, decode

logger = logging.getLogger(__name__)

SUBJECTS = [STUDY_STABLE, WORKLIST_CREATED, WORKLIST_UPDATED]
MAX_RETRY_DELAY = 30.0

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


class EventConsumer:
    """Fetches from one durable consumer: while every replica is down, events wait in the stream (file
    storage); while two run, JetStream hands each message to one of them. The handler must be idempotent: a
    message whose ack was lost is delivered again."""

    def __init__(
        self,
        bus: Bus,
        handler: Handler,
        *,
        durable: str,
        ack_wait: float,
        batch: int = 1,
        fetch_timeout: float = 0.5,
        retry_interval: float = 1.0,
    ) -> None:
        self.bus = bus
        self.handler = handler
        self.durable = durable
        self.ack_wait = ack_wait
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.retry_interval = retry_interval

    def config(self) -> ConsumerConfig:
        # DeliverPolicy.ALL: events published before the first housekeeper ever ran are handled too.
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subjects=SUBJECTS,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=1000,
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await wait_or_stop(self.bus.connected, stop):
                return
            try:
                subscription = await self._bind()
                try:
                    await self._consume(subscription, stop)
                finally:
                    # Its queue is never marked done by fetch(), so leaving it to the connection's drain
                    # would hold the shutdown for the whole drain timeout.
                    with suppress(Exception):
                        await subscription.unsubscribe()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, stream or consumer being re-created: bind again shortly
                logger.warning("event consumer paused (%s: %s); retrying", type(exc).__name__, exc)
                await sleep_or_stop(stop, self.retry_interval)

    async def _bind(self) -> JetStreamContext.PullSubscription:
        js = self.bus.jetstream()
        if js is None:
            raise ConnectionError("not connected to NATS")
        # Creating a durable that exists with this configuration is a no-op; every replica may do it.
        await js.add_consumer(STREAM, self.config())
        return await js.pull_subscribe_bind(durable=self.durable, stream=STREAM)

    async def _consume(self, subscription: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        # The fetch is never cancelled: a pull request abandoned mid-way would strand its messages until
        # ack_wait runs out. Stopping waits for at most one fetch_timeout instead. One message per pull (the
        # default batch) leaves no request open at the server when we stop, so a replica that stops hands
        # its share to the others at once; events here are few enough that prefetching gains nothing.
        while not stop.is_set():
            try:
                messages = await subscription.fetch(self.batch, timeout=self.fetch_timeout)
            except TimeoutError:
                continue
            for index, msg in enumerate(messages):
                if stop.is_set():
                    for left in messages[index:]:
                        await left.nak()  # handed to another replica (or the next start) at once
                    return
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            payload = decode(msg.data)
        except ValueError:
            payload = None
        try:
            if payload is None:
                raise InvalidEvent("the payload is not a JSON object")
            await self.handler(msg.subject, payload)
        except InvalidEvent as exc:
            # Redelivering a malformed event would fail the same way forever.
            logger.warning("dropping a %s event: %s", msg.subject, exc)
            await msg.term()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = min(MAX_RETRY_DELAY, 0.5 * 2 ** min(msg.metadata.num_delivered or 1, 6))
            logger.exception("handling a %s event failed; redelivering it in %.1fs", msg.subject, delay)
            await msg.nak(delay=delay)
            return
        await msg.ack()
