"""The SCP factory: store, item cache, event listener, the pynetdicom AE and the health/metrics port, started
and stopped together."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pynetdicom import AE, _config
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.scp.cache import ItemCache
from services.scp.find import FindOptions, WorklistFinder
from services.scp.handlers import bind
from services.scp.listener import CacheListener
from services.scp.lookup import ItemStore
from services.scp.policy import AccessPolicy, Resolver, resolve_host
from shared.config import Settings
from shared.db import create_sync_engine, is_sqlite
from shared.health_http import OK, Checks, ThreadedHealthServer, database_check_sync, nats_check, verdict
from shared.matching import MatchOptions
from shared.metrics import ScpMetrics
from shared.migrate import alembic_config

logger = logging.getLogger(__name__)

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"
# Eight modalities querying at once, plus room for slow clients; beyond it pynetdicom rejects (transient).
MAX_ASSOCIATIONS = 32
# Seconds. A silent peer is dropped (never an association hanging forever); a slow store fails the query.
NETWORK_TIMEOUT = 60
DIMSE_TIMEOUT = 30
STORE_TIMEOUT_MS = 15_000


class StoreNotReady(RuntimeError):
    """The store cannot serve the SCP (unreachable, or not migrated); the message says what to do."""


def create_engine(database_url: str) -> Engine:
    """A pooled engine sized for concurrent associations, with timeouts so no query waits forever."""
    options: dict[str, Any] = {"pool_size": 8, "max_overflow": 24, "pool_timeout": 10}
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


def create_ae(settings: Settings) -> AE:
    """The AE answering Modality Worklist C-FIND and Verification under DicomAet."""
    # pynetdicom would log every answer's identifier (patient data) at debug level.
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_REQUEST_IDENTIFIERS = False
    ae = AE(ae_title=settings.dicom_aet)
    ae.add_supported_context(MODALITY_WORKLIST_FIND)
    ae.add_supported_context(VERIFICATION)
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.network_timeout = NETWORK_TIMEOUT
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.acse_timeout = DIMSE_TIMEOUT
    return ae


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
    ) -> None:
        self.settings = settings
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
        self.ae = create_ae(settings)
        self.health = ThreadedHealthServer(self.readiness, self.metrics.registry)
        self._server: ThreadedAssociationServer | None = None

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
        handlers = bind(finder, self.policy, self.metrics)
        try:
            self._server = self.ae.start_server((host, dicom_port), block=False, evt_handlers=handlers)
        except OSError as exc:
            self.listener.stop()
            self.engine.dispose()
            raise _listen_error(exc, "DICOM", host, dicom_port) from exc
        logger.info("Modality Worklist SCP %s listening on %s:%d", self.settings.dicom_aet, host, self.port)
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
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()
        self.listener.stop()
        self.engine.dispose()


def start(settings: Settings, **options: Any) -> ScpServer:
    """Start an SCP for `settings` (raises StoreNotReady when the store cannot serve it)."""
    return ScpServer(settings, **options).start()


def serve(settings: Settings) -> int:
    """Run until SIGINT or SIGTERM; the exit status for the process."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = start(settings)
    except StoreNotReady as exc:
        logger.error("%s", exc)
        return 1
    except OSError as exc:
        logger.error("%s", exc.strerror)  # says which port: DICOM or health
        return 1
    stop.wait()
    logger.info("stopping the Modality Worklist SCP")
    server.stop()
    return 0
