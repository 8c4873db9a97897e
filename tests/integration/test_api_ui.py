"""What the web UI stands on: its files served locally, and the live event stream (SSE) fed by NATS."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.api.app import create_app
from services.api.keys import BUS, LIVE
from tests.integration.conftest import ApiFactory
from tests.integration.test_api_worklists import create, tags

Client = TestClient[Any, Any]


async def connected(api: Client) -> Client:
    """Live updates flow once the app's bus has connected and subscribed."""
    await asyncio.wait_for(api.app[BUS].connected.wait(), 10)
    return api


async def next_frame(stream: aiohttp.ClientResponse) -> str:
    async with asyncio.timeout(5):
        return (await stream.content.readuntil(b"\n\n")).decode()


async def test_the_page_and_its_files_are_served_locally(api: Client) -> None:
    resp = await api.get("/ui", allow_redirects=False)
    assert resp.status == 301 and resp.headers["Location"] == "/ui/"

    resp = await api.get("/ui/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    # Every script, style and icon comes from the server itself: the machines have no internet.
    references = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert references and all("//" not in ref for ref in references)
    for name, content_type in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        asset = await api.get(f"/ui/{name}")
        assert asset.status == 200 and asset.content_type == content_type
        assert name in references

    for missing in ("/ui/nothing.js", "/ui/..%2Fviews.py", "/ui/index.html%00"):
        resp = await api.get(missing)
        assert resp.status == 404
        assert (await resp.json())["HttpStatus"] == 404


async def test_the_stream_carries_each_change_as_an_event(api: Client) -> None:
    await connected(api)
    stream = await api.get("/events/stream")
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.headers["Cache-Control"] == "no-cache"
    assert (await next_frame(stream)).startswith("retry: ")

    item_id = (await create(api, {"Tags": tags()}))["ID"]
    assert (await api.put(f"/worklists/{item_id}", json={"Tags": tags(AccessionNumber="A2")})).status == 200
    assert (await api.delete(f"/worklists/{item_id}")).status == 200

    frames = [await next_frame(stream) for _ in range(3)]
    events = [re.search(r"^event: (.+)$", frame, re.M) for frame in frames]
    assert [e.group(1) for e in events if e] == ["worklist.created", "worklist.updated", "worklist.deleted"]
    for frame in frames:
        assert re.search(r"^id: [0-9a-f-]{36}$", frame, re.M)
        assert f'"worklist_id":"{item_id}"' in frame
        assert "Doe" not in frame  # no patient name on the wire
    stream.close()


async def test_quiet_streams_get_keep_alive_comments(api: Client) -> None:
    await connected(api)
    api.app[LIVE].keepalive = 0.05
    stream = await api.get("/events/stream")
    await next_frame(stream)
    assert await next_frame(stream) == ": keep-alive\n\n"
    stream.close()


async def test_a_browser_that_leaves_frees_its_stream(api: Client) -> None:
    await connected(api)
    feed = api.app[LIVE]
    feed.keepalive = 0.05
    stream = await api.get("/events/stream")
    await next_frame(stream)
    assert feed.open_streams == 1
    stream.close()
    for _ in range(100):
        if feed.open_streams == 0:
            break
        await asyncio.sleep(0.02)
    assert feed.open_streams == 0


async def test_events_come_from_nats_only_while_a_stream_is_open(api: Client) -> None:
    # Without a browser watching, the events of every create would come back from NATS only to be dropped.
    await connected(api)
    feed = api.app[LIVE]
    feed.keepalive = 0.05
    await create(api, {"Tags": tags()})
    assert feed.subscription is None
    stream = await api.get("/events/stream")
    await next_frame(stream)
    assert feed.subscription is not None
    item_id = (await create(api, {"Tags": tags()}))["ID"]
    while item_id not in await next_frame(stream):  # keep-alives, or the first create's event relayed late
        pass
    stream.close()
    for _ in range(100):
        if feed.subscription is None:
            break
        await asyncio.sleep(0.02)
    assert feed.subscription is None and feed.open_streams == 0


async def test_shutdown_ends_open_streams_at_once(settings_factory: Any) -> None:
    app = create_app(settings_factory())
    runner = web.AppRunner(app)  # the default shutdown_timeout would wait 60 s for open handlers
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    async with aiohttp.ClientSession(base) as session, session.get("/events/stream") as stream:
        await next_frame(stream)
        await asyncio.wait_for(runner.cleanup(), 5)
        assert await asyncio.wait_for(stream.content.read(), 5) == b""  # the stream ended cleanly
    assert app[LIVE].open_streams == 0


async def test_changes_from_another_writer_reach_the_stream(api_factory: ApiFactory) -> None:
    """The stream is fed by NATS, not by this process: a change made through another API instance arrives."""
    reader = await connected(await api_factory())
    writer = await api_factory()
    stream = await reader.get("/events/stream")
    await next_frame(stream)

    item_id = (await create(writer, {"Tags": tags()}))["ID"]
    frame = await next_frame(stream)
    assert "event: worklist.created" in frame and item_id in frame
    stream.close()
