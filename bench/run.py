"""One bench run: for each N, our SCP then each peer on the same items; REST figures; the report."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from bench import data, gate, load, ours, peers, procstat, queries, report, rest
from bench.processes import Service
from bench.settings import BenchSettings

logger = logging.getLogger(__name__)


@dataclass
class Results:
    """Everything measured, as plain data for the JSON report."""

    settings: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    gate: list[dict[str, Any]] = field(default_factory=list)
    servers: list[dict[str, Any]] = field(default_factory=list)  # start-up, memory per server and N
    loads: list[dict[str, Any]] = field(default_factory=list)  # bulk load rates
    rest_create: list[dict[str, Any]] = field(default_factory=list)
    visible: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _cells(
    results: Results,
    server: str,
    n: int,
    port: int,
    qs: list[queries.Query],
    concurrency: tuple[int, ...],
    cfg: BenchSettings,
    cpu: Callable[[], float],
    store_cpu: Callable[[], float] | None = None,
) -> None:
    for query in qs:
        identifiers = [(i.implicit, i.explicit) for i in query.instances]
        for c in concurrency:
            if query.name == queries.UNIVERSAL and c > cfg.universal_concurrency_max:
                continue  # 32 modalities asking for everything at once is no realistic load
            cell = load.run_cell(
                port,
                identifiers,
                c,
                cfg.duration,
                cfg.queries,
                cpu,
                cell_timeout=cfg.cell_timeout,
                store_cpu=store_cpu,
            )
            logger.info(
                "%-8s N=%-6d c=%-2d %-13s %8.1f q/s  p50 %7.1f ms  p95 %7.1f ms  cpu %7.2f ms/q"
                "  (%d queries%s)",
                server,
                n,
                c,
                query.name,
                cell.qps,
                cell.p50_ms,
                cell.p95_ms,
                cell.server_cpu_ms_per_query,
                cell.queries,
                (f", {cell.errors} errors: {cell.first_error}" if cell.errors else "")
                + (f", {cell.unfinished} unfinished" if cell.unfinished else ""),
            )
            results.cells.append(
                {"server": server, "n": n, "concurrency": c, "query": query.name, **cell.as_dict()}
            )


def _gate(
    results: Results, server: str, n: int, port: int, qs: list[queries.Query], cfg: BenchSettings
) -> None:
    rows = gate.check(server, port, qs, variants=cfg.gate_variants)
    bad = [r for r in rows if r.verdict == "MISMATCH"]
    logger.info("%s N=%d gate: %d queries, %d mismatch(es)", server, n, len(rows), len(bad))
    for row in bad:
        logger.warning("gate mismatch %s %s %s: %s", server, row.query, row.keys, row.note)
    results.gate.extend({"n": n, **row.as_dict()} for row in rows)


def _ours(
    results: Results,
    cfg: BenchSettings,
    wl: data.Worklists,
    qs: list[queries.Query],
    stores: ours.Stores,
    nats_url: str,
    logs: Path,
) -> None:
    db = stores.new(cfg.store)
    rate = ours.bulk_load(db.url, wl)
    results.loads.append({"n": wl.n, "store": db.kind, "items_per_s": rate})
    logger.info("bulk-loaded %d items into %s at %.0f items/s", wl.n, db.kind, rate)
    scp = ours.start_scp(db, nats_url, logs)
    try:
        _gate(results, "ours", wl.n, scp.port, qs, cfg)
        _cells(
            results, "ours", wl.n, scp.port, qs, cfg.concurrency, cfg, scp.cpu_seconds, scp.store_cpu_seconds
        )
        scp_rss = scp.rss_mb()
        api = ours.start_api(db, nats_url, logs)
        try:
            visible = rest.create_to_visible(api.port, scp.port, wl.items, samples=cfg.visible_samples)
            results.visible.append({"n": wl.n, "store": db.kind, **visible.as_dict()})
            logger.info(
                "create-to-visible at N=%d: p50 %.1f ms, p95 %.1f ms", wl.n, visible.p50_ms, visible.p95_ms
            )
            results.servers.append(
                {
                    "server": "ours-api",
                    "n": wl.n,
                    "startup_s": api.startup_s,
                    "rss_mb": api.rss_mb(),
                    "peak_rss_mb": _peak(api.pids),
                    "processes": 1,
                }
            )
        finally:
            api.stop()
        results.servers.append(
            {
                "server": "ours",
                "n": wl.n,
                "startup_s": scp.startup_s,
                "rss_mb": scp_rss,
                "peak_rss_mb": _peak(scp.pids),
                "processes": len(scp.pids),  # worker 0 and the workers it started
            }
        )
    finally:
        scp.stop()


def _peak(pids: list[int]) -> float:
    from bench import procstat

    return procstat.peak_rss_mb(pids)


def _peer(
    results: Results,
    cfg: BenchSettings,
    name: str,
    wl: data.Worklists,
    qs: list[queries.Query],
    work: Path,
    logs: Path,
) -> None:
    problem = peers.available(name)
    if problem:
        results.skipped.append(f"{name}: {problem}")
        logger.warning("skipping %s: %s", name, problem)
        return
    root = peers.write_folder(wl, cfg.cache_dir)
    service = (
        peers.start_wlmscpfs(root, logs) if name == "wlmscpfs" else peers.start_orthanc(root, work, logs)
    )
    try:
        _gate(results, name, wl.n, service.port, qs, cfg)
        concurrency = tuple(c for c in cfg.concurrency if c <= cfg.peer_concurrency_max)
        _cells(results, name, wl.n, service.port, qs, concurrency, cfg, service.cpu_seconds)
        results.servers.append(
            {
                "server": name,
                "n": wl.n,
                "startup_s": service.startup_s,
                "rss_mb": service.rss_mb(),
                "peak_rss_mb": _peak(service.pids),
                "processes": 1,
            }
        )
    finally:
        service.stop()


def _rest(results: Results, cfg: BenchSettings, stores: ours.Stores, nats_url: str, logs: Path) -> None:
    items = data.generate(cfg.rest_items, cfg.seed + 1, date.today())
    for kind in cfg.rest_stores:
        db = stores.new(kind)
        api = ours.start_api(db, nats_url, logs)
        try:
            created = rest.create_throughput(
                kind,
                api.port,
                items,
                concurrency=cfg.rest_concurrency,
                duration=cfg.rest_duration,
                limit=cfg.rest_items,
                cpu_seconds=partial(_api_cpu_seconds, api, db),
            )
        finally:
            api.stop()
        logger.info(
            "REST create into %s: %.0f items/s (%d items, %d errors)",
            kind,
            created.items_per_s,
            created.items,
            created.errors,
        )
        results.rest_create.append(created.as_dict())


def _api_cpu_seconds(api: Service, db: ours.Store) -> float:
    """The API's CPU and its store server's (PostgreSQL's backends write the items)."""
    return api.cpu_seconds() + procstat.cpu_seconds(db.pids())


def run(cfg: BenchSettings) -> Results:
    results = Results(settings=report.settings_dict(cfg))
    results.machine = report.machine()
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mwl-bench-"))
    logs = cfg.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    stores = ours.Stores(work)
    began = time.monotonic()
    nats = ours.start_nats(work, logs)
    try:
        for n in cfg.sizes:
            wl = data.load(n, cfg.seed, cfg.cache_dir)
            qs = queries.build(wl, cfg.seed, cfg.variants)
            _ours(results, cfg, wl, qs, stores, f"nats://127.0.0.1:{nats.port}", logs)
            for name in cfg.peers:
                _peer(results, cfg, name, wl, qs, work, logs)
        _rest(results, cfg, stores, f"nats://127.0.0.1:{nats.port}", logs)
    finally:
        nats.stop()
        stores.close()
        shutil.rmtree(work, ignore_errors=True)
    results.machine["bench_seconds"] = round(time.monotonic() - began, 1)
    return results
