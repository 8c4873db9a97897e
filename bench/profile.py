"""`python -m bench.profile`: our SCP under the bench's load, sampled by py-spy (a dev tool).

Starts NATS, a store with N generated items and the SCP as in `make bench`, drives one query kind at one
concurrency for a while, and writes py-spy's output (speedscope JSON and a flat top list) under --out.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from bench import data, load, netns, ours, queries, rest

logger = logging.getLogger("bench.profile")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--service", choices=("scp", "api"), default="scp", help="scp: C-FIND; api: REST create")
    p.add_argument("--n", type=int, default=1000, help="items in the store (scp)")
    p.add_argument("--query", choices=queries.NAMES, default="patient_id")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--seed", type=int, default=20251128)
    p.add_argument("--out", type=Path, default=Path("results/profile"))
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        logger.error("py-spy is not installed: pip install py-spy")
        return 2
    netns.enter_private_network()
    work = Path(tempfile.mkdtemp(prefix="mwl-profile-"))
    args.out.mkdir(parents=True, exist_ok=True)
    stores = ours.Stores(work)
    nats = ours.start_nats(work, args.out / "logs")
    try:
        db = stores.new(args.store)
        nats_url = f"nats://127.0.0.1:{nats.port}"
        if args.service == "scp":
            _profile_scp(args, spy, db, nats_url)
        else:
            _profile_api(args, spy, db, nats_url)
    finally:
        nats.stop()
        stores.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _recorder(args: argparse.Namespace, spy: str, pid: int, stem: Path) -> subprocess.Popen[bytes]:
    command = [spy, "record", "--pid", str(pid), "--rate", str(args.rate)]
    command += ["--duration", str(int(args.seconds) + 2), "--format", "speedscope"]
    command += ["--output", f"{stem}.speedscope.json", "--threads", "--gil"]
    if args.native:
        command.append("--native")
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    return recorder


def _report(stem: Path) -> None:
    logger.info("profile: %s.speedscope.json (open in https://www.speedscope.app)", stem)
    summary = summarize(Path(f"{stem}.speedscope.json"))
    Path(f"{stem}.top.txt").write_text(summary + "\n")
    print(summary)


def _profile_scp(args: argparse.Namespace, spy: str, db: ours.Store, nats_url: str) -> None:
    wl = data.load(args.n, args.seed, args.out.parent / "cache")
    query = next(q for q in queries.build(wl, args.seed) if q.name == args.query)
    ours.bulk_load(db.url, wl)
    scp = ours.start_scp(db, nats_url, args.out / "logs")
    try:
        identifiers = [(i.implicit, i.explicit) for i in query.instances]
        load.run_cell(scp.port, identifiers, 1, 3.0, 100, scp.cpu_seconds)  # warm the cache
        stem = args.out / f"scp-{args.store}-{args.n}-{args.query}-c{args.concurrency}"
        recorder = _recorder(args, spy, scp.services[0].process.pid, stem)
        cell = load.run_cell(scp.port, identifiers, args.concurrency, args.seconds, 10**6, scp.cpu_seconds)
        recorder.wait(timeout=args.seconds + 60)
        logger.info(
            "%s c=%d: %.1f q/s, p50 %.1f ms, p95 %.1f ms, server CPU %.2f ms/query, %.1f answers",
            args.query,
            args.concurrency,
            cell.qps,
            cell.p50_ms,
            cell.p95_ms,
            cell.server_cpu_ms_per_query,
            cell.answers_mean,
        )
        _report(stem)
    finally:
        scp.stop()


def _profile_api(args: argparse.Namespace, spy: str, db: ours.Store, nats_url: str) -> None:
    api = ours.start_api(db, nats_url, args.out / "logs")
    try:
        items = data.generate(20000, args.seed + 2, date.today())
        rest.create_throughput(db.kind, api.port, items[:100], concurrency=4, duration=5, limit=100)
        stem = args.out / f"api-{args.store}-create-c{args.concurrency}"
        recorder = _recorder(args, spy, api.process.pid, stem)
        created = rest.create_throughput(
            db.kind, api.port, items[100:], concurrency=args.concurrency, duration=args.seconds, limit=20000
        )
        recorder.wait(timeout=args.seconds + 60)
        logger.info("REST create: %.0f items/s, p50 %.1f ms", created.items_per_s, created.p50_ms)
        _report(stem)
    finally:
        api.stop()


def _package(path: str) -> str:
    """site-packages/<package>/..., or our top-level folder (services, shared), or the stdlib module."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    for top in ("services", "shared", "bench"):
        if top in parts:
            return f"{top}/" + "/".join(parts[parts.index(top) + 1 : parts.index(top) + 2])
    return f"stdlib:{Path(path).stem}" if path else "?"


# Leaf functions of a waiting thread: py-spy may still sample them while the thread holds the GIL briefly.
IDLE = frozenset({"select", "sleep", "wait", "accept", "_recv_into", "poll", "recv", "get"})


def summarize(path: Path, top: int = 40, skip_idle: bool = True) -> str:
    """Inclusive and self share of samples per function, over all threads, from a py-spy speedscope file.

    Recorded with --gil: only the thread holding the GIL is sampled, so shares are shares of Python CPU.
    """
    import json
    from collections import Counter

    document = json.loads(path.read_text())
    frames = document["shared"]["frames"]
    inclusive: Counter[int] = Counter()
    own: Counter[int] = Counter()
    total = 0
    for profile in document["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            if not stack:
                continue
            leaf = frames[stack[-1]]["name"]
            if skip_idle and leaf.rsplit(".", 1)[-1] in IDLE:
                continue  # an idle thread, not work
            total += weight
            own[stack[-1]] += weight
            for index in set(stack):
                inclusive[index] += weight
    lines = [
        f"{total:.1f} busy samples (seconds holding the GIL)",
        "",
        "self% by package of the running frame",
    ]
    packages: Counter[str] = Counter()
    for index, weight in own.items():
        packages[_package(frames[index].get("file", ""))] += weight
    lines += [f"{100 * weight / total:5.1f}  {name}" for name, weight in packages.most_common(12)]
    lines += ["", "incl%  self%  function (file:line)"]
    for index, weight in inclusive.most_common(top):
        frame = frames[index]
        where = f"{Path(frame.get('file', '')).name}:{frame.get('line', '')}"
        lines.append(
            f"{100 * weight / total:5.1f}  {100 * own[index] / total:5.1f}  {frame['name']} ({where})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
