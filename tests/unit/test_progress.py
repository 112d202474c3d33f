"""Live progress of the trials: the table in a real terminal (a pseudo-terminal), plain lines through pipes, the
Prefect UI's log lines in both, a clean terminal after Ctrl-C; and the state logic on stand-in trials."""

from __future__ import annotations

import asyncio
import fcntl
import io
import logging
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.tune.progress import LiveTable, TrialBoard, TrialState, iter_rows, trial_progress_callback

VENV_BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def trial(trial_id: str = "t_00000", architecture: str = "baseline", max_epochs: int = 2, status: str = "RUNNING",
          last_result: dict | None = None) -> SimpleNamespace:
    """What the board reads of a Tune trial."""
    return SimpleNamespace(trial_id=trial_id, config={"architecture": architecture, "max_epochs": max_epochs},
                           status=status, last_result=last_result or {})


def epoch(n: int, val: float = 0.8, seconds: float = 0.5) -> dict:
    return {"epoch": n, "accuracy": 0.9, "loss": 0.3, "val_accuracy": val, "val_loss": 0.4, "seconds": seconds,
            "finished": False}


def finished(epochs: int, test_accuracy: float = 0.85, **extra) -> dict:
    return {"finished": True, "epochs": epochs, "epoch": epochs, "test_accuracy": test_accuracy,
            "best_val_accuracy": 0.86, "seconds_per_epoch": 0.5, **extra}


# --- the state logic ---------------------------------------------------------------------------------------------

def test_a_trial_runs_its_epochs_and_finishes():
    board, t = TrialBoard(), trial(max_epochs=2)
    board.started_trial(t)
    assert board.result(t, epoch(1, 0.7512, 0.42)) == "baseline: epoch 1/2 val_accuracy 75.12% (0.4 s)"
    board.result(t, epoch(2, 0.80))
    assert board.result(t, finished(2, 0.8123)) == "baseline: finished after 2 epochs, test accuracy 81.23%"
    (row,) = board.rows()
    assert (row.state, row.epoch, row.val_accuracy, row.restarted_at) == (TrialState.FINISHED, 2, 0.80, None)
    assert board.completed(t) is None  # Tune's completion after the finished result says nothing more


def test_early_stopping_by_patience_is_stopped_early():
    board, t = TrialBoard(), trial(max_epochs=100)
    for n in range(1, 13):
        board.result(t, epoch(n))
    line = board.result(t, finished(12))
    assert line.startswith("baseline: stopped early (patience) after 12 of 100 epochs")
    assert board.rows()[0].state_text() == "stopped early (patience)"


def test_a_trial_ended_by_the_scheduler_without_a_finished_result_is_stopped_early():
    board, t = TrialBoard(), trial(max_epochs=10)
    board.result(t, epoch(1))
    board.result(t, epoch(2))
    assert board.completed(t) == "baseline: stopped early by the scheduler after epoch 2/10"
    assert board.rows()[0].state_text() == "stopped early (scheduler)"


def test_a_trial_stopped_by_the_scheduler_at_its_last_epoch_is_said_to_be_unevaluated():
    board, t = TrialBoard(), trial(max_epochs=2)
    board.result(t, epoch(1))
    board.result(t, epoch(2))
    assert "before its evaluation (a scheduler's max_t must exceed max_epochs)" in board.completed(t)


def test_a_failed_trial_restarts_from_its_checkpoint_and_then_fails_for_good():
    board, t = TrialBoard(), trial(max_epochs=6)
    board.result(t, epoch(1))
    board.result(t, epoch(2))
    assert "Ray restarts it from its last checkpoint" in board.recovering(t)
    assert board.rows()[0].state == TrialState.RESTARTING
    assert board.result(t, epoch(3)).endswith("(restarted from epoch 2)")
    assert board.rows()[0].state_text() == "running, restarted from epoch 2"
    assert board.result(t, epoch(4)).endswith("(0.5 s)")  # said once
    assert board.failed(t) == "baseline: trial failed after epoch 4, with no retries left"
    assert board.rows()[0].state_text() == "failed (no retries left), restarted from epoch 2"


def test_a_resumed_run_shows_restored_trials_as_they_were():
    """`fmnist run --resume`: Tune restores its trials with their last results; a finished one is shown finished,
    an unfinished one as restarted from its checkpoint once it reports again."""
    board = TrialBoard()
    done = trial("a_00000", "baseline", 2, "TERMINATED", finished(2))
    going = trial("a_00001", "cnn2", 6, "PENDING", epoch(3))
    board.see_all([done, going])
    rows = {row.architecture: row for row in board.rows()}
    assert rows["baseline"].state == TrialState.FINISHED and rows["cnn2"].epoch == 3
    assert board.result(going, epoch(4)).endswith("(restarted from epoch 3)")
    assert board.result(going, finished(6, resumed_from_epoch=3)).startswith("cnn2: finished after 6 epochs")
    assert {row.architecture: row.state_text() for row in board.rows()}["cnn2"] == "finished, restarted from epoch 3"


