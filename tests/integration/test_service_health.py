"""Health and metrics of the API and the housekeeper against real servers: /readyz follows NATS, PostgreSQL
and the folder going away and coming back; /metrics moves when requests and deletions happen."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.api.app import create_app
from shared.config import Settings, load_settings
from shared.migrate import upgrade
from tests.support.housekeeper import Store, eventually, running, tags
from tests.support.servers import NatsServer, Postgres, free_port, service_env

Client = TestClient[Any, Any]
Readiness = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
STUDY = "1.2.826.0.1.3680043.8.498.77"


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A PostgreSQL of this module's own, which a test may stop without disturbing the others."""
    server = Postgres(tmp_path_factory.mktemp("own-pg") / "data")
    yield server
    server.stop()


def make_settings(database_url: str, nats_url: str, **options: Any) -> Settings:
    overrides: dict[str, Any] = {
        "DatabaseUrl": database_url,
        "NatsUrl": nats_url,
        "HousekeeperHealthPort": free_port(),
        "Worklists": {"HousekeepingInterval": 0.2, "FileSettleTime": 0},
    }
    overrides.update(options)
    return load_settings(environ={}, overrides=overrides)


def api_readiness(api: Client) -> Readiness:
    async def probe() -> tuple[int, dict[str, Any]]:
        response = await api.get("/readyz")
        return response.status, await response.json()

    return probe


def housekeeper_readiness(http: aiohttp.ClientSession, settings: Settings) -> Readiness:
    url = f"http://127.0.0.1:{settings.housekeeper_health_port}/readyz"

    async def probe() -> tuple[int, dict[str, Any]]:
        async with http.get(url) as response:
            return response.status, await response.json()

    return probe


async def wait_until(probe: Readiness, status: int, check: str, state: str, *, what: str) -> None:
    """Until /readyz answers `status` with `check` "ok" (state "ok") or not "ok" (state "failing")."""

    async def answered() -> bool:
        code, body = await probe()
        value = body["checks"].get(check)
        expected = value == "ok" if state == "ok" else value not in (None, "ok")
        return code == status and body["ready"] is (status == 200) and expected

    await eventually(answered, within=15, what=what)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as response:
        assert response.status == 200
        return await response.text()


def parse(text: str) -> Samples:
    """The samples of a /metrics answer: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_readiness_follows_nats_and_postgresql_going_and_coming_back(
    aiohttp_client: Any, own_postgres: Postgres, nats_server: NatsServer
) -> None:
    database_url = own_postgres.new_database()
    upgrade(database_url)
    settings = make_settings(database_url, nats_server.url)
    api: Client = await aiohttp_client(create_app(settings))
    async with aiohttp.ClientSession() as http, running(settings):
        probes = {"api": api_readiness(api), "housekeeper": housekeeper_readiness(http, settings)}
        for name, probe in probes.items():
            await wait_until(probe, 200, "database", "ok", what=f"{name} ready")

        await asyncio.to_thread(nats_server.stop)
        for name, probe in probes.items():
            await wait_until(probe, 503, "nats", "failing", what=f"{name} not ready without NATS")
            assert (await probe())[1]["checks"]["database"] == "ok"  # only the failing check is named
        await asyncio.to_thread(nats_server.start)
        for name, probe in probes.items():
            await wait_until(probe, 200, "nats", "ok", what=f"{name} ready with NATS back")

        await asyncio.to_thread(own_postgres.pause)
        try:
            for name, probe in probes.items():
                await wait_until(probe, 503, "database", "failing", what=f"{name} not ready without the db")
                assert (await probe())[1]["checks"]["nats"] == "ok"
        finally:
            await asyncio.to_thread(own_postgres.resume)
        for name, probe in probes.items():
            await wait_until(probe, 200, "database", "ok", what=f"{name} ready with PostgreSQL back")


async def test_metrics_move_with_requests_and_deletions(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer
) -> None:
    database_url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(database_url)
    settings = make_settings(database_url, nats_server.url)
    api: Client = await aiohttp_client(create_app(settings))
    db = Store(database_url)
    housekeeper_metrics = f"http://127.0.0.1:{settings.housekeeper_health_port}/metrics"
    try:
        async with aiohttp.ClientSession() as http, running(settings):
            before = parse(await scrape(http, housekeeper_metrics))
            assert sample(before, "mwl_housekeeping_deletions_total", reason="study-stable") == 0
            for _ in range(2):
                assert (await api.get("/worklists/unknown")).status == 404
            created = await api.post("/worklists/create", json={"Tags": tags(StudyInstanceUID=STUDY)})
            assert created.status == 200
            stable = await api.post("/studies/stable", json={"StudyInstanceUID": STUDY})
            assert stable.status == 202
            await eventually(lambda: db.ids_are(set()), what="item deleted on study.stable")

            text = await scrape(http, str(api.make_url("/metrics")))
            samples = parse(text)
            requests = "mwl_http_requests_total"
            assert sample(samples, requests, method="GET", route="/worklists/{id}", status="404") == 2
            assert sample(samples, requests, method="POST", route="/worklists/create", status="200") == 1
            assert sample(samples, requests, method="POST", route="/studies/stable", status="202") == 1
            assert "/worklists/unknown" not in text  # the route template, never the raw path
            assert ("mwl_outbox_backlog", frozenset()) in samples

            after = parse(await scrape(http, housekeeper_metrics))
            assert sample(after, "mwl_housekeeping_deletions_total", reason="study-stable") == 1
            assert sample(after, "mwl_housekeeping_deletions_total", reason="expired") == 0
            assert ("mwl_outbox_backlog", frozenset()) in after
    finally:
        await db.close()


async def test_the_api_reports_a_vanished_folder_and_refuses_to_start_without_it(
    aiohttp_client: Any, tmp_path: Path, nats_server: NatsServer
) -> None:
    database_url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(database_url)
    directory = tmp_path / "worklists"
    directory.mkdir()
    worklists = {"Directory": str(directory), "SaveInOrthancDatabase": False}
    api: Client = await aiohttp_client(
        create_app(make_settings(database_url, nats_server.url, Worklists=worklists))
    )
    probe = api_readiness(api)
    await wait_until(probe, 200, "folder", "ok", what="API ready with its folder")
    moved = directory.rename(tmp_path / "elsewhere")
    await wait_until(probe, 503, "folder", "failing", what="API not ready without its folder")
    assert "Worklists.Directory" in (await probe())[1]["checks"]["folder"]

    # The service itself does not start in folder mode while the folder is missing.
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"DatabaseUrl": database_url, "NatsUrl": nats_server.url, "Worklists": worklists})
    )
    process = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.api", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=service_env(MWL_HTTP_PORT=str(free_port())),
    )
    assert process.returncode == 2
    assert f"Worklists.Directory {directory} does not exist" in process.stderr

    moved.rename(directory)
    await wait_until(probe, 200, "folder", "ok", what="API ready with its folder back")
