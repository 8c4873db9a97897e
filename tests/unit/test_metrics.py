"""Metrics: what each service's registry exposes, and how observations move it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from shared import metrics
from shared.db import create_async_db_engine, session_factory
from shared.metrics import (
    ApiMetrics,
    HousekeeperMetrics,
    ScpMetrics,
    find_status_label,
    refresh_outbox_backlog,
)
from shared.migrate import upgrade
from shared.models import OutboxEvent

README = Path(__file__).resolve().parents[2] / "README.md"
METRIC_NAMES = {
    value
    for name, value in vars(metrics).items()
    if name.isupper() and isinstance(value, str) and value.startswith("mwl_")
}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    sample = registry.get_sample_value(name, labels or None)
    assert sample is not None, f"{name}{labels} is not exposed"
    return sample


def exposed(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_each_service_exposes_its_metrics_and_only_its_own() -> None:
    scp, api, housekeeper = ScpMetrics(), ApiMetrics(), HousekeeperMetrics()
    scp_text, api_text, hk_text = exposed(scp.registry), exposed(api.registry), exposed(housekeeper.registry)
    for name in ("mwl_cfind_requests_total", "mwl_cfind_duration_seconds", "mwl_cfind_answers",
                 "mwl_cfind_cancellations_total", "mwl_associations_refused_total", "mwl_scp_cache_items",
                 "mwl_scp_cache_resync_age_seconds"):  # fmt: skip
        assert name in scp_text and name not in api_text
    assert "mwl_http_requests_total" in api_text and "mwl_outbox_backlog" in api_text
    assert "mwl_housekeeping_deletions_total" in hk_text and "mwl_outbox_backlog" in hk_text
    for text, service in ((scp_text, "scp"), (api_text, "api"), (hk_text, "housekeeper")):
        assert f'mwl_build_info{{service="{service}"' in text
        assert "process_cpu_seconds_total" in text or "python_info" in text


def test_registries_are_independent() -> None:
    first, second = ScpMetrics(), ScpMetrics()
    first.observe_find(0x0000, 0.01, 3)
    assert value(second.registry, "mwl_cfind_requests_total", status="success") == 0


def test_a_cfind_counts_its_status_latency_and_answers() -> None:
    scp = ScpMetrics()
    scp.observe_find(0x0000, 0.004, 3)
    scp.observe_find(0xFE00, 0.2, 1)
    scp.observe_find(0xC001, 1.5, 0)
    registry = scp.registry
    assert value(registry, "mwl_cfind_requests_total", status="success") == 1
    assert value(registry, "mwl_cfind_requests_total", status="cancelled") == 1
    assert value(registry, "mwl_cfind_requests_total", status="unable_to_process") == 1
    assert value(registry, "mwl_cfind_cancellations_total") == 1
    assert value(registry, "mwl_cfind_duration_seconds_count") == 3
    assert value(registry, "mwl_cfind_duration_seconds_bucket", le="0.005") == 1
    assert value(registry, "mwl_cfind_answers_sum") == 4
    assert value(registry, "mwl_cfind_answers_bucket", le="0.0") == 1


def test_status_labels_are_a_closed_set() -> None:
    assert find_status_label(0x0000) == "success"
    assert find_status_label(0xFE00) == "cancelled"
    assert find_status_label(0xC003) == "refused"
    assert find_status_label(0xA700) == "out_of_resources"
    assert find_status_label(0xA900) == "identifier_does_not_match"
    assert find_status_label(0xC002) == "unable_to_process"
    assert find_status_label(0x0122) == "failure"
    assert {find_status_label(code) for code in range(0x10000)} <= set(metrics.FIND_STATUSES)


def test_refusals_and_deletions_fold_unknown_reasons_into_other() -> None:
    scp = ScpMetrics()
    scp.association_refused("called_aet")
    scp.association_refused("a reason made up by a peer")
    assert value(scp.registry, "mwl_associations_refused_total", reason="called_aet") == 1
    assert value(scp.registry, "mwl_associations_refused_total", reason="other") == 1
    housekeeper = HousekeeperMetrics()
    housekeeper.deleted("study-stable", 2)
    housekeeper.deleted("expired")
    housekeeper.deleted("bogus")
    housekeeper.deleted("expired", 0)
    registry = housekeeper.registry
    assert value(registry, "mwl_housekeeping_deletions_total", reason="study-stable") == 2
    assert value(registry, "mwl_housekeeping_deletions_total", reason="expired") == 1
    assert value(registry, "mwl_housekeeping_deletions_total", reason="other") == 1


def test_cache_gauges_are_read_at_scrape_time() -> None:
    now = [100.0]
    scp = ScpMetrics(clock=lambda: now[0])
    items: dict[str, object] = {}
    scp.track_cache_size(lambda: len(items))
    now[0] = 130.0
    assert value(scp.registry, "mwl_scp_cache_resync_age_seconds") == 30  # since start: never resynced yet
    items.update(a=1, b=2)
    scp.cache_resynced()
    now[0] = 135.0
    assert value(scp.registry, "mwl_scp_cache_items") == 2
    assert value(scp.registry, "mwl_scp_cache_resync_age_seconds") == 5


def test_rest_requests_count_by_method_route_and_status() -> None:
    api = ApiMetrics()
    api.observe_request("GET", "/worklists/{id}", 404, 0.002)
    api.observe_request("GET", "/worklists/{id}", 404, 0.003)
    labels = {"method": "GET", "route": "/worklists/{id}"}
    assert value(api.registry, "mwl_http_requests_total", status="404", **labels) == 2
    assert value(api.registry, "mwl_http_request_duration_seconds_count", **labels) == 2


async def test_outbox_backlog_counts_unpublished_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(url)
    engine = create_async_db_engine(url)
    sessions = session_factory(engine)
    api = ApiMetrics()
    try:
        await refresh_outbox_backlog(api.outbox_backlog, sessions)
        assert value(api.registry, "mwl_outbox_backlog") == 0
        async with sessions() as session, session.begin():
            for _ in range(3):
                session.add(
                    OutboxEvent(
                        event_id=str(uuid.uuid4()),
                        subject="worklist.created",
                        payload="{}",
                        created_at=datetime.now(UTC),
                    )
                )
        await refresh_outbox_backlog(api.outbox_backlog, sessions)
        assert value(api.registry, "mwl_outbox_backlog") == 3
    finally:
        await engine.dispose()


def test_the_monitoring_section_lists_every_metric() -> None:
    text = README.read_text(encoding="utf-8")
    missing = {name for name in METRIC_NAMES if f"`{name}`" not in text}
    assert not missing
