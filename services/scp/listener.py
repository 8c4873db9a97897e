"""Keeps the item cache tidy: NATS worklist.* events and a periodic resync, on an event loop in a thread."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from contextlib import suppress

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.scp.cache import ItemCache
from shared.bus import Bus
from shared.events import WORKLIST_CREATED, WORKLIST_DELETED, WORKLIST_UPDATED, decode

logger = logging.getLogger(__name__)

SUBJECTS = "worklist.*"


class CacheListener:
    """Runs shared.bus.Bus on its own asyncio loop, since the association threads are synchronous.

    The SCP starts and serves while NATS is down: Bus keeps reconnecting, and the resync every
    `interval` seconds (HousekeepingInterval) covers whatever events were missed meanwhile.
    """

    def __init__(
        self,
        cache: ItemCache,
        nats_url: str,
        interval: float,
        *,
        on_resync: Callable[[], None] = lambda: None,
    ) -> None:
        self.cache = cache
        self.nats_url = nats_url
        self.interval = interval
        self.on_resync = on_resync  # called after each successful resync (the metrics' resync age)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.bus: Bus | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scp-cache-listener", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            with suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def is_listening(self) -> bool:
        """Connected to NATS with the subscription in place (Bus sets `connected` after on_connect ran)."""
        return self.bus is not None and self.bus.connected.is_set() and self.bus.is_connected

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            logger.exception("cache listener stopped; the cache now relies on version checks alone")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.bus = Bus(self.nats_url, "mwl-scp")
        self.bus.on_connect(self._subscribe)
        self.bus.start()
        resync = asyncio.create_task(self._resync_forever(), name="scp-cache-resync")
        self._ready.set()
        await self._stop.wait()
        resync.cancel()
        with suppress(asyncio.CancelledError):
            await resync
        await self.bus.close()

    async def _subscribe(self, nc: NATS) -> None:
        # A core subscription: nats-py restores it after each reconnect; what was published in between is
        # caught by the next resync.
        await nc.subscribe(SUBJECTS, cb=self._on_message)
        logger.info("cache listening to %s events", SUBJECTS)

    async def _on_message(self, msg: Msg) -> None:
        try:
            item_id = str(decode(msg.data)["worklist_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring malformed %s event", msg.subject)
            return
        if msg.subject == WORKLIST_DELETED:
            self.cache.evict(item_id)
        elif msg.subject in (WORKLIST_CREATED, WORKLIST_UPDATED):
            # Replaced in place: evicting first would leave a moment where queries read the store for it.
            try:
                await asyncio.to_thread(self.cache.refresh, [item_id])
            except Exception:  # store briefly away: the next query or resync loads it
                # An old version is never answered (every answer checks the version), only held in memory.
                self.cache.evict(item_id)
                logger.warning("could not load worklist %s after its %s event", item_id, msg.subject)

    async def _resync_forever(self) -> None:
        while True:
            try:
                report = await asyncio.to_thread(self.cache.resync)
                self.on_resync()
                if report.dropped or report.loaded:
                    logger.info("cache resync: %d dropped, %d loaded", report.dropped, report.loaded)
            except Exception as exc:  # the store may be away for a while; never let the loop die
                logger.warning(
                    "cache resync failed (%s); retrying in %.0f s", type(exc).__name__, self.interval
                )
            await asyncio.sleep(self.interval)
