"""The search's proposals and what TPE is told (tasks/tune/search.py, tasks/tune/ray_compat.TruthfulOptunaSearch),
driven through the searcher's own Tune API (set_search_properties, suggest, on_trial_result, on_trial_complete) with
real Optuna, no Ray session: seeds per (seed, architecture, run id), trials a scheduler stopped told as PRUNED,
earlier searches' trials added before the first proposal, winners and retrain seeds. The same on a real local Ray:
tests/integration/test_search.py."""

from __future__ import annotations

import json

import optuna
import pytest
from ray import tune

from tasks.config import SearchConfig
from tasks.model.recipes import Recipe
from tasks.tune.search import (FINISHED, make_searcher, past_search_rows, past_trial, retrain_seeds, search_space,
                               tpe_seed, winners_of)

State = optuna.trial.TrialState


def ready_searcher(config: SearchConfig, architecture: str, run_id: str, past: list[dict] = ()):
    """The searcher as Tune sets it up: the param space a search's Tuner gets (a constant spec, the recipe)."""
    searcher = make_searcher(config, architecture, run_id, list(past))
    space = {"spec": {"architecture": architecture},
             "recipe": search_space(architecture, config.max_epochs, config.scheduler)}
    assert searcher.set_search_properties("val_accuracy", "max", space)
    return searcher


def opening(config: SearchConfig, architecture: str, run_id: str, count: int = 3) -> list[tuple]:
    searcher = ready_searcher(config, architecture, run_id)
    return [(round(s["recipe"]["learning_rate"], 6), s["recipe"]["batch_size"], s["recipe"]["schedule"])
            for s in (searcher.suggest(f"t{i}") for i in range(count))]


def test_tpe_is_seeded_per_seed_architecture_and_run_and_reproducible():
    config = SearchConfig(preset="quick")
    assert tpe_seed(0, "baseline", "night-1") == tpe_seed(0, "baseline", "night-1")
    assert len({tpe_seed(0, "baseline", "night-1"), tpe_seed(0, "mlp1", "night-1"), tpe_seed(0, "baseline", "night-2"),
                tpe_seed(1, "baseline", "night-1")}) == 4
    first = opening(config, "baseline", "night-1")
    assert opening(config, "baseline", "night-1") == first  # the same three: the same opening recipes
    assert opening(config, "mlp1", "night-1") != first  # another architecture, the same night and seed
    assert opening(config, "baseline", "night-2") != first  # another night


def test_under_asha_the_epoch_budget_is_asha_max_t_and_searched_under_fifo_only():
    assert search_space("baseline", 40, "asha")["epochs"] == 40  # a constant: every trial's schedule spans max_t
    assert isinstance(search_space("baseline", 40, "fifo")["epochs"], tune.search.sample.Categorical)
    sample = ready_searcher(SearchConfig(preset="quick"), "baseline", "r").suggest("t0")
    assert "epochs" not in sample["recipe"]  # not among what Optuna proposes; Tune merges the constant in


def test_a_trial_stopped_before_its_last_epoch_is_told_to_optuna_as_pruned():
    searcher = ready_searcher(SearchConfig(preset="quick"), "baseline", "r")
    for trial_id in ("cut", "whole", "failed"):
        searcher.suggest(trial_id)
    searcher.on_trial_result("cut", {"val_accuracy": 0.70, "training_iteration": 1, FINISHED: False})
    # ASHA stops "cut" on its epoch-2 result, which Tune hands to the searcher only at completion
    searcher.on_trial_complete("cut", {"val_accuracy": 0.72, "training_iteration": 2, FINISHED: False})
    searcher.on_trial_result("whole", {"val_accuracy": 0.75, "training_iteration": 1, FINISHED: False})
    searcher.on_trial_complete("whole", {"val_accuracy": 0.80, "training_iteration": 2, FINISHED: True})
    searcher.on_trial_complete("failed", None, error=True)
    cut, whole, failed = searcher._ot_study.get_trials(deepcopy=False)
    assert cut.state == State.PRUNED and cut.intermediate_values == {1: 0.70, 2: 0.72} and cut.value == 0.72
    assert whole.state == State.COMPLETE and whole.value == 0.80
    assert failed.state == State.FAIL


def leaderboard_row(arch: str, val: float, ended: str = "finished", epochs: int = 2, **recipe) -> dict:
    return {"architecture": arch, "trial_id": f"{arch}-{val}", "config": Recipe(epochs=epochs, **recipe).model_dump(),
            "epochs": epochs if ended == "finished" else 1, "val_accuracy": val, "best_val_accuracy": val,
            "stopped_early": ended == "stopped by ASHA", "ended": ended, "new": True}


def test_earlier_trials_of_the_same_space_are_added_before_the_first_proposal():
    config = SearchConfig(preset="quick")
    past = [leaderboard_row("baseline", 0.81, learning_rate=3e-3, optimizer="adam"),
            leaderboard_row("baseline", 0.60, "stopped by ASHA", learning_rate=2e-4, optimizer="adamw", weight_decay=1e-3),
            leaderboard_row("baseline", 0.85, epochs=1),  # another budget: another schedule horizon, left out
            {**leaderboard_row("baseline", 0.90), "val_accuracy": None, "ended": "failed"}]  # failed: left out
    assert [past_trial(row, config) is not None for row in past] == [True, True, False, False]
    searcher = ready_searcher(config, "baseline", "r", past)
    trials = searcher._ot_study.get_trials(deepcopy=False)
    assert searcher.past_trials_added == 2 and [t.state for t in trials] == [State.COMPLETE, State.PRUNED]
    assert trials[0].params["recipe/learning_rate"] == 3e-3 and "recipe/weight_decay" not in trials[0].params
    assert trials[1].intermediate_values == {1: 0.60}
    assert searcher.suggest("t0")  # TPE proposes on top of them


