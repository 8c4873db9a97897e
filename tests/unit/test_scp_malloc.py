"""An SCP process keeps few malloc arenas: with a thread per association, glibc would otherwise give each
concurrently allocating thread an arena of its own, each holding on to what it freed (RSS that never comes
back after a burst of broad queries)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, os, sys, tempfile, threading
from services.scp.workers import limit_malloc_arenas
if sys.argv[1] == "limited":
    limit_malloc_arenas()
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    for _ in range(200):
        blobs = [os.urandom(600) for _ in range(500)]  # above pymalloc's 512 bytes: glibc's malloc
        del blobs
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.TemporaryFile() as out:
    stream = libc.fdopen(os.dup(out.fileno()), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    out.seek(0)
    print(out.read().decode().count("<heap nr="))
"""


def arenas(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return int(result.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_an_scp_process_uses_at_most_two_malloc_arenas() -> None:
    assert arenas("limited") <= 2
    assert arenas("default") > 2  # what the limit saves: the probe does spread over more arenas otherwise
