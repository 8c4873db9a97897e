"""A private network namespace for the whole bench: the peers listen on every interface, so they must only
ever see a loopback of their own (their ports are then unreachable from outside this machine)."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess

logger = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000


class NamespaceUnavailable(RuntimeError):
    pass


def enter_private_network() -> None:
    """Move this process (and every child it starts later) into a new network namespace, loopback up.

    Call it before any thread is started: unshare(2) changes only the calling thread's namespace.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise NamespaceUnavailable(
            f"unshare(CLONE_NEWNET) failed: {os.strerror(error)} (needs root or CAP_SYS_ADMIN)"
        )
    done = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NamespaceUnavailable(
            f"cannot bring the loopback up in the new namespace: {done.stderr.strip()}"
        )
    logger.info("running in a private network namespace (loopback only)")
