"""Progress of the Ray Tune trials: one line per trial, updated in place on a terminal, plain log lines elsewhere.

What it shows per trial: the architecture (and the trial id where several trials share one, as in a search), the
epoch out of max_epochs, the latest validation accuracy, the latest epoch's seconds, and the state: pending,
running, restarted from a checkpoint, stopped early (by patience, or by a scheduler such as ASHA), finished,
failed; above the table, the run's elapsed time (since `fmnist run` began).

Where it runs: the Tune callback runs in the driver (the process that calls `Tuner.fit`), never inside a trial;
this module imports neither Prefect nor Ray at import time (Ray lazily, for the callback's base class).

The log lines are the same in both modes, so the Prefect UI (whose API handler gets every record) keeps one line
per epoch and per state change. On a terminal the live table replaces them: while it is up, a record logged by
the callback itself reaches every handler except those writing to the terminal (a filter on them), and every
other line written to the terminal (Prefect's own log lines, `print`) is printed above the table through the
table's console instead of through it.

API: `trial_progress_callback(log, live)` returns the tune.Callback that fanout.run_trials puts in its Tuner's
RunConfig; `close()` on it (or `with` it) stops the live view on any exit; `live_progress_enabled()` says whether
the command that owns this terminal asked for the live view (`enable_live_progress`, called by `fmnist run`).
Another flow that runs Tune trials (a search) does the same:

    # CLI, before the flow runs in-process:   enable_live_progress()
    callback = trial_progress_callback(get_run_logger().info, live=live_progress_enabled())
    with callback:  # the table stops on Ctrl-C or an error, before anything else is printed
        tune.Tuner(..., run_config=tune.RunConfig(callbacks=[callback], ...)).fit()

Trials that share an architecture are labelled with their trial ids; a trial a scheduler (ASHA) ends without a
finished=True result shows as stopped early (scheduler).
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from enum import Enum
from typing import IO, Any, Callable, Iterator

from tasks.errors import PipelineError
from tasks.model.spec import TrialSpec
from tasks.settings import current_settings
from tasks.progress import Progress as Log  # where the plain lines go

REFRESH_PER_SECOND = 2  # the elapsed time ticks; results arrive at most once an epoch


class TrialState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    RESTARTING = "restarting"  # failed, Ray restarts it from its last checkpoint (FailureConfig)
    FINISHED = "finished"
    STOPPED_EARLY = "stopped early"
    FAILED = "failed"


FINAL_STATES = (TrialState.FINISHED, TrialState.STOPPED_EARLY, TrialState.FAILED)


@dataclass
class TrialRow:
    """What the view knows of one trial."""

    trial_id: str
    architecture: str
    max_epochs: int
    epoch: int = 0
    val_accuracy: float | None = None
    seconds: float | None = None  # the latest epoch's
    state: TrialState = TrialState.PENDING
    why: str = ""  # of a stop or failure: 'patience', 'scheduler', 'no retries left'
    restarted_at: int | None = None  # the epoch of the checkpoint it went on from, if it did
    finished_result: bool = False  # the trainable reported finished=True (trained, evaluated, published)
    restart_pending: bool = False  # failed or restored: its next result comes from a checkpoint

    def state_text(self) -> str:
        text = self.state.value + (f" ({self.why})" if self.why else "")
        if self.restarted_at is not None:
            text += f", restarted from epoch {self.restarted_at}"
        return text


def _epoch_of(result: dict | None) -> int:
    try:
        return int((result or {}).get("epoch") or 0)
    except (TypeError, ValueError):
        return 0


def trial_error_line(error: BaseException) -> str:
    """One line for a failed trial. Tune hands back a RayTaskError whose text is the trial's whole traceback,
    ending in `module.Type: message`; our own errors (a full disk, a damaged checkpoint, the store) are lines
    written for the user, so the trial's exception (the RayTaskError's `cause`) is shown as it is."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, PipelineError):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[-1] if text else ''}"


