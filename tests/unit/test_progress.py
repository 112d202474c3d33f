"""Live progress of the trials without Ray: the state logic on stand-in trials, and the live table in a
pseudo-terminal. `fmnist run` in a real terminal: tests/cli/test_progress.py; a real ASHA: tests/integration."""

from __future__ import annotations

import io
import logging
import pickle
import re
import sys
import time
from types import SimpleNamespace

import pytest

from tasks.model.recipes import Recipe
from tasks.model.spec import TrialSpec
from tasks.tune.progress import LiveTable, TrialBoard, TrialState, trial_progress_callback
from tests.terminal import Terminal, lines_written_through_the_table


def trial(trial_id: str = "t_00000", architecture: str = "baseline", max_epochs: int = 2, status: str = "RUNNING",
          last_result: dict | None = None) -> SimpleNamespace:
    """What the board reads of a Tune trial."""
    return SimpleNamespace(trial_id=trial_id, config={"spec": spec_of(architecture, max_epochs)},
                           status=status, last_result=last_result or {})


def spec_of(architecture: str, epochs: int) -> dict:
    """The TrialSpec (as Tune carries it) of a trial of `architecture` with an epoch budget of `epochs`."""
    return TrialSpec(run_id="r", experiment="tune", dataset_version="v", store="/s", architecture=architecture,
                     recipe=Recipe(epochs=epochs), seed=0, patience=10, steps_per_execution=1, eval_batch_size=1024,
                     cpus_per_trial=1).model_dump()


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
