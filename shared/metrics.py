"""Prometheus metrics of the three services: every metric name defined once, registered per service."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import REASON_EXPIRED, REASON_FILE_REMOVED, REASON_STUDY_STABLE
from shared.models import OutboxEvent

# Exposed names (counters get Prometheus' `_total` suffix from the client library: the name below is the one
# a PromQL query uses). The README "Monitoring" section lists them; tests/unit/test_metrics.py keeps both
# in step.
BUILD_INFO = "mwl_build_info"
CFIND_REQUESTS = "mwl_cfind_requests_total"
CFIND_DURATION = "mwl_cfind_duration_seconds"
CFIND_ANSWERS = "mwl_cfind_answers"
CFIND_CANCELLATIONS = "mwl_cfind_cancellations_total"
ASSOCIATIONS_REFUSED = "mwl_associations_refused_total"
SCP_CACHE_ITEMS = "mwl_scp_cache_items"
SCP_CACHE_RESYNC_AGE = "mwl_scp_cache_resync_age_seconds"
HTTP_REQUESTS = "mwl_http_requests_total"
HTTP_DURATION = "mwl_http_request_duration_seconds"
HOUSEKEEPING_DELETIONS = "mwl_housekeeping_deletions_total"
OUTBOX_BACKLOG = "mwl_outbox_backlog"

# Label values are closed sets, so that a misbehaving peer cannot blow up the series count.
FIND_STATUSES = (
    "success",
    "cancelled",
    "refused",
    "out_of_resources",
    "identifier_does_not_match",
    "unable_to_process",
    "failure",
)
REFUSAL_REASONS = ("called_aet", "calling_aet_host", "too_many_associations", "other")
DELETION_REASONS = (REASON_STUDY_STABLE, REASON_EXPIRED, REASON_FILE_REMOVED, "other")

# C-FIND final statuses (PS3.4 C.4.1.1.4 and K.4.1.1.4) and the label each one is counted under.
_FIND_STATUS_LABELS = {
    0x0000: "success",
    0xFE00: "cancelled",
    0xC003: "refused",  # this server's "calling AE title not allowed to query"
    0xA700: "out_of_resources",
    0xA900: "identifier_does_not_match",
}

# Seconds: a cached query answers in about a millisecond, a cold one against PostgreSQL in tens.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ANSWER_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def find_status_label(status: int) -> str:
    """The `status` label of a C-FIND's final status code."""
    if status in _FIND_STATUS_LABELS:
        return _FIND_STATUS_LABELS[status]
    if status & 0xF000 == 0xC000:
        return "unable_to_process"
    return "failure"


def _closed(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"


def _registry(service: str) -> CollectorRegistry:
    """A registry of one service's own (no global state), with process, platform and GC metrics."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    try:
        version = metadata.version("mwl-server")
    except metadata.PackageNotFoundError:
        version = "unknown"
    build = Info(BUILD_INFO.removesuffix("_info"), "Service name and version", registry=registry)
    build.info({"service": service, "version": version})
    return registry


def _outbox_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        OUTBOX_BACKLOG,
        "Events written to the outbox and not yet published to NATS JetStream (refreshed at each scrape)",
        registry=registry,
    )


async def refresh_outbox_backlog(gauge: Gauge, sessions: async_sessionmaker[AsyncSession]) -> None:
    """Count the outbox rows now: a scrape hook, so the gauge is never older than the scrape."""
    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(OutboxEvent))
    gauge.set(count or 0)


class ScpMetrics:
    """The C-FIND SCP's metrics. Methods are thread-safe (prometheus_client locks each value)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = _registry("scp")
        self._clock = clock
        self._started = clock()
        self._last_resync: float | None = None
        self.find_requests = Counter(
            CFIND_REQUESTS.removesuffix("_total"),
            "Modality Worklist C-FIND operations, by final status",
            ["status"],
            registry=self.registry,
        )
        self.find_duration = Histogram(
            CFIND_DURATION,
            "Seconds from C-FIND request to final status",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.find_answers = Histogram(
            CFIND_ANSWERS,
            "Matches (pending answers) sent per C-FIND",
            buckets=_ANSWER_BUCKETS,
            registry=self.registry,
        )
        self.find_cancellations = Counter(
            CFIND_CANCELLATIONS.removesuffix("_total"),
            "C-FIND operations stopped by a C-CANCEL from the modality",
            registry=self.registry,
        )
        self.associations_refused = Counter(
            ASSOCIATIONS_REFUSED.removesuffix("_total"),
            "Associations rejected (A-ASSOCIATE-RJ), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.cache_items = Gauge(
            SCP_CACHE_ITEMS, "Parsed worklist items held in the SCP cache", registry=self.registry
        )
        self.cache_resync_age = Gauge(
            SCP_CACHE_RESYNC_AGE,
            "Seconds since the SCP cache last resynchronised with the store (since start until the first)",
            registry=self.registry,
        )
        self.cache_resync_age.set_function(self._resync_age)
        for status in FIND_STATUSES:  # present at 0 from the start, so rate() sees the first query
            self.find_requests.labels(status=status)
        for reason in REFUSAL_REASONS:
            self.associations_refused.labels(reason=reason)

    def observe_find(self, status: int, seconds: float, answers: int) -> None:
        """Count one finished C-FIND: its final status, how long it took and how many matches it sent."""
        self.find_requests.labels(status=find_status_label(status)).inc()
        self.find_duration.observe(seconds)
        self.find_answers.observe(answers)
        if status == 0xFE00:
            self.find_cancellations.inc()

    def association_refused(self, reason: str) -> None:
        """Count one rejected association; `reason` is one of REFUSAL_REASONS (anything else: "other")."""
        self.associations_refused.labels(reason=_closed(reason, REFUSAL_REASONS)).inc()

    def track_cache_size(self, size: Callable[[], int]) -> None:
        """Read the cache size at each scrape (e.g. `lambda: len(cache)`)."""
        self.cache_items.set_function(lambda: float(size()))

    def cache_resynced(self) -> None:
        """Record a successful resync of the cache with the store."""
        self._last_resync = self._clock()

    def _resync_age(self) -> float:
        return self._clock() - (self._last_resync if self._last_resync is not None else self._started)


class ApiMetrics:
    """The REST API's metrics: requests by route and status, latency, and the outbox backlog."""

    def __init__(self) -> None:
        self.registry = _registry("api")
        self.http_requests = Counter(
            HTTP_REQUESTS.removesuffix("_total"),
            "REST requests, by method, route template and HTTP status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            HTTP_DURATION,
            "Seconds to answer a REST request, by method and route template",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=self.registry,
        )
        self.outbox_backlog = _outbox_gauge(self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method=method, route=route, status=str(status)).inc()
        self.http_duration.labels(method=method, route=route).observe(seconds)


class HousekeeperMetrics:
    """The housekeeper's metrics: deletions by reason and the outbox backlog."""

    def __init__(self) -> None:
        self.registry = _registry("housekeeper")
        self.deletions = Counter(
            HOUSEKEEPING_DELETIONS.removesuffix("_total"),
            "Worklist items deleted by the housekeeper, by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in DELETION_REASONS:
            self.deletions.labels(reason=reason)
        self.outbox_backlog = _outbox_gauge(self.registry)

    def deleted(self, reason: str, count: int = 1) -> None:
        """Count deletions; `reason` as in worklist.deleted events (study-stable, expired, file-removed)."""
        if count:
            self.deletions.labels(reason=_closed(reason, DELETION_REASONS)).inc(count)