def last_error_line(trial: Any) -> str:
    """The trial's last error as ": Type: message", from the error Tune stored for it; "" when it cannot be read
    (the store away, or an error file left empty by a full disk): the line it goes into must not fail for that."""
    from ray import cloudpickle

    try:  # the driver's own copy first: the one in the store is synced later (and may be away)
        local = trial.pickled_error_file
        error = cloudpickle.loads(Path(local).read_bytes()) if local else trial.get_pickled_error()
    except Exception:  # noqa: BLE001  (a missing file, an EOFError from an empty one, an unpicklable class)
        return ""
    return f": {trial_error_line(error)}" if error is not None else ""

class TrialBoard:
    """One row per trial, kept from Tune's callback events; each event returns the log line it makes (or None).

    Pure bookkeeping: no Ray, no terminal. Tune's `trial` objects are read through `trial_id`, `config`, `status`
    and `last_result` only, so that tests can pass simple stand-ins. Thread-safe for one writer (Tune's loop)
    and one reader (the live view's refresh thread)."""

    def __init__(self) -> None:
        self._rows: dict[str, TrialRow] = {}
        self._lock = threading.Lock()
        self.started = time.monotonic()

    # --- reading --------------------------------------------------------------------------------------------
    def rows(self) -> list[TrialRow]:
        with self._lock:
            return [TrialRow(**vars(row)) for row in self._rows.values()]

    def label(self, row: TrialRow) -> str:
        """The architecture, with the trial id where another trial has the same architecture (a search)."""
        with self._lock:
            shared = sum(1 for other in self._rows.values() if other.architecture == row.architecture) > 1
        return f"{row.architecture} {row.trial_id}" if shared else row.architecture

    # --- events -----------------------------------------------------------------------------------------------
    def see(self, trial: Any) -> TrialRow:
        """The trial's row; a trial seen for the first time (a resumed run's: Tune restored it) starts from what
        Tune knows of it: a finished or stopped trial is shown as such, a restored one as restarted."""
        row = self._rows.get(trial.trial_id)
        if row is not None:
            return row
        spec = TrialSpec.from_tune(trial.config)  # its epoch budget: the recipe's, capped by the run once
        row = TrialRow(trial.trial_id, spec.label, spec.recipe.epochs)
        last = getattr(trial, "last_result", None) or {}
        if "epoch" in last:
            self._apply_result(row, last)
            if str(getattr(trial, "status", "")) == "TERMINATED":
                if not row.finished_result:
                    row.state, row.why = TrialState.STOPPED_EARLY, "scheduler"
            elif not row.finished_result:
                row.state, row.restart_pending = TrialState.PENDING, True  # restored: goes on from a checkpoint
        with self._lock:
            self._rows[trial.trial_id] = row
        return row

    def see_all(self, trials: list[Any]) -> None:
        for trial in trials:
            self.see(trial)

    def started_trial(self, trial: Any) -> None:
        row = self.see(trial)
        if row.state not in FINAL_STATES:
            row.state = TrialState.RUNNING

    def result(self, trial: Any, result: dict) -> str | None:
        row = self.see(trial)
        with self._lock:
            restarting = row.restart_pending or (row.epoch == 0 and _epoch_of(result) > 1)
            self._apply_result(row, result)
            if restarting and not row.finished_result:
                # Checkpoints are per epoch: the trial went on from the one before the epoch it reports now
                # (0: it trained again from the start, its checkpoint unusable).
                row.restarted_at, row.restart_pending = row.epoch - 1, False
        label = self.label(row)
        restarted = f" (restarted from epoch {row.restarted_at})" if restarting else ""
        epoch = (f"{label}: epoch {row.epoch}/{row.max_epochs} val_accuracy {100 * (row.val_accuracy or 0):.2f}% "
                 f"({row.seconds or 0:.1f} s){restarted}")
        if row.finished_result:
            accuracy = result.get("test_accuracy")
            tested = f", test accuracy {100 * accuracy:.2f}%" if isinstance(accuracy, (int, float)) else ""
            if row.state == TrialState.STOPPED_EARLY:
                ended = f"stopped early (patience) after {row.epoch} of {row.max_epochs} epochs{tested}"
            else:
                ended = f"finished after {row.epoch} epochs{tested}"
            # A trial that publishes nothing (a search's) says finished in its last epoch's result: one line for both.
            return f"{epoch}; {ended}" if "val_accuracy" in result else f"{label}: {ended}"
        return epoch

    def completed(self, trial: Any) -> str | None:
        """Tune ended the trial: after its finished result, or stopped by a scheduler (ASHA) without one."""
        row = self.see(trial)
        if row.finished_result or row.state in FINAL_STATES:
            return None
        if row.max_epochs and row.epoch >= row.max_epochs:  # ASHA stops at max_t: max_t == max_epochs does this
            with self._lock:
                row.state, row.why = TrialState.STOPPED_EARLY, "scheduler, before its evaluation"
            return (f"{self.label(row)}: stopped by the scheduler at its last epoch {row.epoch}/{row.max_epochs}, "
                    f"before its evaluation (a scheduler's max_t must exceed max_epochs)")
        with self._lock:
            row.state, row.why = TrialState.STOPPED_EARLY, "scheduler"
        return f"{self.label(row)}: stopped early by the scheduler after epoch {row.epoch}/{row.max_epochs}"

    def recovering(self, trial: Any) -> str:
        row = self.see(trial)
        with self._lock:
            row.state, row.restart_pending = TrialState.RESTARTING, True
        return (f"{self.label(row)}: trial failed after epoch {row.epoch}{last_error_line(trial)}; Ray restarts it "
                f"from its last checkpoint (up to max_failures times)")

    def failed(self, trial: Any) -> str:
        row = self.see(trial)
        with self._lock:
            row.state, row.why = TrialState.FAILED, "no retries left"
        return f"{self.label(row)}: trial failed after epoch {row.epoch}, with no retries left{last_error_line(trial)}"

    @staticmethod
    def _apply_result(row: TrialRow, result: dict) -> None:
        row.epoch = _epoch_of(result) or row.epoch
        if isinstance(result.get("val_accuracy"), (int, float)):
            row.val_accuracy = float(result["val_accuracy"])
        elif isinstance(result.get("best_val_accuracy"), (int, float)) and row.val_accuracy is None:
            row.val_accuracy = float(result["best_val_accuracy"])  # a finished result carries no last val_accuracy
        if isinstance(result.get("seconds"), (int, float)):
            row.seconds = float(result["seconds"])
        elif isinstance(result.get("seconds_per_epoch"), (int, float)) and row.seconds is None:
            row.seconds = float(result["seconds_per_epoch"])
        if result.get("finished"):
            row.finished_result = True
            epochs = int(result.get("epochs") or row.epoch)
            row.epoch = epochs
            stopped = bool(row.max_epochs) and epochs < row.max_epochs
            row.state, row.why = (TrialState.STOPPED_EARLY, "patience") if stopped else (TrialState.FINISHED, "")
            if result.get("resumed_from_epoch") and row.restarted_at is None:
                row.restarted_at = int(result["resumed_from_epoch"])
        else:
            row.state = TrialState.RUNNING


