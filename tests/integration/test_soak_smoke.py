"""`make soak` in miniature: the soak starts embedded PostgreSQL, NATS, the API, the SCP and the housekeeper,
runs modalities and the RIS bridge against them for a few seconds, and reports every check passed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_smoke_soak_passes_its_checks_and_reports_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "bench.soak", "--duration", "3", "--modalities", "4", "--items", "200"]
    done = subprocess.run(
        [*command, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "soak PASSED" in done.stdout
    report = json.loads((out / "soak-latest.json").read_text(encoding="utf-8"))
    markdown = (out / "soak-latest.md").read_text(encoding="utf-8")
    assert "## Checks" in markdown and "## Memory (leak check)" in markdown
    assert report["passed"] and all(check["passed"] for check in report["checks"])
    cfind, rest = report["cfind"], report["rest"]
    assert cfind["cfinds_ok"] >= 4 and cfind["failed"] == 0 and cfind["wrong_counts"] == 0
    assert cfind["p99_ms"] > 0
    assert rest["done"].get("create", 0) > 0 and rest["errors"] == 0
    assert set(report["memory"]) == {"scp", "api", "housekeeper"}
    assert report["memory"]["scp"]["start_mb"] > 0
    assert report["cpu"]["listen_overflows"] >= 0


def test_soak_fails_on_bad_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--modalities", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "must be positive" in done.stderr
