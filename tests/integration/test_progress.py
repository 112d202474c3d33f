"""Live progress with a real Ray Tune: trials a real ASHA scheduler stops are shown stopped early."""

from __future__ import annotations

import re
import sys
import time

import pytest

from tasks.tune.progress import TrialState, iter_rows, trial_progress_callback
from tests.unit.test_progress import epoch, finished, spec_of


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

    from tasks.tune.ray_compat import aws_keys_kept_from_trials

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(sys.modules[epoch.__module__])  # epoch() and finished() too
    # As every Tuner of the project's is made: else Tune copies this session's AWS keys into the trials' runtime_env,
    # and the shared Ray's runtime_env_agent.log would hold them (test_run_flow's sentinel check found exactly that).
    lines: list[str] = []
    callback = trial_progress_callback(lines.append, live=False)
    tuner = tune.Tuner(
        _probe,
        param_space={"spec": spec_of("mlp1", 4), "max_epochs": 4, "quality": tune.grid_search([0.9, 0.8, 0.3, 0.2])},
        tune_config=tune.TuneConfig(scheduler=ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max",
                                                            max_t=5, grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="asha", callbacks=[callback], verbose=0))
    with callback, aws_keys_kept_from_trials():
        tuner.fit()
    rows = list(iter_rows(callback))
    states = {callback.board.label(row): (row.state, row.why, row.epoch) for row in rows}
    assert len(states) == 4 and all(label.startswith("mlp1 ") for label in states), states  # ids tell them apart
    stopped = [s for s in states.values() if s[:2] == (TrialState.STOPPED_EARLY, "scheduler")]
    done = [s for s in states.values() if s[0] == TrialState.FINISHED]
    assert stopped and all(epochs < 4 for _, _, epochs in stopped), states
    assert done and all(epochs == 4 for _, _, epochs in done), states
    assert any(re.match(r"mlp1 \w+_\d+: stopped early by the scheduler after epoch \d/4", line) for line in lines)