def starting_line(trials: int, cpus_per_trial: float, gpus_per_trial: float, cluster: dict[str, float],
                  max_concurrent: int | None = None) -> str:
    """What the log says the moment Tune starts, before the first epoch (which waits for each trial's worker to
    start and load TensorFlow): how many trials, on what, how many at a time. `cluster`: ray.cluster_resources()."""
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    fits = [int(cpus // cpus_per_trial)] if cpus_per_trial else []
    fits += [int(gpus // gpus_per_trial)] if gpus_per_trial else []
    at_once = max(1, min([trials, *fits, *([max_concurrent] if max_concurrent else [])]))
    on = f"{cpus:g} CPU{'s' if cpus != 1 else ''}" + (f" and {gpus:g} GPU{'s' if gpus != 1 else ''}" if gpus else "")
    each = f"{cpus_per_trial:g} CPU" + (f" and {gpus_per_trial:g} GPU" if gpus_per_trial else "")
    return (f"{trials} trial{'s' if trials != 1 else ''} starting on {on} ({each} each, up to {at_once} at a time); "
            f"a line per epoch of each trial follows")


# --- the terminal --------------------------------------------------------------------------------------------

def enable_live_progress() -> None:
    """Called by a command that owns its terminal (`fmnist run`): trials train under a live table there when
    stdout and stderr are both a terminal (not piped, not CI) and FMNIST_PROGRESS is not 'plain'. Never set for
    runs started by a deployment's runner or worker: they share their terminal with the runner's own logs.
    The table's elapsed time counts from this call: the run's, start-up and dataset included."""
    global _live_wanted, _run_started
    _live_wanted, _run_started = True, time.monotonic()


_live_wanted = False
_run_started: float | None = None


def live_progress_enabled() -> bool:
    # FMNIST_PROGRESS=plain keeps plain lines on a terminal too (screen readers, terminal multiplexers' logs).
    if not _live_wanted or current_settings().progress == "plain":
        return False
    return all(_is_terminal(stream) for stream in (sys.stdout, sys.stderr)) and \
        os.environ.get("TERM", "") not in ("dumb", "unknown")


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


_emitting = threading.local()  # set while the callback logs a progress line that the live table already shows


class _HideProgressLines(logging.Filter):
    """On a terminal handler while the live table is up: drop the records the table already shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_emitting, "progress", False)


def _terminal_handlers() -> list[logging.Handler]:
    """Every logging handler that writes to a terminal: Prefect's console handler (a StreamHandler on stderr
    that prints through a rich Console of its own) and any plain StreamHandler on a tty."""
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and _is_terminal(getattr(handler, "stream", None)):
                found[id(handler)] = handler
    return list(found.values())


class _AboveTheTable(io.TextIOBase):
    """A terminal stream whose lines are printed above the live table (through rich's FileProxy). Not a FileProxy
    itself: rich's Console unwraps one (`rich_proxied_file`) and would write straight through the table."""

    def __init__(self, console: Any, stream: IO[str]) -> None:
        from rich.file_proxy import FileProxy

        self._proxy = FileProxy(console, stream)
        self._stream = stream

    def write(self, text: str) -> int:
        self._proxy.write(text)
        return len(text)

    def flush(self) -> None:
        self._proxy.flush()

    def isatty(self) -> bool:
        return _is_terminal(self._stream)

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"


class LiveTable:
    """The rich Live view of a TrialBoard on stderr, with the terminal's log handlers routed above it."""

    def __init__(self, board: TrialBoard, stream: IO[str] | None = None) -> None:
        self.board = board
        self.stream = stream or sys.stderr
        self._live: Any = None
        self._undo: list[Callable[[], None]] = []
        self._lock = threading.RLock()

    @property
    def active(self) -> bool:
        return self._live is not None

    def start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        with self._lock:
            if self._live is not None:
                return
            console = Console(file=self.stream)
            live = Live(console=console, get_renderable=self.render, refresh_per_second=REFRESH_PER_SECOND,
                        redirect_stdout=True, redirect_stderr=True, transient=False)
            hide = _HideProgressLines()
            for handler in _terminal_handlers():
                handler.addFilter(hide)
                self._undo.append(lambda h=handler: h.removeFilter(hide))
                rich_console = getattr(handler, "console", None)  # Prefect's: prints through its own Console
                if isinstance(rich_console, Console):
                    original = rich_console.file
                    rich_console.file = _AboveTheTable(console, original)
                    self._undo.append(lambda c=rich_console, f=original: setattr(c, "file", f))
                else:
                    original = handler.setStream(_AboveTheTable(console, handler.stream))
                    self._undo.append(lambda h=handler, s=original: h.setStream(s))
            self._live = live
            live.start(refresh=True)

    def stop(self) -> None:
        """Stop refreshing, leave the table's last state on the terminal, hand the handlers their streams back."""
        with self._lock:
            live, self._live = self._live, None
            undo, self._undo = self._undo, []
            try:
                if live is not None:
                    live.stop()
            finally:
                for step in reversed(undo):
                    step()

    def restore_terminal_now(self) -> None:
        """For a process about to os._exit (a second Ctrl-C): take no lock (the interrupted thread may hold
        one), just show the cursor again and end the line, so that the shell's prompt is usable."""
        if self._live is not None:
            try:
                self.stream.write("\x1b[?25h\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def render(self) -> Any:
        from rich.table import Table

        rows = self.board.rows()
        elapsed = int(time.monotonic() - self.board.started)
        done = sum(1 for row in rows if row.state in FINAL_STATES)
        table = Table(title=f"trials: {done}/{len(rows)} done, elapsed {elapsed // 3600}:{elapsed // 60 % 60:02d}:"
                            f"{elapsed % 60:02d}", title_justify="left", box=None, pad_edge=False)
        for header, justify in (("trial", "left"), ("epoch", "right"), ("val acc", "right"),
                                ("s/epoch", "right"), ("state", "left")):
            table.add_column(header, justify=justify, no_wrap=True)
        styles = {TrialState.FINISHED: "green", TrialState.FAILED: "red", TrialState.STOPPED_EARLY: "yellow",
                  TrialState.RESTARTING: "magenta"}
        for row in rows:
            table.add_row(self.board.label(row), f"{row.epoch}/{row.max_epochs}",
                          "" if row.val_accuracy is None else f"{100 * row.val_accuracy:.2f}%",
                          "" if row.seconds is None else f"{row.seconds:.1f} s",
                          row.state_text(), style=styles.get(row.state))
        return table


_active_views: set[LiveTable] = set()


def restore_terminal() -> None:
    """What a process that quits at once (os._exit) calls first: no live table leaves the cursor hidden."""
    for view in list(_active_views):
        view.restore_terminal_now()


# --- the Tune callback ---------------------------------------------------------------------------------------

def trial_progress_callback(log: Log, live: bool) -> Any:
    """A tune.Callback that sends one line per epoch and per state change to `log` and, with `live`, shows the
    trials as a table updated in place on this process's terminal (stopped at the experiment's end; `close()`
    or `with` stops it on any other exit: Ctrl-C, an error).

    Tune pickles its callbacks into the experiment's tuner.pkl and a restored Tuner uses the unpickled ones;
    this one pickles as a reference to the callback of the process that restores it (`current_callback`),
    so a resumed run logs into its own log and terminal, and no logger or terminal goes into the store."""
    callback = _callback_class()(log, live)
    global _current
    _current = callback
    return callback


_current: Any = None


def current_callback() -> Any:
    """The callback made last in this process (what an unpickled one stands for); a silent one if none was."""
    return _current if _current is not None else _callback_class()(lambda _: None, False)


_callback_cls: type | None = None


def _callback_class() -> type:
    """tune.Callback's subclass, made on first use (ray.tune takes seconds to import)."""
    global _callback_cls
    if _callback_cls is not None:
        return _callback_cls
    from ray import tune

    class TrialProgress(tune.Callback):
        def __init__(self, log: Log, live: bool) -> None:
            self.log = log
            self.board = TrialBoard()
            self.view = LiveTable(self.board) if live else None
            self.starting: str | None = None  # said when Tune starts; make_tuner sets it (starting_line)

        # Pickled by reference (see trial_progress_callback); copies are the object itself.
        def __reduce__(self):
            return (current_callback, ())

        def __copy__(self):
            return self

        def __deepcopy__(self, memo):
            return self

        def __enter__(self):
            return self

        def __exit__(self, *exc_info) -> None:
            self.close()

        def close(self) -> None:
            if self.view is not None:
                _active_views.discard(self.view)
                self.view.stop()

        def _say(self, line: str | None) -> None:
            if not line:
                return
            hidden = self.view is not None and self.view.active
            _emitting.progress = hidden
            try:
                self.log(line)
            finally:
                _emitting.progress = False

        def setup(self, **info) -> None:
            self.board.started = _run_started if _run_started is not None else time.monotonic()
            if self.starting:
                self.log(self.starting)  # before the live table starts: a plain line, above it
            if self.view is not None:
                _active_views.add(self.view)
                try:
                    self.view.start()
                except Exception as exc:  # noqa: BLE001  (a view that cannot start must not fail the training)
                    self.close()
                    self.view = None
                    self.log(f"live progress view unavailable ({type(exc).__name__}: {exc}); plain lines instead")

        def on_step_begin(self, iteration, trials, **info) -> None:
            self.board.see_all(trials)

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self.board.started_trial(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self._say(self.board.result(trial, result))

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._say(self.board.completed(trial))

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:
            self._say(self.board.recovering(trial))

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._say(self.board.failed(trial))

        def on_experiment_end(self, trials, **info) -> None:
            self.board.see_all(trials)
            self.close()

    _callback_cls = TrialProgress
    return TrialProgress


def iter_rows(callback: Any) -> Iterator[TrialRow]:
    """The rows a callback shows (for tests and for a flow's summary)."""
    yield from callback.board.rows()
