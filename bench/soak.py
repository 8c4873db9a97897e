"""`python -m bench.soak` (`make soak`): a bounded load test of the whole server, checked for correctness.

Embedded PostgreSQL (or SQLite), NATS, and our API, SCP and housekeeper as real processes on loopback (a
private network namespace of its own when run as root); a generated set of worklists bulk-loaded; then for
--duration seconds --modalities concurrent modalities (bench.soak_modalities) query while a RIS bridge
(bench.soak_ris) creates, updates, deletes and reports studies over REST. It fails (exit status 1) when any
association failed, any count was wrong, any REST request failed, a change did not reach C-FIND, the final
store disagrees, or a service's memory grew too much.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import data, netns, ours, procstat, report, soak_report
from bench.processes import Service, free_port
from bench.soak_final import Verdict, final_checks
from bench.soak_modalities import Modalities, plan
from bench.soak_ris import Bridge
from bench.soak_stats import cfind_figures, change_figures, rest_figures, rss_figures

logger = logging.getLogger("bench.soak")

# Seconds a modality may take past the soak's end (a C-FIND under way) before it is stopped.
COLLECT_GRACE = 60.0
RSS_PERIOD = 1.0


@dataclass(frozen=True)
class SoakSettings:
    duration: float
    modalities: int
    items: int
    database: str
    rest_rate: float
    housekeeping_interval: float
    max_rss_growth_mb: float
    netns: bool
    seed: int
    out: Path
    cache_dir: Path
    command: str


def parse(argv: list[str]) -> SoakSettings:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--modalities", type=int, default=32, help="concurrent modalities (default 32)")
    p.add_argument("--items", type=int, default=10000, help="worklist items loaded first (default 10000)")
    p.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    p.add_argument("--rest-rate", type=float, default=20.0, help="RIS bridge operations per second (20)")
    p.add_argument(
        "--housekeeping-interval", type=float, default=10.0, help="seconds between passes and resyncs (10)"
    )
    p.add_argument(
        "--max-rss-growth-mb", type=float, default=64.0, help="largest growth of a service's RSS (64 MB)"
    )
    p.add_argument(
        "--no-netns",
        action="store_true",
        help="stay in this network namespace (by default, as root, the soak takes a private loopback)",
    )
    p.add_argument("--seed", type=int, default=20251128)
    p.add_argument("--out", type=Path, default=Path("results"), help="report folder (default results/)")
    p.add_argument("--cache-dir", type=Path, default=None, help="generated data cache (default <out>/cache)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.modalities < 1 or args.items < 1 or args.rest_rate <= 0:
        p.error("--duration, --modalities, --items and --rest-rate must be positive")
    return SoakSettings(
        duration=args.duration,
        modalities=args.modalities,
        items=args.items,
        database=args.database,
        rest_rate=args.rest_rate,
        housekeeping_interval=args.housekeeping_interval,
        max_rss_growth_mb=args.max_rss_growth_mb,
        netns=not args.no_netns,
        seed=args.seed,
        out=args.out,
        cache_dir=args.cache_dir or args.out / "cache",
        command=" ".join(["python -m bench.soak", shlex.join(argv)]).strip(),
    )


def start_housekeeper(db: ours.Store, nats_url: str, logs: Path, **options: str) -> Service:
    health = free_port()
    env = ours.service_env(
        MWL_DATABASE_URL=db.url,
        MWL_NATS_URL=nats_url,
        MWL_BIND_ADDRESS="127.0.0.1",
        MWL_HOUSEKEEPER_HEALTH_PORT=str(health),
        **options,
    )
    command = [sys.executable, "-m", "services.housekeeper"]
    log = logs / f"housekeeper-{db.kind}.log"
    return Service.start("housekeeper", command, health, log, env=env, cwd=ours.ROOT, timeout=120)


@dataclass
class Fleet:
    """The services under test, by name, for memory readings."""

    scp: ours.OurScp
    api: Service
    housekeeper: Service
    nats: Service

    def rss(self) -> dict[str, float]:
        return {"scp": self.scp.rss_mb(), "api": self.api.rss_mb(), "housekeeper": self.housekeeper.rss_mb()}

    def cpu_seconds(self) -> float:
        """CPU of every server process, PostgreSQL's included."""
        services = (self.api, self.housekeeper, self.nats)
        return self.scp.cpu_seconds() + sum(service.cpu_seconds() for service in services)


