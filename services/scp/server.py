"""The SCP factory: store, item cache, event listener, the association acceptor and the health/metrics port,
started and stopped together."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.scp.association import AssociationServer, Timeouts
from services.scp.cache import ItemCache
from services.scp.find import FindOptions, WorklistFinder
from services.scp.handlers import WorklistServices
from services.scp.listener import CacheListener
from services.scp.lookup import ItemStore
from services.scp.policy import AccessPolicy, Resolver, resolve_host
from services.scp.workers import Workers, worker_count
from shared import tls
from shared.config import ConfigError, Settings
from shared.db import create_sync_engine, is_sqlite
from shared.health_http import OK, Checks, ThreadedHealthServer, database_check_sync, nats_check, verdict
from shared.matching import MatchOptions
from shared.metrics import ScpMetrics
from shared.migrate import alembic_config

logger = logging.getLogger(__name__)

# A department's modalities and a RIS querying at once, with room to spare (the soak test runs 32
# modalities back to back plus 4 RIS checkers); beyond it an association is rejected (transient, local limit
# exceeded). Each association is a pooled thread; a C-FIND costs a couple of milliseconds of CPU.
MAX_ASSOCIATIONS = 64
# Seconds. A silent peer is dropped (never an association hanging forever); a slow store fails the query.
NETWORK_TIMEOUT = 60
ACSE_TIMEOUT = 30
STORE_TIMEOUT_MS = 15_000
# Seconds between checks that every worker process still runs.
WORKER_CHECK_INTERVAL = 1.0


class StoreNotReady(RuntimeError):
    """The store cannot serve the SCP (unreachable, or not migrated); the message says what to do."""


def create_engine(database_url: str) -> Engine:
    """A pooled engine sized for concurrent associations, with timeouts so no query waits forever."""
    # The SCP only reads, one statement per connection use: AUTOCOMMIT spares the BEGIN and the ROLLBACK
    # (two round trips to PostgreSQL, each a few hundred microseconds of CPU) around every query.
    options: dict[str, Any] = {
        # No ping at each checkout (a round trip per C-FIND): ItemStore retries a read whose pooled
        # connection turns out closed, once, on a fresh connection.
        "pool_pre_ping": False,
        "pool_size": 8,
        "max_overflow": 24,
        "pool_timeout": 10,
        "isolation_level": "AUTOCOMMIT",
    }
    if not is_sqlite(database_url):
        options["connect_args"] = {
            "connect_timeout": 5,
            "options": f"-c statement_timeout={STORE_TIMEOUT_MS}",
        }
    return create_sync_engine(database_url, **options)


def check_store(engine: Engine, database_url: str) -> None:
    """Refuse to start on a store that is unreachable or older than this code (migrations are separate)."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    heads = set(script.get_heads())
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError as exc:
        raise StoreNotReady(
            f"cannot reach the worklist store ({type(exc).__name__}): {exc.args[0]}"
        ) from None
    if not current:
        raise StoreNotReady(
            "the worklist store is not migrated: run `make migrate` (python -m shared.migrate)"
        )
    known = {rev.revision for rev in script.walk_revisions()}
    if current <= known and current != heads:
        at, wanted = ", ".join(sorted(current)), ", ".join(sorted(heads))
        raise StoreNotReady(
            f"the worklist store is at revision {at}, not {wanted}: run `make migrate` "
            "(python -m shared.migrate)"
        )
    if not current <= known:
        logger.warning("the worklist store is at a newer revision (%s) than this code knows", sorted(current))


def find_options(settings: Settings) -> FindOptions:
    return FindOptions(
        match=MatchOptions(case_sensitive_pn=settings.case_sensitive_pn),
        default_character_set=settings.default_character_set,
        limit_answers=settings.worklists.limit_answers,
        filter_issuer_aet=settings.worklists.filter_issuer_aet,
    )


def _listen_error(exc: OSError, what: str, host: str, port: int) -> OSError:
    """The bind error, saying which of the SCP's two ports could not be opened."""
    return OSError(exc.errno, f"cannot listen on {host}:{port} for {what}: {exc.strerror}")


