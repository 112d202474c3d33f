"""Restarts spaced by a store outage: a failed trial is restarted only once the store answers again.

Tune restarts a failed trial at once (FailureConfig has no delay), and a trial restarted during an S3 outage fails
again before it reaches the project's code: Tune itself looks up its checkpoint in the store first. So every trial
spent its max_failures restarts within seconds of an outage's start (+0, +12, +27 s), and a 30 s blip failed the
run. This callback holds the restart in Tune's loop until the store answers, for at most the run's store_wait_s;
past that the restart goes ahead and fails as before, and the run ends with the store's error and the resume hint.
Trials still running are not stopped meanwhile; their results wait in Ray until the loop goes on.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from tasks.data.store import open_store_when_it_answers
from tasks.errors import StoreUnreachable


class WaitForStoreBeforeRestart(tune.Callback):
    """A Tune callback: on_trial_recover (a failed trial requeued) blocks until the store answers, or wait_s."""

    def __init__(self, store_uri: str, s3_endpoint: str | None, wait_s: float) -> None:
        # The URI, not a Store: Tune pickles its callbacks into the experiment state, and a resume unpickles them.
        self.store_uri, self.s3_endpoint, self.wait_s = store_uri, s3_endpoint, wait_s

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        try:
            open_store_when_it_answers(self.store_uri, self.s3_endpoint, self.wait_s)
        except StoreUnreachable:
            pass  # still away: the restart fails and counts as one of max_failures, as it would have
