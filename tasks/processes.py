"""Processes on this machine, from /proc (Linux): whether one lives, and which ones a process started.

Used by the run lease (is the holder of a run still alive?) and by Ctrl-C (stop everything this job started).
"""

from __future__ import annotations

import os


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces): state, ppid, …"""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie (ended, waiting for its parent to reap it) counts as ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc to ask (not Linux): it answered the signal


def descendants(root: int) -> list[int]:
    """Every process below `root`, children first; empty where there is no /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat_fields(entry)[1])
            except (OSError, ValueError, IndexError):
                continue  # ended while we looked
    found, frontier = [], {root}
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = set(children)
    return found


def process_started(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (/proc/<pid>/stat field 22): with the boot id, what tells this
    process from a later one given the same pid. None where it cannot be read (gone, or no /proc)."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str | None:
    """This boot of this machine's kernel (/proc/sys/kernel/random/boot_id); None where there is none."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def pid_namespace() -> str | None:
    """This process's PID namespace ('pid:[4026531836]'): pids name the same processes only inside one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
