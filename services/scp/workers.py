"""ScpWorkers: extra SCP processes on the same DICOM port (SO_REUSEPORT), so that every core answers.

Associations run on threads under one GIL: one process uses one core however many modalities query at
once. The process started as `python -m services.scp` is worker 0 (DICOM port, health
port, metrics); it starts workers 1..N-1 as child processes of the same program with `--share-port`, each
with its own store connections and item cache, and the kernel
spreads new connections over the listening processes. When a worker dies the others are stopped and the
process exits with an error, so that its supervisor (systemd, the kubelet) restarts the whole set.

Only worker 0 serves ScpHealthPort: /healthz and /readyz speak for the set (worker 0 runs only while all
do), /metrics counts worker 0's own C-FINDs (about 1/N of them; the README says so).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

logger = logging.getLogger(__name__)

# Linux prctl(PR_SET_PDEATHSIG): a worker gets SIGTERM when worker 0 dies, even by SIGKILL.
_PR_SET_PDEATHSIG = 1
# glibc mallopt parameter, and the arenas an SCP process keeps (limit_malloc_arenas).
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def worker_count(setting: int) -> int:
    """ScpWorkers: 0 is one process per core this process may run on."""
    if setting > 0:
        return setting
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Cap glibc's malloc arenas (mallopt M_ARENA_MAX) before any thread starts.

    glibc gives each thread that allocates concurrently an arena of its own, up to 8 per core, and keeps
    what it freed in each: with a thread per association, the item cache's blobs and the answers (larger
    than pymalloc's 512-byte objects, so malloc's) scatter over many arenas, and the process holds tens to
    hundreds of MB it no longer uses after a burst of broad queries. A couple of arenas suffices: the GIL
    serialises the allocations anyway. No effect elsewhere than on glibc.
    """
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, arenas)


def follow_parent(parent: int) -> None:
    """In a worker: be sent SIGTERM when worker 0 ends, even by SIGKILL (Linux), and end now if it has."""
    with suppress(OSError, AttributeError):  # not Linux: worker 0's stop() still ends the workers
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # worker 0 ended before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Workers:
    """Workers 1..count-1 of worker 0 (this process), started and stopped together."""

    def __init__(self, count: int, config: Path | None) -> None:
        self.count = count
        self.config = config
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for _ in range(1, self.count):
            env = {
                **os.environ,
                "MWL_SCP_WORKERS": "1",  # a worker starts no workers of its own
                "MWL_SCP_HEALTH_PORT": "0",  # worker 0's port speaks for the set
            }
            command = [sys.executable, "-m", "services.scp", "--share-port", "--worker-of", str(os.getpid())]
            if self.config is not None:
                command += ["--config", str(self.config)]
            # Same stdout/stderr as worker 0: one log stream for the set.
            self.processes.append(subprocess.Popen(command, env=env))
        if self.processes:
            logger.info("started %d more SCP worker process(es) on the DICOM port", len(self.processes))

    def exited(self) -> subprocess.Popen[bytes] | None:
        """A worker that has ended (none should, before stop())."""
        return next((p for p in self.processes if p.poll() is not None), None)

    def stop(self, timeout: float = 20.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("SCP worker %d did not stop within %.0f s: killing it", process.pid, timeout)
                process.kill()
                process.wait(5)
