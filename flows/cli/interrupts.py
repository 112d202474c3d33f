"""Ctrl-C in a terminal: the first stops the run within seconds, a second quits at once, nothing is left running.

A terminal sends SIGINT to the whole process group: this process, its local Ray (raylet, GCS, agents, trials)
and Prefect's temporary server. Ray Tune's own handler would instead wind the experiment down gracefully for
minutes and then hand back unfinished trials; the job turns it off (TUNE_DISABLE_SIGINT_HANDLER) and stops
its own process tree instead: the trials' per-epoch checkpoints are already in the store, so a resume loses at
most the epoch in progress.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Callable

from tasks.processes import descendants, pid_alive

# After the first Ctrl-C, the longest the job waits for its own clean-up before it quits anyway: Prefect's engine
# keeps trying to report the crash to its temporary server, which the same Ctrl-C has stopped.
GRACE_S = 8.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a job stopped by Ctrl-C

_farewell: Callable[[], str] = lambda: "interrupted"  # noqa: E731  (set by handle_interrupts)
_said = threading.Event()
_pressed = threading.Event()


def was_interrupted() -> bool:
    """Whether Ctrl-C was pressed: then a SystemExit from Ray (its raylet, in the same process group, died of the
    same Ctrl-C and `ray.wait` exits) is the interrupt arriving by another road, not a failure of its own."""
    return _pressed.is_set()


def say_farewell() -> None:
    """The last line of an interrupted run (once, whichever path ends the process)."""
    if not _said.is_set():
        _said.set()
        print(_farewell(), file=sys.stderr, flush=True)


def stop_descendants(grace_s: float) -> None:
    """Terminate every process this one started (local Ray, trials, Prefect's temporary server), then kill what
    is left after `grace_s`: none of them is of use once the run is interrupted."""
    pids = descendants(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
            time.sleep(0.1)


def _quit_now(signum: int, frame: FrameType | None) -> None:
    from tasks.tune.progress import restore_terminal

    restore_terminal()  # a live table would leave the cursor hidden: os._exit skips its clean-up
    # The line first: once the raylet is killed, Ray's core worker in this process may end it at once
    # ("Raylet IPC connection failed … the local Raylet is dead", exit 1), before a line printed afterwards.
    say_farewell()
    stop_descendants(grace_s=0.5)
    os._exit(EXIT_INTERRUPTED)


def _quit_after_grace() -> None:
    time.sleep(GRACE_S)
    print(f"fmnist: clean-up took over {GRACE_S:.0f} s; quitting", file=sys.stderr, flush=True)
    _quit_now(signal.SIGINT, None)


def _first_interrupt(signum: int, frame: FrameType | None) -> None:
    _pressed.set()
    signal.signal(signal.SIGINT, _quit_now)
    print("\nfmnist: interrupted, stopping the trials (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
    threading.Thread(target=_quit_after_grace, name="interrupt-deadline", daemon=True).start()
    raise KeyboardInterrupt


def handle_interrupts(farewell: Callable[[], str]) -> None:
    """From now on a Ctrl-C raises KeyboardInterrupt once (the caller cleans up, calls say_farewell and exits 130),
    with a deadline; `farewell` makes the last line (how to resume)."""
    global _farewell
    _farewell = farewell
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGINT, _first_interrupt)
