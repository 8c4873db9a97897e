"""Server processes started by the bench: free loopback ports, readiness by polling, a bounded stop."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with status {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Service:
    """A started server: its process, port, log file and how long it took to listen."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    startup_s: float = 0.0
    extra_pids: list[int] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        name: str,
        command: list[str],
        ready_port: int,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 60.0,
        port: int | None = None,
    ) -> Service:
        """Start `command` and wait until something listens on `ready_port` (`port` is what it serves)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )
        service = cls(name, process, port if port is not None else ready_port, log)
        try:
            wait_for_port(ready_port, timeout, process)
        except BaseException:
            service.stop()
            raise RuntimeError(f"{name} did not start; see {log}") from None
        service.startup_s = time.monotonic() - began
        logger.info("%s listening on 127.0.0.1:%d after %.2f s", name, service.port, service.startup_s)
        return service

    @property
    def pids(self) -> list[int]:
        """The server and the processes it started (workers), whose CPU and memory count as the server's."""
        return [self.process.pid, *procstat.children(self.process.pid), *self.extra_pids]

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pids)

    def rss_mb(self) -> float:
        return procstat.rss_mb(self.pids)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s: killing it", self.name, timeout)
            os.killpg(self.process.pid, 9)
            self.process.wait(5)
