"""The entry point starts a real service: the API answers /healthz, and SIGTERM reaches Python (exec)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from shared.migrate import upgrade
from tests.support.servers import NatsServer, free_port, service_env, wait_for_port

ENTRYPOINT = Path(__file__).resolve().parents[2] / "deploy" / "entrypoint.sh"


def test_api_starts_answers_healthz_and_stops_on_sigterm(tmp_path: Path, nats_server: NatsServer) -> None:
    url = f"sqlite:///{tmp_path / 'worklists.db'}"
    upgrade(url)
    port = free_port()
    env = service_env(
        PYTHON=sys.executable,
        MWL_DATABASE_URL=url,
        MWL_NATS_URL=nats_server.url,
        MWL_HTTP_PORT=str(port),
        MWL_BIND_ADDRESS="127.0.0.1",
    )
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(["sh", str(ENTRYPOINT), "api"], env=env, cwd=tmp_path, stderr=log)
    try:
        wait_for_port(port, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200 and json.load(response) == {"status": "ok"}
        # exec: the shell was replaced by Python, so the kubelet's SIGTERM goes to the service itself.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"services.api" in cmdline and not any(part.endswith(b"entrypoint.sh") for part in cmdline)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