class ScpServer:
    """A running SCP. `start()` returns once the ports listen; `stop()` closes everything it opened."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache_capacity: int | None = None,
        resolver: Resolver = resolve_host,
        metrics: ScpMetrics | None = None,
        share_port: bool = False,
    ) -> None:
        self.settings = settings
        # First: a bad DicomTls* option (ConfigError) stops start-up before anything is opened.
        self.ssl_context = tls.server_context(settings)
        self.share_port = share_port
        self.metrics = metrics or ScpMetrics()
        self.engine = create_engine(settings.database_url)
        self.store = ItemStore(self.engine)
        capacity = settings.worklists.scp_cache_items if cache_capacity is None else cache_capacity
        self.cache = ItemCache(self.store, capacity)
        self.metrics.track_cache_size(lambda: len(self.cache))
        self.listener = CacheListener(
            self.cache,
            settings.nats_url,
            settings.worklists.housekeeping_interval,
            on_resync=self.metrics.cache_resynced,
        )
        self.policy = AccessPolicy.from_settings(settings, resolver)
        self.maximum_associations = MAX_ASSOCIATIONS
        self.health = ThreadedHealthServer(self.readiness, self.metrics.registry)
        self._server: AssociationServer | None = None

    def readiness(self) -> tuple[bool, Checks]:
        """Ready while the store answers. NATS is reported but not required, on purpose.

        Every answer is checked against the store's current version, so without NATS the SCP still answers
        correctly; only the cache warms more slowly and a new item waits for the next resync (within
        HousekeepingInterval) instead of its event. Failing readiness then would take every replica out of
        the Service at once, since they all share the one NATS, and leave modalities with no worklist at
        all. shared.health_http.verdict knows only ready/not ready, so the nats check is added after it,
        as "degraded: ..." while NATS is away: visible to operators, ignored by the readiness verdict.
        """
        ready, checks = verdict({"database": database_check_sync(self.engine)})
        nats = nats_check(self.listener.is_listening)
        checks["nats"] = nats if nats == OK else f"degraded: {nats}; new items wait for the next resync"
        return ready, checks

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the SCP is not started")
        return int(self._server.server_address[1])

    @property
    def active_associations(self) -> int:
        """Connections being served now (associations, and connections on their way to one)."""
        return self._server.active if self._server is not None else 0

    def set_maximum_associations(self, maximum: int) -> None:
        self.maximum_associations = maximum
        if self._server is not None:
            self._server.maximum_associations = maximum

    @property
    def health_port(self) -> int:
        """The port of /healthz, /readyz and /metrics (RuntimeError when ScpHealthPort is 0)."""
        return self.health.port

    def start(self) -> ScpServer:
        try:
            check_store(self.engine, self.settings.database_url)
        except StoreNotReady:
            self.engine.dispose()
            raise
        self.listener.start()
        finder = WorklistFinder(self.store, self.cache, find_options(self.settings))
        host, dicom_port = self.settings.bind_address, self.settings.dicom_port
        services = WorklistServices(finder, self.policy, self.metrics)
        try:
            self._server = AssociationServer(
                (host, dicom_port),
                services,
                timeouts=Timeouts(acse=ACSE_TIMEOUT, network=NETWORK_TIMEOUT),
                maximum_associations=self.maximum_associations,
                ssl_context=self.ssl_context,
                share_port=self.share_port,
            )
        except OSError as exc:
            self.listener.stop()
            self.engine.dispose()
            raise _listen_error(exc, "DICOM", host, dicom_port) from exc
        threading.Thread(target=self._server.serve_forever, name="scp-acceptor", daemon=True).start()
        logger.info(
            "Modality Worklist SCP %s listening on %s:%d%s",
            self.settings.dicom_aet,
            host,
            self.port,
            " (TLS)" if self.ssl_context else "",
        )
        # After the DICOM port: a pod is never reported ready before it can take associations.
        health_port = self.settings.scp_health_port
        if health_port:
            try:
                self.health.start(host, health_port)
            except OSError as exc:
                self._stop_dicom()
                raise _listen_error(exc, "health and metrics (ScpHealthPort)", host, health_port) from exc
        return self

    def stop(self) -> None:
        # Health first: readiness turns to connection refused before the DICOM port closes.
        self.health.stop()  # nothing to do when ScpHealthPort is 0
        self._stop_dicom()

    def _stop_dicom(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.listener.stop()
        self.engine.dispose()


def start(settings: Settings, **options: Any) -> ScpServer:
    """Start an SCP for `settings` (raises StoreNotReady when the store cannot serve it)."""
    return ScpServer(settings, **options).start()


def serve(settings: Settings, *, share_port: bool = False, config: Path | None = None) -> int:
    """Run until SIGINT or SIGTERM (or until a worker dies); the exit status for the process.

    With ScpWorkers above 1 this process is worker 0 and starts the others (services.scp.workers).
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    count = worker_count(settings.scp_workers)
    try:
        server = start(settings, share_port=share_port or count > 1)
    except ConfigError as exc:  # a DicomTls* file that cannot be used
        logger.error("%s", exc)
        return 2
    except StoreNotReady as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:
        logger.error("%s", exc.strerror)  # says which port: DICOM or health
        return 1
    workers = Workers(count, config)
    status = 0
    try:
        workers.start()
        while not stop.wait(WORKER_CHECK_INTERVAL):
            ended = workers.exited()
            if ended is not None:
                logger.error(
                    "SCP worker %d exited with status %s: stopping the others", ended.pid, ended.returncode
                )
                status = 1
                break
    finally:
        logger.info("stopping the Modality Worklist SCP")
        workers.stop()
        server.stop()
    return status
