"""Ctrl-C in a terminal, or SIGTERM (what `systemctl stop`, `docker stop`, a CI time-out or a scheduler sends): the
first stops the run within seconds and says how to resume it, a second quits at once, nothing is left running.

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
# After SIGTERM, less: a supervisor sends SIGKILL after its own grace (Docker's is 10 s), and when the whole group was
# terminated the local Ray is already gone, so waiting longer on it gains nothing.
SIGTERM_GRACE_S = 5.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a job stopped by Ctrl-C
_NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}

def _NOT_A_CLI_RUN() -> str:
    return "interrupted"


_farewell: Callable[[], str] = _NOT_A_CLI_RUN  # set by handle_interrupts
_said = threading.Event()
_pressed = threading.Event()
_received: list[int] = []  # the signal that stopped the run: its exit code is 128 + it, as a shell reports


def exit_code() -> int:
    """130 after Ctrl-C, 143 after SIGTERM: what a shell or a supervisor expects of a process stopped by either."""
    return 128 + (_received[0] if _received else signal.SIGINT)


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
    os._exit(exit_code())


def _quit_after_grace(grace_s: float) -> None:
    time.sleep(grace_s)
    print(f"fmnist: clean-up took over {grace_s:.0f} s; quitting", file=sys.stderr, flush=True)
    _quit_now(signal.SIGINT, None)


def _announce(signum: int) -> None:
    """The first signal: say so, and start the deadline after which the process quits whatever it is waiting on."""
    _pressed.set()
    _received.append(signum)
    again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM or Ctrl-C"
    print(f"\nfmnist: {_NAMES.get(signum, 'stopped')}, stopping the trials ({again} again to quit at once)",
          file=sys.stderr, flush=True)
    grace_s = SIGTERM_GRACE_S if signum == signal.SIGTERM else GRACE_S
    threading.Thread(target=_quit_after_grace, args=(grace_s,), name="interrupt-deadline", daemon=True).start()


def _first_interrupt(signum: int, frame: FrameType | None) -> None:
    if _pressed.is_set():  # already announced by the wrapper of Prefect's bridge: this is the second
        _quit_now(signum, frame)
    _announce(signum)
    signal.signal(signal.SIGINT, _quit_now)
    signal.signal(signal.SIGTERM, _quit_now)
    raise KeyboardInterrupt


def deadline_under_prefects_sigterm_bridge() -> None:
    """Inside a flow run started by this CLI: Prefect's flow engine has replaced the SIGTERM handler with its
    bridge, which raises TerminationSignal and hands the signal back to ours only once the flow has unwound. With
    the whole process group terminated, the local Ray is dead and unwinding waits on it (Ray gives up after 60 s).
    Wrap the bridge so that a SIGTERM is announced and the deadline starts at once; Prefect still records the run
    as it would. No-op outside the CLI (a deployment's worker: SIGTERM is the runner's cancel, Prefect's alone)."""
    if _farewell is _NOT_A_CLI_RUN or threading.current_thread() is not threading.main_thread():
        return
    bridge = signal.getsignal(signal.SIGTERM)
    if bridge in (_first_interrupt, _quit_now) or getattr(bridge, "announces_fmnist_sigterm", False):
        return

    def announce_then_bridge(signum: int, frame: FrameType | None) -> None:
        if _pressed.is_set():
            _quit_now(signum, frame)
        _announce(signum)
        if callable(bridge):
            bridge(signum, frame)

    announce_then_bridge.announces_fmnist_sigterm = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, announce_then_bridge)


def handle_interrupts(farewell: Callable[[], str]) -> None:
    """From now on a Ctrl-C or a SIGTERM raises KeyboardInterrupt once (the caller cleans up, calls say_farewell and
    exits with exit_code()), with a deadline; `farewell` makes the last line (how to resume). SIGTERM may come to
    this process alone (then its local Ray and Prefect's server are stopped by it, stop_descendants) or to the
    whole group (then Ray's processes end by themselves, and the deadline keeps this one from waiting on them)."""
    global _farewell
    _farewell = farewell
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGINT, _first_interrupt)
    signal.signal(signal.SIGTERM, _first_interrupt)
