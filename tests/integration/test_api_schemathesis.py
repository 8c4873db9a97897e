"""Property-based tests of the REST API generated from its own /openapi.json (schemathesis): whatever a
client sends within, or just outside, the description, the API never answers with a server error, and its
answers match what it describes.

The API runs for real (aiohttp on a free port, a migrated SQLite store, a NATS server) in a thread of its own,
since schemathesis calls it synchronously. The event stream never ends and the web UI is static files: both
are left out.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from services.api.app import create_app
from services.api.openapi import document
from shared.config import Settings, load_settings
from shared.migrate import upgrade
from tests.support.dicom_clients import add_items, worklist
from tests.support.servers import NatsServer, free_port

MAX_EXAMPLES = int(os.environ.get("MWL_SCHEMATHESIS_EXAMPLES", "30"))  # per operation


class RunningApi:
    """The API application served on 127.0.0.1:`port` by an event loop in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunningApi:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the API did not start: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(create_app(self.settings))
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("api-schemathesis")
    url = f"sqlite:///{folder / 'worklists.db'}"
    upgrade(url)
    add_items(url, [worklist(patient_id="P1"), worklist(name="Müller^Jürgen", patient_id="P2")])
    nats = NatsServer(folder / "jetstream")
    nats.start()
    settings = load_settings(environ={}, overrides={"DatabaseUrl": url, "NatsUrl": nats.url, "HttpPort": 0})
    try:
        with RunningApi(settings) as api:
            wait_until_ready(api.url)
            yield api.url
    finally:
        nats.stop()


def wait_until_ready(url: str, within: float = 15.0) -> None:
    """Poll /readyz: schemathesis asks it too, and it answers 503 until NATS is connected."""
    deadline = time.monotonic() + within
    while True:
        try:
            with urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # HTTPError (503) included
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {within} s")
        time.sleep(0.05)


def test_the_api_serves_the_description_tested_here(api_url: str) -> None:
    with urlopen(f"{api_url}/openapi.json", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        assert json.load(response) == json.loads(json.dumps(document()))


# The description the API serves at /openapi.json (checked just above), loaded at collection time: the
# fixture-based lazy loader of schemathesis 4.32 fails under pytest 9 (it reads a private node attribute).
schema = schemathesis.openapi.from_dict(document()).exclude(path_regex=r"^/(events/stream|ui)")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_answers_as_described(case: schemathesis.Case[Any], api_url: str) -> None:
    case.call_and_validate(
        base_url=api_url,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        timeout=10,
    )


# Found by hand beside schemathesis, which runs on SQLite: PostgreSQL refuses a NUL character in a query,
# which the API answered with 503 "Database unavailable" (and an error in the log), not a client error.
async def test_a_nul_character_is_a_client_error_on_every_store(api: TestClient[Any, Any]) -> None:
    body = {"Tags": {"PatientID": "P1"}, "Force": True}
    for method, path, status in [
        ("GET", "/worklists?q=%00", 400),
        ("GET", "/worklists?PatientName=Doe%00", 400),
        ("GET", "/worklists/a%00b", 404),
        ("DELETE", "/worklists/a%00b", 404),
        ("PUT", "/worklists/a%00b", 404),
    ]:
        response = await api.request(method, path, json=body if method == "PUT" else None)
        assert response.status == status, (method, path, await response.text())
