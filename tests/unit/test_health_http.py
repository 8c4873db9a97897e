"""Health servers: /healthz, /readyz and /metrics answer as Kubernetes and Prometheus expect."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import health_http
from shared.db import create_async_db_engine, create_sync_engine, session_factory
from shared.health_http import (
    Checks,
    HealthServer,
    ThreadedHealthServer,
    database_check,
    database_check_sync,
    nats_check,
    verdict,
)
from shared.metrics import HousekeeperMetrics, ScpMetrics


def get(port: int, path: str, accept: str = "") -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_verdict_is_ready_only_when_every_check_is_ok() -> None:
    assert verdict({"database": "ok", "nats": "ok"}) == (True, {"database": "ok", "nats": "ok"})
    assert verdict({"database": "ok", "nats": nats_check(False)})[0] is False
    assert verdict({}) == (True, {})


def test_database_checks_report_the_failure_without_the_url(tmp_path: Path) -> None:
    assert database_check_sync(create_sync_engine(f"sqlite:///{tmp_path / 'ok.db'}")) == "ok"
    unreachable = create_sync_engine(
        "postgresql://mwl:secret@127.0.0.1:1/mwl", connect_args={"connect_timeout": 2}
    )
    problem = database_check_sync(unreachable)
    assert problem.startswith("unavailable: ") and "secret" not in problem


async def test_async_database_check(tmp_path: Path) -> None:
    engine = create_async_db_engine(f"sqlite:///{tmp_path / 'ok.db'}")
    try:
        assert await database_check(session_factory(engine)) == "ok"
    finally:
        await engine.dispose()
    missing: async_sessionmaker[AsyncSession] = session_factory(
        create_async_db_engine("postgresql://mwl:secret@127.0.0.1:1/mwl", connect_args={"connect_timeout": 2})
    )
    assert (await database_check(missing)).startswith("unavailable: ")


def test_threaded_server_answers_probes_and_scrapes() -> None:
    state: dict[str, Checks] = {"checks": {"database": "ok", "nats": "ok"}}
    metrics = ScpMetrics()
    refreshed: list[bool] = []
    server = ThreadedHealthServer(
        lambda: verdict(state["checks"]), metrics.registry, before_scrape=[lambda: refreshed.append(True)]
    ).start("127.0.0.1", 0)
    try:
        assert get(server.port, "/healthz")[0] == 200
        status, content_type, body = get(server.port, "/readyz")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body) == {"ready": True, "checks": {"database": "ok", "nats": "ok"}}
        state["checks"] = {"database": "unavailable: OperationalError", "nats": "ok"}
        status, _, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["checks"]["database"].startswith("unavailable")
        assert (
            get(server.port, "/healthz")[0] == 200
        )  # not ready is not dead: no restart for a database outage
        metrics.observe_find(0, 0.01, 2)
        status, content_type, body = get(server.port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert b'mwl_cfind_requests_total{status="success"} 1.0' in body
        assert refreshed == [True]
        _, content_type, _ = get(
            server.port, "/metrics", accept="application/openmetrics-text; version=1.0.0"
        )
        assert content_type.startswith("application/openmetrics-text")
        assert get(server.port, "/nothing")[0] == 404
    finally:
        server.stop()


def test_a_check_that_raises_means_not_ready() -> None:
    def broken() -> tuple[bool, Checks]:
        raise RuntimeError("bug")

    server = ThreadedHealthServer(broken, liveness=lambda: (False, {"loop": "stalled"})).start("127.0.0.1", 0)
    try:
        status, _, body = get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["checks"] == {"readiness": "error: RuntimeError"}
        status, _, body = get(server.port, "/healthz")
        assert status == 503 and json.loads(body) == {"status": "failing", "checks": {"loop": "stalled"}}
        assert get(server.port, "/metrics")[0] == 404  # no registry given
    finally:
        server.stop()


async def test_async_server_answers_probes_and_scrapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_http, "CHECK_TIMEOUT", 0.2)
    metrics = HousekeeperMetrics()
    mode = {"value": "ok"}

    async def readiness() -> tuple[bool, Checks]:
        if mode["value"] == "hang":
            await asyncio.sleep(10)
        return verdict({"nats": mode["value"]})

    async def before_scrape() -> None:
        metrics.outbox_backlog.set(7)

    async with HealthServer(readiness, metrics.registry, before_scrape=[before_scrape]) as server:
        await server.start("127.0.0.1", 0)
        port = server.port
        assert (await asyncio.to_thread(get, port, "/readyz"))[0] == 200
        mode["value"] = "unavailable"
        status, _, body = await asyncio.to_thread(get, port, "/readyz")
        assert status == 503 and json.loads(body) == {"ready": False, "checks": {"nats": "unavailable"}}
        mode["value"] = "hang"  # a check that hangs answers in time, as not ready
        status, _, body = await asyncio.to_thread(get, port, "/readyz")
        assert status == 503 and "timed out" in json.loads(body)["checks"]["readiness"]
        assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
        _, _, body = await asyncio.to_thread(get, port, "/metrics")
        assert b"mwl_outbox_backlog 7.0" in body
    with pytest.raises(RuntimeError):
        _ = server.port  # closed


async def test_a_taken_port_fails_the_start() -> None:
    async def ready() -> tuple[bool, Checks]:
        return True, {}

    first = await HealthServer(ready).start("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await HealthServer(ready).start("127.0.0.1", first.port)
    finally:
        await first.close()
