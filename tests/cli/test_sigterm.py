"""SIGTERM, as `systemctl stop`, `docker stop`, a CI time-out or a scheduler sends it, to `fmnist run` as typed
(issue 20, item 4): to the main process alone, and to its whole process group. Before: to the process alone, exit
143 in 1.7 s with no fmnist line, and Prefect's temporary server and Ray's agents left running; to the group, 60 s
and exit 1 with Ray's "Failed to connect to GCS within 60 seconds". Now, as Ctrl-C: within 10 s, exit 143, the
resume line last, nothing left running; and the resume line, typed as printed, finishes the run.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.cli_user import finish, live_processes, run_fmnist, start_fmnist, stop_group
from tests.trial_processes import wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target", ["process", "group"])
def test_sigterm_stops_the_run_within_10_s_and_it_resumes(tmp_path, target):
    run = start_fmnist("fmnist run --preset quick --architectures baseline --max-epochs 40 --run-id term",
                       tmp_path)
    try:
        wait_for(lambda: list(tmp_path.glob("artifacts/runs/term/tune/*baseline*/checkpoint_*")), 240,
                 "a checkpoint")
        sent = time.monotonic()
        if target == "group":
            stop_group(run, signal.SIGTERM)
        else:
            os.kill(run.pid, signal.SIGTERM)
        _, err = run.communicate(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        if run.poll() is None:
            stop_group(run)
            run.wait(timeout=10)
    assert run.returncode == 143, err[-3000:]
    assert seconds < 10, f"exited {seconds:.1f} s after SIGTERM"
    last = err.strip().splitlines()[-1]
    assert last == f"fmnist run: interrupted: resume with `fmnist run --resume term --store {tmp_path / 'artifacts'}`", \
        err[-3000:]
    assert "fmnist: terminated (SIGTERM), stopping the trials" in err
    wait_for(lambda: not live_processes(run.pid), 15, "the run's processes to end")

    resumed = run_fmnist(last.split("`")[1], tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "artifacts" / "runs" / "term" / "baseline" / "metrics.json").is_file()
