"""Waiting that a stop request cuts short: the housekeeper's loops never sleep past a SIGTERM."""

from __future__ import annotations

import asyncio
from contextlib import suppress


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`; True when `stop` was set meanwhile."""
    # asyncio.timeout rather than wait_for: on Python 3.11 wait_for can swallow a cancellation.
    with suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await stop.wait()
    return stop.is_set()


async def wait_or_stop(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for `event`; False when `stop` came first."""
    if event.is_set():
        return True
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return event.is_set() and not stop.is_set()


async def wait_for_any(events: list[asyncio.Event], seconds: float) -> None:
    """Return when one of `events` is set, or after `seconds`."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
