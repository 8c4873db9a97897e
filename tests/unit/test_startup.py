"""Every service refuses an invalid configuration alike: exit code 2, a log line naming the option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# The SCP's own case is in tests/integration/test_scp_main.py.
@pytest.mark.parametrize(
    ("service", "log_format"), [("services.api", "json"), ("services.housekeeper", "text")]
)
def test_a_bad_option_stops_the_service_naming_it(service: str, log_format: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MWL_")}
    env |= {"MWL_HTTP_PORT": "99999", "MWL_LOG_FORMAT": log_format, "MWL_DATABASE_URL": "sqlite:///:memory:"}
    process = subprocess.run(
        [sys.executable, "-m", service],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert process.returncode == 2
    [line] = [line for line in process.stderr.splitlines() if "HttpPort" in line]
    if log_format == "json":  # logged as the operator's log collector expects, before the settings exist
        assert json.loads(line)["level"] == "ERROR"
