"""`make bench` in miniature: the bench runs end to end against DCMTK wlmscpfs and its report shows that our
SCP and wlmscpfs gave the answers expected on the same generated worklists (the correctness gate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dicom_clients import dcmtk, needs_dcmtk

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    dcmtk,
    needs_dcmtk,
    # The peers listen on every interface, so the bench runs them in a private network namespace.
    pytest.mark.skipif(os.geteuid() != 0, reason="the bench needs root for its private network namespace"),
]


@pytest.mark.timeout(300)
def test_smoke_bench_reports_and_passes_the_correctness_gate(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--peers", "wlmscpfs", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    markdown = (out / "latest.md").read_text(encoding="utf-8")
    assert "## Targets" in markdown and "## Correctness gate" in markdown
    servers = {row["server"] for row in report["gate"]}
    assert servers == {"ours", "wlmscpfs"}
    assert [row for row in report["gate"] if row["verdict"] == "MISMATCH"] == []
    measured = {
        (cell["server"], cell["query"]) for cell in report["cells"] if cell["queries"] and not cell["errors"]
    }
    assert {("ours", "universal"), ("wlmscpfs", "universal"), ("ours", "patient_id")} <= measured
    assert report["rest_create"] and report["rest_create"][0]["items"] > 0
