"""A run's time limit (config.timeout): when it is reached, the run's Tune experiment is stopped (the trials end
where they are, their checkpoints kept: the run stays resumable) and the run ends with RunTimedOut.

The limit is this process's, per run id, as the lease is (tasks/tune/fencing.py asks both from its stopper, which
Tune pickles with only the run id). RunTimedOut is a TimeoutError: the flow engine records a flow run that raises
it as TimedOut (a Failed state), as for Prefect's own flow timeout. No Prefect here.
"""

from __future__ import annotations

import threading
import time

from tasks.errors import PipelineError

_limits: dict[str, tuple[float, float]] = {}  # run id → (monotonic deadline, limit in seconds)
_lock = threading.Lock()


class RunTimedOut(PipelineError, TimeoutError):
    """The run went past its time limit; what it trained is kept and a resume finishes it."""


def in_words(seconds: float) -> str:
    """6h, 90m, 45s: the largest unit that divides it, as the CLI takes it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def start_time_limit(run_id: str, seconds: float | None) -> None:
    """The run's limit counts from now (None: no limit)."""
    with _lock:
        if seconds is None:
            _limits.pop(run_id, None)
        else:
            _limits[run_id] = (time.monotonic() + seconds, seconds)


def clear_time_limit(run_id: str) -> None:
    with _lock:
        _limits.pop(run_id, None)


def time_is_up(run_id: str) -> bool:
    limit = _limits.get(run_id)
    return limit is not None and time.monotonic() >= limit[0]


def check_time_limit(run_id: str, what_next: str) -> None:
    """RunTimedOut once the run's limit has passed; `what_next` says how it goes on (the resume command)."""
    limit = _limits.get(run_id)
    if limit is not None and time.monotonic() >= limit[0]:
        raise RunTimedOut(f"run {run_id}: its time limit of {in_words(limit[1])} was reached; the trials were "
                          f"stopped and what they trained is kept: {what_next}")