def listen_overflows() -> int:
    """TCP connections this network namespace dropped because a listen queue was full (TcpExt)."""
    with open("/proc/net/netstat", encoding="ascii") as netstat:
        lines = netstat.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def _own_cpu_seconds() -> float:
    """This process's CPU and its reaped children's (the modalities, once joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Machine:
    """CPU of the machine while the soak runs, to tell the servers' and the clients' from other work's."""

    began: float = field(default_factory=time.monotonic)
    busy: float = field(default_factory=procstat.machine_busy_seconds)
    own: float = field(default_factory=_own_cpu_seconds)

    def figures(self, fleet: Fleet, servers_before: float) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.began, 1e-9)
        servers = fleet.cpu_seconds() - servers_before
        clients = _own_cpu_seconds() - self.own
        busy = procstat.machine_busy_seconds() - self.busy
        return {
            "server_cores": round(servers / elapsed, 2),
            "client_cores": round(clients / elapsed, 2),
            "other_cores": round(max(busy - servers - clients, 0.0) / elapsed, 2),
            "load_average_end": round(os.getloadavg()[0], 2),
        }


async def _sample_rss(fleet: Fleet, began: float, into: list[dict[str, float]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        into.append({"t": round(time.monotonic() - began, 1), **fleet.rss()})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_PERIOD)


async def _soak(
    cfg: SoakSettings, wl: data.Worklists, fleet: Fleet, modalities: Modalities
) -> dict[str, Any]:
    templates = data.generate(max(100, cfg.items // 10), cfg.seed + 7, wl.today)
    bridge = Bridge(
        fleet.api.port, fleet.scp.port, templates, cfg.seed, wl.today, modalities.count_begun_create
    )
    rss: list[dict[str, float]] = []
    stop = asyncio.Event()
    servers_before = fleet.cpu_seconds()
    overflows = listen_overflows()
    machine = Machine()
    began = time.monotonic()
    modalities.start()
    sampler = asyncio.create_task(_sample_rss(fleet, began, rss, stop))
    await bridge.run(cfg.duration, cfg.rest_rate)
    samples, unfinished = await asyncio.to_thread(modalities.collect, COLLECT_GRACE)
    stop.set()
    await sampler
    rss.append({"t": round(time.monotonic() - began, 1), **fleet.rss()})
    cpu = machine.figures(fleet, servers_before)
    cpu["listen_overflows"] = listen_overflows() - overflows
    logger.info("load over after %.1f s; final checks", time.monotonic() - began)
    verdicts = await final_checks(bridge, wl, fleet.api.port, fleet.scp.port)
    cfind = cfind_figures(samples, unfinished, cfg.modalities)
    rest = rest_figures(bridge)
    changes = change_figures(bridge)
    memory = rss_figures(rss)
    verdicts = _load_verdicts(cfind, rest, changes, memory, cfg) + verdicts
    return {
        "cfind": cfind,
        "rest": rest,
        "changes": changes,
        "memory": memory,
        "rss_timeline": rss,
        "cpu": cpu,
        "checks": [v.as_dict() for v in verdicts],
        "passed": all(v.passed for v in verdicts),
    }


def _load_verdicts(
    cfind: dict[str, Any],
    rest: dict[str, Any],
    changes: dict[str, Any],
    memory: dict[str, Any],
    cfg: SoakSettings,
) -> list[Verdict]:
    failed = cfind["failed"] + changes["failed_associations"]
    growth = {name: m["growth_mb"] for name, m in memory.items()}
    too_much = {name: g for name, g in growth.items() if g > cfg.max_rss_growth_mb}
    return [
        Verdict(
            "0 failed associations (all accepted, every C-FIND final status 0x0000)",
            failed == 0,
            f"{failed} failed of {cfind['associations'] + changes['associations']:,}"
            + (f"; first: {cfind['first_error'] or changes['first_error']}" if failed else ""),
        ),
        Verdict(
            "every modality's answer count right",
            cfind["wrong_counts"] == 0,
            f"{cfind['wrong_counts']} wrong"
            + (f"; first: {cfind['first_wrong']}" if cfind["wrong_counts"] else ""),
        ),
        Verdict(
            "every modality queried through the soak",
            not cfind["unfinished_modalities"] and cfind["idle_modalities"] == 0,
            f"{cfg.modalities} modalities; cut at the end: {cfind['unfinished_modalities'] or 'none'}",
        ),
        Verdict(
            "0 REST errors",
            rest["errors"] == 0,
            f"{rest['errors']} of {rest['requests']:,}"
            + (f"; first: {rest['first_error']}" if rest["errors"] else ""),
        ),
        Verdict(
            "every REST change seen by C-FIND in time",
            changes["late"] == 0,
            f"{changes['checked']:,} changes checked; {changes['late']} not seen in time"
            + (f"; first: {changes['first_late']}" if changes["late"] else ""),
        ),
        Verdict(
            f"no service's RSS grew more than {cfg.max_rss_growth_mb:.0f} MB",
            not too_much,
            ", ".join(f"{name} {g:+.1f} MB" for name, g in growth.items()),
        ),
    ]


def run(cfg: SoakSettings) -> dict[str, Any]:
    document: dict[str, Any] = {"settings": soak_report.settings_dict(cfg), "machine": report.machine()}
    cfg.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mwl-soak-"))
    logs = cfg.out / "soak-logs"
    shutil.rmtree(logs, ignore_errors=True)
    stores = ours.Stores(work)
    started: list[Service | ours.OurScp] = []
    began = time.monotonic()
    try:
        nats = ours.start_nats(work, logs)
        started.append(nats)
        nats_url = f"nats://127.0.0.1:{nats.port}"
        db = stores.new(cfg.database)
        wl = data.load(cfg.items, cfg.seed, cfg.cache_dir)
        document["bulk_load_items_per_s"] = round(ours.bulk_load(db.url, wl))
        options = {"MWL_WORKLISTS_HOUSEKEEPING_INTERVAL": str(cfg.housekeeping_interval)}
        scp = ours.start_scp(db, nats_url, logs, name="scp", **options)
        started.append(scp)
        api = ours.start_api(db, nats_url, logs, **options)
        started.append(api)
        housekeeper = start_housekeeper(db, nats_url, logs, **options)
        started.append(housekeeper)
        fleet = Fleet(scp, api, housekeeper, nats)
        # Forked before asyncio starts any thread.
        modalities = Modalities(plan(wl, cfg.modalities, cfg.seed), scp.port, cfg.duration)
        logger.info(
            "%d items in %s; %d modalities and the RIS bridge (%.0f op/s) for %.0f s",
            wl.n, db.kind, cfg.modalities, cfg.rest_rate, cfg.duration,
        )  # fmt: skip
        document.update(asyncio.run(_soak(cfg, wl, fleet, modalities)))
    finally:
        for service in reversed(started):
            service.stop()
        stores.close()
        shutil.rmtree(work, ignore_errors=True)
    document["machine"]["soak_seconds"] = round(time.monotonic() - began, 1)
    return document


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if cfg.netns and os.geteuid() == 0:
        # Its own loopback: no port clash with other work, and the TCP counters are the soak's alone.
        try:
            netns.enter_private_network()
        except netns.NamespaceUnavailable as exc:
            logger.warning("%s; staying in this network namespace", exc)
    document = run(cfg)
    markdown, json_path = soak_report.write(document, cfg.out)
    sys.stdout.write(soak_report.summary(document) + f"\nreport: {markdown} and {json_path}\n")
    return 0 if document["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
