"""Live updates: worklist events from NATS fanned out to browsers as Server-Sent Events (GET /events/stream).

While a stream is open the feed holds a core NATS subscription on `worklist.>` (the events every writer
publishes through the outbox: REST, folder sync, housekeeper), and one bounded queue per open stream. A
stream whose browser does not keep up is closed rather than allowed to grow: EventSource reconnects by itself
and the page reloads its table on every (re)connection, so nothing is missed for long. Frames carry the event
payload as published, which holds no more patient data than a dashboard needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import suppress

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from services.api.keys import BUS, LIVE
from shared.events import decode

logger = logging.getLogger(__name__)

SUBJECT = "worklist.>"
KEEPALIVE_SECONDS = 15.0
QUEUE_SIZE = 256
RETRY_MILLISECONDS = 2000
FLUSH_TIMEOUT_SECONDS = 2
_CLOSE = b""


class LiveFeed:
    """Fans NATS worklist events out to the open event streams."""

    def __init__(self, keepalive: float = KEEPALIVE_SECONDS, queue_size: int = QUEUE_SIZE) -> None:
        self.keepalive = keepalive
        self.queue_size = queue_size
        self.subscription: Subscription | None = None
        self._nc: NATS | None = None
        self._streams: set[asyncio.Queue[bytes]] = set()
        self._closing = False
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def attach(self, nc: NATS) -> None:
        """Use this connection (once connected); nats-py renews the subscription by itself after a
        reconnection."""
        self._nc = nc
        await self._follow_streams()

    async def detach(self) -> None:
        self._nc = None
        await self._follow_streams()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _follow_streams(self) -> None:
        """Hold the NATS subscription while a stream is open, and only then: every event published (one per
        REST create) would otherwise come back to this process to be dropped, at a CPU cost per create."""
        async with self._lock:
            nc = self._nc
            if self._streams and nc is not None and self.subscription is None:
                self.subscription = await nc.subscribe(SUBJECT, cb=self._on_message)
                if nc.is_connected:  # the server has the subscription before the stream says it is connected
                    with suppress(Exception):
                        await nc.flush(FLUSH_TIMEOUT_SECONDS)
            elif (not self._streams or nc is None) and self.subscription is not None:
                subscription, self.subscription = self.subscription, None
                with suppress(Exception):  # the connection may already be closed
                    await subscription.unsubscribe()

    def _follow_streams_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._follow_streams_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_streams_logged(self) -> None:
        try:
            await self._follow_streams()
        except Exception as exc:
            logger.warning("live updates: NATS subscription not changed (%s)", type(exc).__name__)

    async def _on_message(self, msg: Msg) -> None:
        if not self._streams:
            return  # the last stream closed; the subscription is on its way out
        frame = sse_frame(msg.subject, msg.data)
        if frame is None:
            logger.warning("ignoring a malformed %s event", msg.subject)
            return
        for queue in list(self._streams):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                logger.warning("closing a live stream that does not keep up; the browser will reconnect")
                self._end(queue)

    async def open(self) -> asyncio.Queue[bytes]:
        if self._closing:
            raise web.HTTPServiceUnavailable(reason="Server is shutting down")
        queue: asyncio.Queue[bytes] = asyncio.Queue(self.queue_size)
        self._streams.add(queue)
        await self._follow_streams_logged()
        return queue

    def release(self, queue: asyncio.Queue[bytes]) -> None:
        self._streams.discard(queue)
        if not self._streams:
            self._follow_streams_soon()

    def close_all(self) -> None:
        """End every open stream (at shutdown, so that the server need not wait for them)."""
        self._closing = True
        for queue in list(self._streams):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[bytes]) -> None:
        self.release(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(_CLOSE)


def sse_frame(subject: str, data: bytes) -> bytes | None:
    """One SSE message: the event id, the subject as event type, the payload as one line of JSON."""
    try:
        payload = decode(data)
    except ValueError:
        return None
    event_id = str(payload.get("event_id", "")).replace("\n", "").replace("\r", "")
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event_id}\nevent: {subject}\ndata: {body}\n\n".encode()


async def stream(request: web.Request) -> web.StreamResponse:
    """`GET /events/stream`: text/event-stream of worklist.created / updated / deleted (and rejected)."""
    feed = request.app[LIVE]
    queue = await feed.open()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # reverse proxies must not hold events back
        }
    )
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MILLISECONDS}\n: connected\n\n".encode())
        while True:
            try:
                frame = await asyncio.wait_for(queue.get(), feed.keepalive)
            except TimeoutError:
                frame = b": keep-alive\n\n"  # also how a closed connection is noticed
            if frame == _CLOSE:
                break
            await response.write(frame)
    except ConnectionResetError:
        return response  # the browser went away
    finally:
        feed.release(queue)
    with suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def live_feed(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the NATS subscription, taken through the app's Bus (which must be set up before)."""
    feed = app[LIVE]
    bus = app[BUS]
    if bus.connected.is_set() and bus.nc is not None:
        await feed.attach(bus.nc)  # Bus runs its callbacks once, at the first connection
    else:
        bus.on_connect(feed.attach)
    yield
    feed.close_all()
    await feed.detach()


async def close_streams(app: web.Application) -> None:
    """on_shutdown: end open streams before the server waits for its handlers to finish."""
    app[LIVE].close_all()


def setup_live(app: web.Application) -> None:
    """Called by the app factory after the store-and-bus context, whose Bus the feed subscribes through."""
    app[LIVE] = LiveFeed()
    app.cleanup_ctx.append(live_feed)
    app.on_shutdown.append(close_streams)
