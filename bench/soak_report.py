"""The soak's report: JSON with every figure, markdown with the checks and tables, and a short summary."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report import _f
from bench.soak_ris import CHECK_BACKLOG, CHECKERS, IN_FLIGHT

if TYPE_CHECKING:
    from bench.soak import SoakSettings

KIND_NAMES = {
    "today_station": "today, own station and modality",
    "today_modality": "today, own modality",
    "patient_id": "one patient ID",
    "accession": "one accession number",
}


def settings_dict(cfg: SoakSettings) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def _latency_cells(row: dict[str, Any]) -> str:
    return " | ".join(_f(row[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))


def _checks(document: dict[str, Any]) -> list[str]:
    lines = ["| check | measured | |", "|---|---|---|"]
    for check in document.get("checks", []):
        lines.append(
            f"| {check['check']} | {check['measured']} | {'pass' if check['passed'] else '**FAIL**'} |"
        )
    return lines


def _overflows(cpu: dict[str, Any]) -> list[str]:
    if "listen_overflows" not in cpu:
        return []
    return [
        "",
        "TCP listen-queue overflows during the load (this network namespace): "
        f"**{cpu['listen_overflows']:,}**. "
        "A connection that finds the SCP's accept queue full is dropped and retried by the client's TCP "
        "after 1 s, then 3 s, 7 s, 15 s…, which shows as latency in whole seconds or as a connect timeout.",
    ]


def _cfind(c: dict[str, Any]) -> list[str]:
    lines = [
        f"{c['associations']:,} associations, {c['cfinds_ok']:,} C-FIND ended 0x0000, {c['failed']} failed, "
        f"{c['wrong_counts']} wrong answer counts; {c['answers']:,} answers read; "
        f"**{_f(c['qps'])} C-FIND/s** over {_f(c['elapsed_s'])} s. Latency is the modality's: from "
        "connecting to the end of the release.",
        "",
        "| query | C-FINDs | answers (mean) | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| **all** | {c['cfinds_ok']:,} | – | {_latency_cells(c)} |",
    ]
    for kind, row in c["by_kind"].items():
        lines.append(
            f"| {KIND_NAMES.get(kind, kind)} | {row['queries']:,} | {_f(row['answers_mean'])} | "
            f"{_latency_cells(row)} |"
        )
    lines += ["", "Over time:", "", "| from s | to s | C-FIND/s | failed | p50 ms | p99 ms |"]
    lines.append("|---:|---:|---:|---:|---:|---:|")
    for w in c["windows"]:
        lines.append(
            f"| {w['from_s']} | {w['to_s']} | {_f(w['qps'])} | {w['failed']} | {_f(w['p50_ms'])} "
            f"| {_f(w['p99_ms'])} |"
        )
    if c["errors"]:
        lines += ["", "Failures:", ""] + [f"- {n} × `{e}`" for e, n in c["errors"].items()]
    return lines


def _rest(r: dict[str, Any], changes: dict[str, Any]) -> list[str]:
    lines = [
        f"{r['requests']:,} requests, {r['errors']} errors; {_f(r['operations_per_s'])} operations/s "
        f"({_f(r['creates_per_s'])} creates/s). Done: "
        + ", ".join(f"{n} {op}" for op, n in sorted(r["done"].items()))
        + ".",
        "",
        "| operation | requests | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        f"| **all** | {r['requests']:,} | {_latency_cells(r)} |",
        *[f"| {op} | {row['requests']:,} | {_latency_cells(row)} |" for op, row in r["by_operation"].items()],
        "",
        "Each change then checked by C-FIND on the accession number until it shows (created or updated: one "
        "answer with the new start time; deleted or study stable: none). Times run from the REST answer to "
        "the end of the association that saw the change, and include the wait for a free checker "
        f"({CHECKERS} of them, one association at a time). Creates and updates that came while "
        f"{CHECK_BACKLOG} changes were waiting went unchecked ({changes['unchecked']}; the final checks "
        "cover every item):",
        "",
        "| change | checked | seen on the first association | checker wait p50 ms | p50 ms | p95 ms "
        "| p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {kind} | {row['checked']:,} | {row['first_association']:,} | {_f(row['queued_p50_ms'])} "
            f"| {_latency_cells(row)} |"
            for kind, row in changes["by_kind"].items()
        ],
    ]
    if r["first_error"]:
        lines += ["", f"First REST error: `{r['first_error']}`"]
    return lines


def _memory(memory: dict[str, Any]) -> list[str]:
    lines = [
        "| service | RSS at start MB | half-way MB | end MB | peak MB | growth MB | second half MB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in memory.items():
        lines.append(
            f"| {name} | {_f(m['start_mb'])} | {_f(m['middle_mb'])} | {_f(m['end_mb'])} | {_f(m['peak_mb'])} "
            f"| {m['growth_mb']:+.1f} | {m['second_half_growth_mb']:+.1f} |"
        )
    return lines


def markdown(document: dict[str, Any]) -> str:
    m, s, cpu = document["machine"], document["settings"], document.get("cpu", {})
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines = [
        "# Soak: concurrent modalities and a RIS bridge",
        "",
        f"- Date: {m['date']}; run took {m.get('soak_seconds', '?')} s; "
        f"**{'PASSED' if document.get('passed') else 'FAILED'}**",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}",
        f"- Python {m['python']}; {packages}; PostgreSQL: {m['postgresql']}",
        f"- Command: `{s['command']}`",
        f"- {s['items']:,} items bulk-loaded into {s['database']} "
        f"({document.get('bulk_load_items_per_s', '?')} items/s); {s['modalities']} modalities for "
        f"{s['duration']} s, each a loop of new association, one selective MWL C-FIND (its AE title = its "
        f"station's), every answer read, release (lean raw-socket client, one process per modality); a RIS "
        f"bridge at {s['rest_rate']} REST operations/s (at most {IN_FLIGHT} under way) meanwhile; "
        "housekeeping and SCP cache resync every "
        f"{s['housekeeping_interval']} s. "
        + (
            "API, SCP, housekeeper, NATS and PostgreSQL"
            if s["database"] == "postgresql"
            else "API, SCP, housekeeper and NATS"
        )
        + " as separate processes on loopback.",
        f"- CPU while the load ran, in cores: servers (SCP, API, housekeeper, NATS, PostgreSQL if used) "
        f"{_f(cpu.get('server_cores'), 2)}, soak clients {_f(cpu.get('client_cores'), 2)}, other work on "
        f"the machine {_f(cpu.get('other_cores'), 2)} (load average {_f(cpu.get('load_average_end'), 2)} at "
        "the end); on a small machine the clients and any other work compete with the servers, so latency "
        "figures are upper bounds.",
        "",
        "## Checks",
        "",
        *_checks(document),
        "",
        "## C-FIND",
        "",
        *_cfind(document["cfind"]),
        *_overflows(cpu),
        "",
        "## REST (RIS bridge)",
        "",
        *_rest(document["rest"], document["changes"]),
        "",
        "## Memory (leak check)",
        "",
        "Resident memory of each service, sampled every second while the load ran:",
        "",
        *_memory(document["memory"]),
        "",
    ]
    return "\n".join(lines)


def summary(document: dict[str, Any]) -> str:
    c, r, mem, cpu = document["cfind"], document["rest"], document["memory"], document.get("cpu", {})
    failed = [check["check"] for check in document["checks"] if not check["passed"]]
    lines = [
        f"soak {'PASSED' if document['passed'] else 'FAILED'}" + (": " + "; ".join(failed) if failed else ""),
        f"  C-FIND: {c['associations']:,} associations, {c['failed']} failed, "
        f"{c['wrong_counts']} wrong counts, "
        f"{c['qps']:.1f} q/s, p50 {c['p50_ms']:.1f} ms, p95 {c['p95_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms",
        f"  REST:   {r['requests']:,} requests, {r['errors']} errors, {r['operations_per_s']:.1f} op/s "
        f"({r['creates_per_s']:.1f} creates/s), p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms",
        "  RSS:    "
        + ", ".join(f"{name} {m['start_mb']:.0f} -> {m['end_mb']:.0f} MB" for name, m in mem.items()),
        f"  CPU:    servers {cpu.get('server_cores', 0):.2f} cores, clients {cpu.get('client_cores', 0):.2f}"
        f", other work on the machine {cpu.get('other_cores', 0):.2f}; "
        f"listen-queue overflows {cpu.get('listen_overflows', '?')}",
    ]
    return "\n".join(lines)


def write(document: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = out / f"soak-{stamp}.json"
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    md_path = out / f"soak-{stamp}.md"
    md_path.write_text(markdown(document), encoding="utf-8")
    for name, path in (("soak-latest.json", json_path), ("soak-latest.md", md_path)):
        (out / name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return md_path, json_path