def test_past_searches_are_read_from_the_same_store_preset_rows_and_epochs(store):
    def stored_search(run_id: str, config: SearchConfig, rows: list[dict]) -> None:
        store.put_bytes(f"runs/{run_id}/config.json", json.dumps({"kind": "search", **config.model_dump(mode="json")}).encode())
        store.put_bytes(f"runs/{run_id}/search/leaderboard.json", json.dumps(rows).encode())

    quick = SearchConfig(preset="quick")
    stored_search("night-1", quick, [leaderboard_row("baseline", 0.8), {**leaderboard_row("baseline", 0.7), "new": False}])
    stored_search("longer", SearchConfig(preset="quick", max_epochs=4), [leaderboard_row("baseline", 0.9, epochs=4)])
    stored_search("full-rows", SearchConfig(preset="quick", train_rows=6000), [leaderboard_row("baseline", 0.9)])
    rows = past_search_rows(store, quick, "night-2")
    assert [(row["run_id"], row["val_accuracy"]) for row in rows] == [("night-1", 0.8)]  # its own warm start not again
    assert past_search_rows(store, quick, "night-1") == []  # a search never starts from itself


def test_winners_are_chosen_on_the_final_epoch_among_whole_budgets_and_retrained_with_other_seeds():
    rows = [leaderboard_row("mlp1", 0.84), {**leaderboard_row("mlp1", 0.83), "best_val_accuracy": 0.86},
            leaderboard_row("mlp1", 0.88, "stopped by ASHA"),  # higher, but cut at a rung: not a whole budget
            {**leaderboard_row("mlp1", 0.95), "new": False, "run_id": "night-1"}]  # an earlier night's
    assert winners_of(rows)["mlp1"]["val_accuracy"] == 0.84
    only_cut = [leaderboard_row("cnn2", 0.5, "stopped by the time budget"), leaderboard_row("cnn2", 0.6, "stopped")]
    assert winners_of(only_cut)["cnn2"]["val_accuracy"] == 0.6
    assert retrain_seeds(SearchConfig(seed=0, seeds=3)) == [1, 2, 3]  # the search's trials all train with seed 0


def test_ray_compat_names_a_missing_private_attribute_of_optuna_search_at_import(monkeypatch):
    """TruthfulOptunaSearch reads OptunaSearch's _ot_trials, _ot_study, _completed_trials, _space, _metric: a Ray
    that renamed one fails when tasks.tune.ray_compat loads, naming it, not hours into a search."""
    from tasks.errors import IncompatibleVersion
    from tasks.tune import ray_compat

    ray_compat._check()  # this Ray (the pinned 2.60) has them all
    monkeypatch.setattr(ray_compat, "_OPTUNA_SEARCH_ATTRIBUTES", (*ray_compat._OPTUNA_SEARCH_ATTRIBUTES, "_renamed"))
    with pytest.raises(IncompatibleVersion, match=r"lacks OptunaSearch\(\)\._renamed"):
        ray_compat._check()


def test_no_warm_start_is_a_flag_of_the_search_and_of_its_deployment_only():
    from flows.cli.options import given_options, parser
    from tasks.config import build_search_config
    from tasks.errors import ConfigError

    assert build_search_config(**given_options(parser().parse_args(["search", "--no-warm-start"]))).warm_start is False
    assert build_search_config(**given_options(parser().parse_args(["search"]))).warm_start is True
    with pytest.raises(ConfigError, match=r"^--no-warm-start: options of a search; .*--flow search --no-warm-start"):
        given_options(parser().parse_args(["deploy", "--no-warm-start"]))


# --- a resumed search: which of its trials ASHA stopped, when the ASHA that stopped them ran in the killed process ---

class _Trial:
    """What Ray's ASHAScheduler reads of a trial through its public methods: its id."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


@pytest.mark.parametrize("max_epochs, grace, factor", [(20, 2, 3.0), (2, 1, 3.0), (18, 2, 3.0), (10, 1, 1.5)])
def test_the_epochs_asha_stops_at_are_its_rungs(max_epochs, grace, factor):
    """Ray's own ASHA, fed worsening trials epoch by epoch, stops them only at asha_rung_epochs (the rule a resumed
    search uses to name the trials its killed ASHA stopped)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from tasks.tune.search import asha_rung_epochs

    config = SearchConfig(preset="quick", max_epochs=max_epochs, grace_period=grace, reduction_factor=factor)
    asha = ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=max_epochs,
                         grace_period=grace, reduction_factor=factor)
    stopped_at = set()
    for number in range(30):  # each worse than the last: most are stopped at some rung
        trial = _Trial(f"t{number}")
        asha.on_trial_add(None, trial)
        for epoch in range(1, max_epochs + 1):
            result = {"epoch": epoch, "val_accuracy": 0.9 - 0.01 * number + 0.001 * epoch, "training_iteration": epoch}
            if asha.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                if epoch < max_epochs:
                    stopped_at.add(epoch)
                break
    assert stopped_at and stopped_at <= asha_rung_epochs(config)
    assert max_epochs not in asha_rung_epochs(config)  # at max_t a trial has finished: never "stopped by ASHA"
