"""Helpers for tests that fault a Ray Tune trial of their own local Ray: wait with a deadline, find the
trial's process (and only this test process's), read the newest checkpoint of a run and a model's history."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` every `interval` s until it is true; past `timeout` s, fail naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def checkpoints(store, run_id: str) -> list[str]:
    return [k for k in store.list_keys(f"runs/{run_id}/tune/") if "/checkpoint_" in k and k.endswith("state.json")]


def parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid …"; comm may hold spaces, so split after its ')'.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parent_of(pid)
    return False


def trial_pids() -> list[int]:
    """Processes running a Tune function trial (Ray titles them ray::ImplicitFunc…) of this test's own
    local Ray, whose raylet is a child of this process: never another Ray's on the machine."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ImplicitFunc" in (proc / "cmdline").read_bytes() \
                    and descends_from(int(proc.name), os.getpid()):
                pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    return pids


def newest_checkpoint_state(store, run_id: str) -> dict | None:
    """state.json of the newest checkpoint of the run's (single) trial; None while there is none."""
    states = sorted(checkpoints(store, run_id))
    if not states:
        return None
    try:
        return json.loads(store.get_bytes(states[-1]))
    except Exception:  # a checkpoint being replaced under us
        return None


@contextmanager
def trials_killed_after(store, run_id: str, epochs: int, interval: float = 0.2) -> Iterator[list[int]]:
    """While the block runs the trials, SIGKILL this test's trial processes once Tune has taken the checkpoint that
    holds `epochs` epochs; yields the list of pids killed (empty if the kill never came)."""
    killed: list[int] = []

    assert epochs >= 2, "Tune's taking of a first checkpoint cannot be seen from its files (nothing is deleted)"

    def kill() -> None:
        wait_for(lambda: registered_history_len(store, run_id) >= epochs, 240,
                 f"Tune to take epoch {epochs}'s checkpoint", interval=interval)
        for pid in trial_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    yield killed
    killer.join(timeout=5)


def registered_history_len(store, run_id: str) -> int:
    """Epochs in the checkpoint Tune has taken for the run's (single) trial; 0 while that cannot be told.

    A checkpoint's files are written by the trial before Tune's driver takes it: a kill in between restarts the
    trial from the checkpoint before (a CI run saw `resumed_from_epoch` 1 after a kill at epoch 2's files). Tune
    keeps one checkpoint (num_to_keep=1) and deletes the older one when it takes the newer, in the same step: a
    lone checkpoint after the first is one Tune has taken."""
    states = sorted(checkpoints(store, run_id))
    if len(states) != 1:
        return 0
    try:
        history = json.loads(store.get_bytes(states[0]))["history"]
    except Exception:  # deleted or replaced under us
        return 0
    return len(history) if len(history) >= 2 else 0


def history_epochs(store, run_id: str, arch: str) -> list[int]:
    """The epochs in a published model's history.csv, in order."""
    rows = csv.DictReader(io.StringIO(store.get_bytes(f"runs/{run_id}/{arch}/history.csv").decode()))
    return [int(row["epoch"]) for row in rows]


def ray_address_file_restorer():
    """The function that puts Ray's address file (/tmp/ray/ray_current_cluster) back as it is now. A
    `ray.cluster_utils.Cluster` records its address there, where any `ray.init()` on this machine (other test runs,
    a user's `fmnist run`) would find it and join that cluster: call it as soon as the cluster is made, and at the end."""
    from ray._common.utils import get_ray_address_file

    address_file = Path(get_ray_address_file(None))
    saved = address_file.read_text() if address_file.exists() else None

    def restore() -> None:
        if saved is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(saved)

    return restore
