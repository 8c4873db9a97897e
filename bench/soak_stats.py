"""The soak's figures from its raw samples: C-FIND, REST, changes seen by C-FIND, memory."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from bench.load import percentile
from bench.soak_modalities import Sample
from bench.soak_ris import Bridge

WINDOWS = 6  # the soak cut in this many periods, to see a drift over time


def _latency(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "max_ms": round(max(ms, default=float("nan")), 2),
    }


def _windows(samples: list[Sample], first: float, elapsed: float) -> list[dict[str, Any]]:
    width = max(elapsed / WINDOWS, 1e-9)
    rows: list[dict[str, Any]] = []
    for k in range(WINDOWS):
        low, high = first + k * width, first + (k + 1) * width
        inside = [
            s
            for s in samples
            if low <= s.began + s.seconds < high or (k == WINDOWS - 1 and s.began + s.seconds >= high)
        ]
        ok = [s.seconds * 1000 for s in inside if not s.error]
        rows.append(
            {
                "from_s": round(k * width, 1),
                "to_s": round((k + 1) * width, 1),
                "qps": round(len(ok) / width, 1),
                "failed": sum(1 for s in inside if s.error),
                **_latency(ok),
            }
        )
    return rows


def cfind_figures(samples: list[Sample], unfinished: list[int], modalities: int) -> dict[str, Any]:
    ok = [s for s in samples if not s.error]
    first = min((s.began for s in samples), default=0.0)
    elapsed = max((s.began + s.seconds for s in samples), default=first) - first
    errors = Counter(s.error for s in samples if s.error)
    wrong = [s.wrong_count for s in samples if s.wrong_count]
    by_kind = {}
    for kind in sorted({s.kind for s in samples}):
        mine = [s for s in ok if s.kind == kind]
        by_kind[kind] = {
            "queries": len(mine),
            "answers_mean": round(statistics.fmean([s.answers for s in mine]), 1) if mine else 0.0,
            **_latency([s.seconds * 1000 for s in mine]),
        }
    active = {s.modality for s in samples}
    return {
        "associations": len(samples),
        "cfinds_ok": len(ok),
        "failed": len(samples) - len(ok),
        "wrong_counts": len(wrong),
        "answers": sum(s.answers for s in ok),
        "elapsed_s": round(elapsed, 2),
        "qps": round(len(ok) / elapsed, 1) if elapsed else 0.0,
        **_latency([s.seconds * 1000 for s in ok]),
        "by_kind": by_kind,
        "windows": _windows(samples, first, elapsed),
        "errors": dict(errors.most_common(10)),
        "first_error": next(iter(errors), ""),
        "first_wrong": wrong[0] if wrong else "",
        "unfinished_modalities": unfinished,
        "idle_modalities": modalities - len(active),
    }


def rest_figures(bridge: Bridge) -> dict[str, Any]:
    ops = {op: {"requests": len(ms), **_latency(ms)} for op, ms in sorted(bridge.rest_ms.items())}
    every = [v for ms in bridge.rest_ms.values() for v in ms]
    elapsed = bridge.elapsed_s or float("nan")
    return {
        "requests": bridge.requests,
        "errors": len(bridge.rest_errors),
        "first_error": bridge.rest_errors[0] if bridge.rest_errors else "",
        "operations": bridge.operations,
        "operations_per_s": round(bridge.operations / elapsed, 1),
        "creates_per_s": round(bridge.done["create"] / elapsed, 1),
        "done": dict(bridge.done),
        **_latency(every),
        "by_operation": ops,
    }


def change_figures(bridge: Bridge) -> dict[str, Any]:
    kinds = {}
    for kind in sorted({c.kind for c in bridge.checks}):
        mine = [c for c in bridge.checks if c.kind == kind and not c.error]
        seen = [c.seconds * 1000 for c in mine if not c.wrong]
        kinds[kind] = {
            "checked": len(mine),
            "first_association": sum(1 for c in mine if c.associations == 1 and not c.wrong),
            "queued_p50_ms": round(percentile([c.queued * 1000 for c in mine], 0.5), 1),
            **_latency(seen),
        }
    failed = [c.error for c in bridge.checks if c.error]
    late = [f"{c.kind}: {c.wrong}" for c in bridge.checks if c.wrong]
    return {
        "checked": sum(1 for c in bridge.checks if c.kind != "drain"),
        "unchecked": bridge.unchecked,
        "associations": sum(c.associations for c in bridge.checks),
        "failed_associations": len(failed),
        "first_error": failed[0] if failed else "",
        "late": len(late),
        "first_late": late[0] if late else "",
        "by_kind": kinds,
    }


def rss_figures(timeline: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per service: RSS when the load began, half-way, at its end, the peak, and growth start to end."""
    if not timeline:
        return {}
    middle = timeline[len(timeline) // 2]
    figures = {}
    for name in (k for k in timeline[0] if k != "t"):
        values = [row[name] for row in timeline]
        figures[name] = {
            "start_mb": round(values[0], 1),
            "middle_mb": round(middle[name], 1),
            "end_mb": round(values[-1], 1),
            "peak_mb": round(max(values), 1),
            "growth_mb": round(values[-1] - values[0], 1),
            "second_half_growth_mb": round(values[-1] - middle[name], 1),
        }
    return figures
