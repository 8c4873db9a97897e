"""Readiness from shared.health_http follows a real NATS: not ready while it is stopped, ready once back."""

from __future__ import annotations

import asyncio

import aiohttp

from shared.bus import Bus
from shared.health_http import Checks, HealthServer, nats_check, verdict
from tests.support.servers import NatsServer


async def wait_for_status(session: aiohttp.ClientSession, url: str, status: int) -> None:
    async with asyncio.timeout(15):
        while True:
            async with session.get(url) as response:
                if response.status == status:
                    return
            await asyncio.sleep(0.05)


async def test_readiness_follows_nats(nats_server: NatsServer) -> None:
    bus = Bus(nats_server.url, "health-test", retry_interval=0.2)
    bus.start()

    async def readiness() -> tuple[bool, Checks]:
        return verdict({"nats": nats_check(bus.is_connected)})

    server = await HealthServer(readiness).start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/readyz"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for_status(session, url, 200)
            await asyncio.to_thread(nats_server.stop)
            await wait_for_status(session, url, 503)
            await asyncio.to_thread(nats_server.start)
            await wait_for_status(session, url, 200)
    finally:
        await server.close()
        await bus.close()
