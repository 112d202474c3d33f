"""A run's Tune experiment stops when the run's lease is lost (tasks/runs/lease.py).

The lease's renewer notices a takeover at its next beat (a quarter TTL); Tune asks its stopper's stop_all() at every
step of its loop (every 0.1 s or so), so the trials are stopped within one renewal interval of the loss. The stopper
holds only the run id (Tune pickles it into tuner.pkl, and a resume, the taker's, unpickles it): it asks this
process's lease on that run, so a resumed experiment is stopped by its new holder's lease, never by the old one's.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from tasks.runs.lease import held_lease
from tasks.runs.deadline import time_is_up


class StopWhenLeaseLost(tune.Stopper):
    """stop_all() is True once this process's lease on the run is lost; single trials are never stopped by it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        """Also True once the run's time limit has passed (tasks.runs.deadline): the same clean stop, the trials'
        checkpoints kept. The class keeps its name: resumed experiments unpickle it from tuner.pkl."""
        lease = held_lease(self.run_id)
        return (lease is not None and lease.lost is not None) or time_is_up(self.run_id)
