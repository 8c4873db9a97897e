"""The load driver: `concurrency` client processes, each one association per query, bounded in time and count.

Processes rather than threads, so that at 8 or 32 concurrent modalities the client does not serialise on the
GIL; the lean client (bench.dimse) costs well under a millisecond of CPU per query.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench import dimse, procstat

Identifier = tuple[bytes, bytes]  # (implicit VR LE, explicit VR LE) encodings of one query


@dataclass
class CellResult:
    queries: int
    errors: int
    unfinished: int
    elapsed_s: float
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    answers_mean: float
    server_cpu_ms_per_query: float
    store_cpu_ms_per_query: float  # the part of server CPU spent in the store's processes (PostgreSQL)
    client_cpu_ms_per_query: float
    background_cores: float
    first_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples it reports one that was measured)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(share * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def _worker(
    index: int,
    port: int,
    identifiers: Sequence[Identifier],
    go: Any,
    started: Any,
    duration: float,
    max_queries: int,
    results: Any,
    called: str,
) -> None:
    """One modality: queries back to back; each sample is sent as it completes (a cell may be cut short)."""
    go.wait()
    deadline = time.monotonic() + duration
    cpu0 = os.times()
    turn, done = index, 0
    while True:
        with started.get_lock():
            if started.value >= max_queries or (done and time.monotonic() >= deadline):
                break
            started.value += 1
        implicit, explicit = identifiers[turn % len(identifiers)]
        turn += 1
        began = time.monotonic()
        try:
            result = dimse.find("127.0.0.1", port, implicit, explicit, called=called)
            error = "" if result.status == 0 else f"final status {result.status:#06x}"
            answers = result.answers
        except (OSError, dimse.DimseError) as exc:
            error, answers = f"{type(exc).__name__}: {exc}", 0
            time.sleep(0.01)  # a refused connection must not spin
        ended = time.monotonic()
        results.put(("sample", began, ended - began, answers, error))
        done += 1
    cpu1 = os.times()
    results.put(("done", (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), time.monotonic(), 0, ""))


def run_cell(
    port: int,
    identifiers: Sequence[Identifier],
    concurrency: int,
    duration: float,
    max_queries: int,
    server_cpu: Callable[[], float],
    *,
    called: str = "ORTHANC",
    cell_timeout: float = 120.0,
    store_cpu: Callable[[], float] | None = None,
) -> CellResult:
    """Run one cell of the matrix: at least one query per client, then until `duration` or `max_queries`.

    A cell never lasts more than `duration + cell_timeout` seconds: clients still waiting then are stopped
    and their queries counted as unfinished (and the server's CPU for them is then in the figure unpaid).
    """
    context = multiprocessing.get_context("fork")
    go = context.Event()
    started = context.Value("i", 0)
    results = context.Queue()
    workers = [
        context.Process(
            target=_worker,
            args=(
                i,
                port,
                identifiers,
                go,
                started,
                duration,
                max(max_queries, concurrency),
                results,
                called,
            ),
            daemon=True,
        )
        for i in range(concurrency)
    ]
    for worker in workers:
        worker.start()
    time.sleep(0.05)  # let the clients reach the barrier: their start-up is not the server's time
    cpu_before, busy_before = server_cpu(), procstat.machine_busy_seconds()
    store_before = store_cpu() if store_cpu else 0.0
    began = time.monotonic()
    go.set()
    samples: list[tuple[float, float, int, str]] = []
    client_cpu, ended, finished = 0.0, began, 0
    hard_stop = began + duration + cell_timeout
    while finished < concurrency:
        try:
            kind, a, b, answers, error = results.get(timeout=max(hard_stop - time.monotonic(), 0.01))
        except queue.Empty:
            break  # clients still waiting for an answer past the cell's time bound: cut the cell here
        if kind == "sample":
            samples.append((a, b, answers, error))
            ended = max(ended, a + b)
        else:
            client_cpu += a
            ended = max(ended, b)
            finished += 1
    cpu_after, busy_after = server_cpu(), procstat.machine_busy_seconds()
    store_after = store_cpu() if store_cpu else 0.0
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
        worker.join(10)
    with started.get_lock():
        unfinished = started.value - len(samples)
    ok = [s for s in samples if not s[3]]
    latencies = [s[1] * 1000 for s in ok]
    first = min((s[0] for s in samples), default=began)
    elapsed = max(ended - first, 1e-9)
    count = len(samples)
    errors = [s[3] for s in samples if s[3]]
    return CellResult(
        queries=count,
        errors=len(errors),
        unfinished=unfinished,
        elapsed_s=elapsed,
        qps=len(ok) / elapsed,
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
        answers_mean=statistics.fmean([s[2] for s in ok]) if ok else 0.0,
        server_cpu_ms_per_query=(cpu_after - cpu_before) * 1000 / count if count else float("nan"),
        store_cpu_ms_per_query=(store_after - store_before) * 1000 / count if count else float("nan"),
        client_cpu_ms_per_query=client_cpu * 1000 / max(count, 1),
        # CPU used by neither the server nor our clients while the cell ran (other work on the machine):
        # in cores; on a 2-core machine anything near 1 means the figures of this cell are disturbed.
        background_cores=max(busy_after - busy_before - (cpu_after - cpu_before) - client_cpu, 0.0)
        / max(time.monotonic() - began, 1e-9),
        first_error=errors[0] if errors else "",
    )