def test_trials_that_share_an_architecture_are_told_apart_by_their_ids():
    board = TrialBoard()
    a, b, c = trial("x_00000", "mlp1"), trial("x_00001", "mlp1"), trial("x_00002", "cnn2")
    board.see_all([a, b, c])
    assert [board.label(row) for row in board.rows()] == ["mlp1 x_00000", "mlp1 x_00001", "cnn2"]
    assert board.result(b, epoch(1)).startswith("mlp1 x_00001: epoch 1/2")


def test_the_callback_pickles_as_a_reference_to_the_restoring_processs_callback():
    """Tune pickles its callbacks into tuner.pkl and a restored Tuner uses the unpickled ones: the old run's logger
    (its flow run's ids) and a terminal must not come back from the store; the new run's callback does."""
    old_lines, new_lines = [], []
    old = trial_progress_callback(old_lines.append, live=False)
    stored = pickle.dumps(old)
    assert b"append" not in stored and len(stored) < 200
    new = trial_progress_callback(new_lines.append, live=False)
    restored = pickle.loads(stored)
    assert restored is new
    restored.on_trial_result(0, [], trial(), epoch(1))
    assert new_lines and not old_lines


# --- the live view in a terminal, without Ray --------------------------------------------------------------------

class Terminal:
    """A pseudo-terminal: `.stream` writes to it (isatty() is True), `.text()` is what it showed."""

    def __init__(self, columns: int = 120, rows: int = 40) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.slave = slave
        self.stream = os.fdopen(slave, "w", buffering=1)
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    def raw(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def text(self) -> str:
        return ANSI.sub("", self.raw())

    def close(self) -> None:
        self.stream.close()
        self._reader.join(timeout=5)
        os.close(self.master)


LOG_LINE = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| ")


def lines_written_through_the_table(raw: str) -> list[str]:
    """Log lines (Prefect's `HH:MM:SS.mmm | `) written while the table was up without first erasing its lines:
    what garbles a live view (rich erases the table, prints the line, draws the table again below it)."""
    start, end = raw.find("\x1b[?25l"), raw.rfind("\x1b[?25h")
    garbled = []
    for line in raw[start:end].split("\n"):
        found = LOG_LINE.search(line)
        if found and "\x1b[2K" not in line[:found.start()]:
            garbled.append(ANSI.sub("", line))
    return garbled


@pytest.mark.parametrize("handler_kind", ["prefect", "plain"])
def test_the_live_table_hides_the_progress_records_from_the_terminal_only(handler_kind):
    """While the table is up: a record the callback logs reaches the other handlers (the Prefect UI's API handler)
    but not the terminal's; any other record is printed above the table, through Prefect's console handler (which
    prints through a rich Console of its own) as through a plain StreamHandler; afterwards, all is as before."""
    import prefect.main  # noqa: F401  (Prefect's logging set-up)
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    terminal = Terminal()
    api: list[str] = []

    class Api(logging.Handler):
        def emit(self, record):
            api.append(record.getMessage())

    logger = logging.getLogger("test-progress-live")
    logger.propagate = False
    console = PrefectConsoleHandler(stream=terminal.stream) if handler_kind == "prefect" else \
        logging.StreamHandler(terminal.stream)
    console.setFormatter(PrefectFormatter("%(asctime)s.%(msecs)03d | %(message)s", datefmt="%H:%M:%S"))
    other = Api()
    logger.addHandler(console)
    logger.addHandler(other)
    logger.setLevel(logging.INFO)
    try:
        callback = trial_progress_callback(logger.info, live=True)
        callback.view.stream = terminal.stream
        with callback:
            callback.setup()
            writes_to = console.console.file if handler_kind == "prefect" else console.stream
            assert callback.view.active and writes_to is not terminal.stream
            t = trial("t_00000", "mlp1", 2)
            callback.on_trial_start(0, [t], t)
            callback.on_trial_result(0, [t], t, epoch(1, 0.8512))
            logger.info("a line of Prefect's own")
            callback.on_trial_result(0, [t], t, epoch(2, 0.8601))
            callback.on_trial_result(0, [t], t, finished(2))
            callback.on_experiment_end([t])
            assert not callback.view.active
        time.sleep(0.3)
    finally:
        logger.handlers.clear()
        terminal.close()
    shown = terminal.text()
    assert console.stream is terminal.stream and not console.filters  # handed back
    if handler_kind == "prefect":
        assert console.console.file is terminal.stream
    assert api == ["mlp1: epoch 1/2 val_accuracy 85.12% (0.5 s)", "a line of Prefect's own",
                   "mlp1: epoch 2/2 val_accuracy 86.01% (0.5 s)", "mlp1: finished after 2 epochs, test accuracy 85.00%"]
    assert "a line of Prefect's own" in shown and "val_accuracy 85.12%" not in shown
    assert not lines_written_through_the_table(terminal.raw()), terminal.raw()
    assert re.search(r"mlp1 +2/2 +86\.01% +0\.5 s +finished", shown), shown
    assert terminal.raw().rstrip().count("\x1b[?25h") >= 1  # the cursor is shown again


def test_restore_terminal_shows_the_cursor_without_taking_a_lock():
    terminal = Terminal()
    view = LiveTable(TrialBoard(), terminal.stream)
    try:
        view.start()
        view._lock.acquire()  # as if the interrupted thread held it
        view.restore_terminal_now()
        view._lock.release()
        view.stop()
        time.sleep(0.2)
    finally:
        terminal.close()
    assert terminal.raw().count("\x1b[?25h") >= 2


def test_the_live_table_is_only_for_a_command_that_owns_both_streams_of_a_terminal(monkeypatch):
    import tasks.tune.progress as progress

    terminal, piped = Terminal(), io.StringIO()
    try:
        monkeypatch.setattr(progress, "_live_wanted", False)
        monkeypatch.setattr(progress, "_run_started", None)
        monkeypatch.setenv("TERM", "xterm")
        monkeypatch.delenv("FMNIST_PROGRESS", raising=False)
        monkeypatch.setattr(sys, "stdout", terminal.stream)
        monkeypatch.setattr(sys, "stderr", terminal.stream)
        assert not progress.live_progress_enabled()  # a deployment's run: its terminal is the runner's
        progress.enable_live_progress()
        assert progress.live_progress_enabled()
        monkeypatch.setenv("FMNIST_PROGRESS", "plain")
        assert not progress.live_progress_enabled()
        monkeypatch.delenv("FMNIST_PROGRESS")
        monkeypatch.setenv("TERM", "dumb")
        assert not progress.live_progress_enabled()
        monkeypatch.setenv("TERM", "xterm")
        monkeypatch.setattr(sys, "stdout", piped)  # `fmnist run | tee log`
        assert not progress.live_progress_enabled()
    finally:
        monkeypatch.undo()
        terminal.close()


# --- `fmnist run` as a user sees it ------------------------------------------------------------------------------

def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1", TERM="xterm-256color",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    env.pop("FMNIST_PROGRESS", None)
    return env


def _controlling_terminal() -> None:
    """In the child, after setsid (start_new_session): stdin, a pty, becomes its controlling terminal, so that
    Ctrl-C typed there reaches the foreground process group, as in a shell."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_in_terminal(command: str, cwd: Path, env: dict[str, str], timeout: float,
                    press_ctrl_c_when: str | None = None) -> tuple[int, Terminal, float | None]:
    """`command` in a shell whose stdin, stdout and stderr are one pseudo-terminal (120x40). With
    `press_ctrl_c_when`, Ctrl-C is typed once that text has shown. Returns the exit code, the terminal, and the
    seconds from Ctrl-C to the exit."""
    terminal = Terminal()
    process = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], cwd=cwd, env=env, stdin=terminal.slave,
                               stdout=terminal.slave, stderr=terminal.slave, start_new_session=True,
                               preexec_fn=_controlling_terminal)
    pressed = None
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if press_ctrl_c_when and pressed is None and press_ctrl_c_when in terminal.text():
                os.write(terminal.master, b"\x03")  # the terminal turns it into SIGINT for the foreground group
                pressed = time.monotonic()
            time.sleep(0.2)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise AssertionError(f"`{command}` still running after {timeout:.0f} s; the terminal showed:\n"
                                 f"{terminal.text()[-4000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
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
        user_env(PREFECT_API_URL=prefect_api), timeout=600)
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
    result = subprocess.run("fmnist run --preset quick --architectures baseline", shell=True, cwd=folder,
                            env=user_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "baseline: epoch 1/2 val_accuracy" in result.stderr and "baseline: epoch 2/2 val_accuracy" in result.stderr
    assert "baseline: finished after 2 epochs" in result.stderr
    assert "\x1b[" not in result.stdout + result.stderr and "trials:" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_table_and_leaves_the_terminal_usable(tmp_path, prefect_api):
    """Ctrl-C typed in the terminal while the table is up. A Prefect server outside the process group (the
    temporary one dies of the same Ctrl-C, and Prefect's crash reports to it can outlast the 8 s grace: that path,
    shared with the piped case, is test_reliability.py's)."""
    folder = tmp_path / "user"
    folder.mkdir()
    code, terminal, seconds = run_in_terminal(
        "fmnist run --preset quick --architectures cnn2 --max-epochs 30 --train-rows 20000 --run-id ctrl-c-live",
        folder, user_env(PREFECT_API_URL=prefect_api), timeout=400, press_ctrl_c_when="1/30")
    shown, raw = terminal.text(), terminal.raw()
    assert seconds is not None, f"the table never showed epoch 1/30:\n{shown[-4000:]}"
    assert seconds < 20, f"exited {seconds:.1f} s after Ctrl-C"
    assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l"), "the cursor was left hidden"
    assert "Traceback" not in shown, shown[-4000:]
    assert "fmnist run: interrupted: resume with `fmnist run --resume ctrl-c-live`" in shown, shown[-4000:]
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
    from tests.trial_processes import wait_for

    folder = tmp_path / "user"
    folder.mkdir()
    run_id = f"resumed-live-{os.getpid()}"
    env = user_env(PREFECT_API_URL=prefect_api)
    first = subprocess.Popen(["fmnist", "run", "--preset", "quick", "--run-id", run_id, "--architectures",
                              "baseline,cnn2", "--max-epochs", "6", "--train-rows", "6000", "--test-rows", "500"],
                             cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for(lambda: list(folder.glob(f"artifacts/runs/{run_id}/baseline/metrics.json"))
                 and checkpoint_recorded(folder, "cnn2"), 300, "baseline done and a cnn2 checkpoint recorded")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the flow process, its local Ray and its trials
        first.wait(timeout=30)
    time.sleep(2)  # let the killed Ray's processes go

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


def _probe(config: dict) -> None:  # pickled by value (below): Ray's workers do not import the tests
    """A stand-in trainable that reports like tasks.model.training.train_trial: per epoch, then finished=True."""
    from ray import tune

    for n in range(1, config["max_epochs"] + 1):
        time.sleep(0.3)
        tune.report(epoch(n, val=config["quality"] * n / 10, seconds=0.3))
    # tasks.model.training's finished report has best_val_accuracy, no val_accuracy: ASHA(metric="val_accuracy") refuses
    # such a result (Tune's strict metric check fails the experiment). A search needs it there; the probe has it.
    tune.report(finished(config["max_epochs"], test_accuracy=config["quality"],
                         val_accuracy=config["quality"] * config["max_epochs"] / 10))


@pytest.mark.slow
def test_trials_a_real_asha_scheduler_stops_are_stopped_early_and_the_others_finish(ray_local, tmp_path):
    """What `fmnist search` will show: four trials of one architecture under Ray Tune's ASHA; the worse ones are
    stopped after an epoch by the scheduler (no finished result), the others finish. Note for a search: ASHA
    stops a trial whose time attribute reaches max_t, so max_t must exceed max_epochs or the trials that train
    every epoch are stopped before their finished report (evaluation, publishing); and the finished report must
    carry the scheduler's metric (see _probe)."""
    import ray.cloudpickle
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tasks.tune.fanout import keep_secrets_out_of_trial_env

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # As every Tuner of the project's is made: else Tune copies this session's AWS keys into the trials' runtime_env,
    # and the shared Ray's runtime_env_agent.log would hold them (test_run_flow's sentinel check found exactly that).
    keep_secrets_out_of_trial_env()
    lines: list[str] = []
    callback = trial_progress_callback(lines.append, live=False)
    tuner = tune.Tuner(
        _probe,
        param_space={"architecture": "mlp1", "max_epochs": 4, "quality": tune.grid_search([0.9, 0.8, 0.3, 0.2])},
        tune_config=tune.TuneConfig(scheduler=ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max",
                                                            max_t=5, grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha", callbacks=[callback], verbose=0))
    with callback:
        tuner.fit()
    rows = list(iter_rows(callback))
    states = {callback.board.label(row): (row.state, row.why, row.epoch) for row in rows}
    assert len(states) == 4 and all(label.startswith("mlp1 ") for label in states), states  # ids tell them apart
    stopped = [s for s in states.values() if s[:2] == (TrialState.STOPPED_EARLY, "scheduler")]
    done = [s for s in states.values() if s[0] == TrialState.FINISHED]
    assert stopped and all(epochs < 4 for _, _, epochs in stopped), states
    assert done and all(epochs == 4 for _, _, epochs in done), states
    assert any(re.match(r"mlp1 \w+_\d+: stopped early by the scheduler after epoch \d/4", line) for line in lines)
