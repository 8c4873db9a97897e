"""CPU time and memory of server processes, read from /proc (children that exited included)."""

from __future__ import annotations

import os
from collections.abc import Iterable

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime + cutime + cstime of each process: wlmscpfs forks per association and reaps them."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after the command name: state is [0], utime [11], stime [12], cutime [13], cstime [14].
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / TICKS


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pids: Iterable[int]) -> float:
    return sum(_status_kb(pid, "VmRSS") for pid in pids) / 1024


def peak_rss_mb(pids: Iterable[int]) -> float:
    return sum(_status_kb(pid, "VmHWM") for pid in pids) / 1024


def children(pid: int) -> list[int]:
    """Direct children of `pid` (PostgreSQL's backends, wlmscpfs's per-association forks)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
            return [int(p) for p in listing.read().split()]
    except OSError:
        pass  # a kernel without CONFIG_PROC_CHILDREN: look for the parent in every process's stat
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields after the name: state, ppid, ...
            found.append(int(entry))
    return found


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine spent busy (the first line of /proc/stat), in seconds."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS
