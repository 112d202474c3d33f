"""`fmnist search`: Ray Tune searches each architecture's training recipe, then retrains the winners.

Per architecture, one Tune experiment: Optuna's TPE proposes recipes (search_space, below) under a
concurrency limit the cluster can hold, and ASHA stops the poor ones after a few epochs. The trials see train and
validation rows only; each architecture's winner is the trial with the best validation accuracy. Only then are the
test rows read: the winning recipe is retrained with several seeds, each model tested once, and Table 1 gives
their mean ± standard deviation beside the report's single run. Driver-side code: no Prefect here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from tasks.model.architectures import ARCHITECTURES
from tasks.config import PRESETS, SearchConfig
from tasks.errors import PipelineError
from tasks.tune.cluster import connect_ray
from tasks.tune.fanout import Experiment, fit_or_explain, make_tuner, trial_spec
from tasks.tune.progress import live_progress_enabled, trial_progress_callback
from tasks.model.recipes import Recipe, keep_if_better, parse_recipe, recipe_from_sample, report_recipe
from tasks.keys import RunPaths
from tasks.data.shards import load_split
from tasks.data.store import Store
from tasks.model.training import load_dataset_arrays
from tasks.runs.run import Run
from tasks.progress import Progress

METRIC, MODE = "val_accuracy", "max"
ARTIFACT_FILES = ("model.keras", "history.csv", "curves.png", "confusion.png")  # metrics.json is published last


class SearchError(PipelineError):
    """A search that produced nothing to choose from."""


# --- the search space: Ray Tune distributions over a recipe -------------------------------------------------------------------------------------------

def epoch_budgets(max_epochs: int) -> list[int]:
    """A quarter, half and all of max_epochs (distinct, at least 1): the search chooses among them."""
    return sorted({max(1, max_epochs // 4), max(1, max_epochs // 2), max_epochs})


def search_space(architecture: str, max_epochs: int) -> dict[str, Any]:
    """Ray Tune distributions over the recipe; the layers stay the architecture's own."""
    from ray import tune

    space: dict[str, Any] = {
        "learning_rate": tune.loguniform(1e-4, 1e-2),
        "batch_size": tune.choice([64, 128, 256]),
        "optimizer": tune.choice(["adam", "adamw"]),
        "weight_decay": tune.loguniform(1e-5, 1e-1),
        "schedule": tune.choice(["constant", "cosine", "one_cycle"]),
        "label_smoothing": tune.uniform(0.0, 0.15),
        "augmentation": tune.choice(["none", "shift", "shift_flip"]),
        "epochs": tune.choice(epoch_budgets(max_epochs)),
    }
    if ARCHITECTURES[architecture].dropout is not None:  # the layer list is fixed; its dropout rate is a recipe knob
        space["dropout"] = tune.uniform(0.0, 0.6)
    return space


# --- one architecture's search ----------------------------------------------------------------------------------

def default_concurrency(config: SearchConfig) -> int:
    """As many trials at once as the cluster's CPUs (and GPUs, when trials take a share) hold."""
    import ray

    resources = ray.cluster_resources()
    fits = [resources.get("CPU", 0) / config.cpus_per_trial]
    if config.gpus_per_trial:
        fits.append(resources.get("GPU", 0) / config.gpus_per_trial)
    return max(1, int(min(fits)))


def make_scheduler(config: SearchConfig):
    """ASHA on validation accuracy over epochs (its rungs at grace_period × reduction_factor^k), which also
    remembers which trials it stopped; or FIFO, which lets every trial train to its budget."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    if config.scheduler == "fifo":
        scheduler = FIFOScheduler()
        scheduler.stopped = set()  # type: ignore[attr-defined]
        return scheduler

    class RecordingASHA(ASHAScheduler):
        """ASHAScheduler that records the trials it stopped before their own last epoch."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.stopped: set[str] = set()

        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and not result.get("finished"):
                self.stopped.add(trial.trial_id)
            return decision

    return RecordingASHA(time_attr="epoch", max_t=config.max_epochs, grace_period=min(config.grace_period, config.max_epochs),
                         reduction_factor=config.reduction_factor)


def startup_trials(num_samples: int) -> int:
    """Random proposals before TPE models the results: a third of the samples, 3 to 10. Optuna's default of 10
    would leave a 6- or 10-sample search entirely random."""
    return min(10, max(3, num_samples // 3))


def tpe_sampler(num_samples: int, seed: int):
    """Optuna's TPE, seeded (the same proposals for the same results), with a start-up sized to the budget."""
    import optuna

    return optuna.samplers.TPESampler(n_startup_trials=startup_trials(num_samples), seed=seed)


def search_experiment(run: Run, architecture: str, train_rows: tuple[np.ndarray, np.ndarray],
                      time_budget_s: float | None):
    """One architecture's experiment under runs/<run_id>/search/<architecture>; returns (experiment, scheduler)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    config = run.config
    scheduler = make_scheduler(config)
    searcher = ConcurrencyLimiter(OptunaSearch(sampler=tpe_sampler(config.num_samples, config.seed)),
                                  max_concurrent=config.max_concurrent or default_concurrency(config))
    name = f"search/{architecture}"
    # The base spec: its recipe's epochs are the search's bound; each trial's sampled recipe replaces it.
    base = trial_spec(run, name, architecture, report_recipe(config.batch_size, config.max_epochs), publish=False)
    tune_config = tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                  num_samples=config.num_samples, time_budget_s=time_budget_s)
    return Experiment(name, [base], {"train": train_rows}, search_space(architecture, config.max_epochs),
                      tune_config), scheduler


def how_it_ended(result, stopped_by_asha: set[str], budget_reached: bool) -> str:
    trial_id = result.metrics.get("trial_id")
    if result.error:
        return "failed"
    if result.metrics.get("finished"):
        return "finished"
    if trial_id in stopped_by_asha:
        return "stopped by ASHA"
    return "stopped by the time budget" if budget_reached else "stopped"


def leaderboard_rows(results, architecture: str, stopped_by_asha: set[str], budget_reached: bool) -> list[dict]:
    """One object per trial that trained at least one epoch, best validation accuracy first."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        if "best_val_accuracy" not in metrics:
            continue  # never trained an epoch (the budget ran out first, or it failed at once)
        ended = how_it_ended(result, stopped_by_asha, budget_reached)
        rows.append({
            "architecture": architecture,
            "trial_id": metrics.get("trial_id"),
            "config": recipe_from_sample(result.config["recipe"]).model_dump(),
            "epochs": int(metrics["epoch"]),
            "best_val_accuracy": float(metrics["best_val_accuracy"]),
            "stopped_early": ended == "stopped by ASHA",
            "ended": ended,
        })
    return sorted(rows, key=lambda row: -row["best_val_accuracy"])


def search_architecture(run: Run, architecture: str, train_rows: tuple[np.ndarray, np.ndarray],
                        time_budget_s: float | None, progress: Progress) -> list[dict]:
    config = run.config
    progress(f"search {architecture}: {config.num_samples} recipes, {config.scheduler.upper()}"
             + (f", {time_budget_s:.0f} s of the time budget" if time_budget_s else ""))
    shown = trial_progress_callback(progress, live=live_progress_enabled())
    with shown:  # on a terminal, the trials as a live table (plain lines elsewhere); stopped on any exit
        experiment, scheduler = search_experiment(run, architecture, train_rows, time_budget_s)
        tuner = make_tuner(run, experiment, progress, progress_callback=shown)
        started = time.monotonic()
        results = fit_or_explain(tuner, run, tolerate_failures=True,
                                 resume_with="fmnist search (a search is not resumed: start it again)")
    budget_reached = time_budget_s is not None and time.monotonic() - started >= time_budget_s * 0.98
    rows = leaderboard_rows(results, architecture, scheduler.stopped, budget_reached)
    if not rows:
        errors = [r.error for r in results if r.error]
        raise SearchError(f"search {architecture}: no trial trained an epoch"
                          + (f" ({len(errors)} failed: {str(errors[0]).splitlines()[-1][:300]})" if errors else
                             " before the time budget ran out; give --time-budget more time"))
    progress(f"search {architecture}: {len(rows)} trials, {sum(r['stopped_early'] for r in rows)} stopped early, best "
             f"validation accuracy {100 * rows[0]['best_val_accuracy']:.2f}%")
    return rows


def search(run: Run, progress: Progress = lambda _: None) -> list[dict]:
    """Every architecture's search, one after another (each uses the whole cluster); the time budget is shared
    out evenly among the architectures not yet searched. Reads the training rows only."""
    config = run.config
    connect_ray(config.ray_address)  # joined already when the flow ran tasks.tune.cluster.preflight
    images, labels, _ = load_split(run.store, run.dataset_version, "train", config.train_rows, run.manifest)
    deadline = None if config.time_budget is None else time.monotonic() + config.time_budget
    rows: list[dict] = []
    for index, architecture in enumerate(config.architectures):
        budget = None if deadline is None else max(1.0, (deadline - time.monotonic()) / (len(config.architectures) - index))
        rows += search_architecture(run, architecture, (images, labels), budget, progress)
    return rows


def winners_of(rows: list[dict]) -> dict[str, dict]:
    """Each architecture's trial with the best validation accuracy (the test set plays no part)."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["architecture"] not in best or row["best_val_accuracy"] > best[row["architecture"]]["best_val_accuracy"]:
            best[row["architecture"]] = row
    return best


# --- the leaderboard ------------------------------------------------------------------------------------------------

def leaderboard_markdown(run_id: str, rows: list[dict]) -> str:
    lines = [f"# Search {run_id}: leaderboard", "",
             "| # | architecture | best val acc % | epochs | ended | recipe |", "|---:|---|---:|---:|---|---|"]
    for rank, row in enumerate(sorted(rows, key=lambda r: (r["architecture"], -r["best_val_accuracy"])), 1):
        lines.append(f"| {rank} | {row['architecture']} | {100 * row['best_val_accuracy']:.2f} | {row['epochs']} | "
                     f"{row['ended']} | {Recipe(**row['config']).describe()} |")
    return "\n".join(lines) + "\n"


def leaderboard_table(rows: list[dict]) -> list[dict]:
    """The leaderboard flat, for the Prefect UI's table artifact: the recipe in words."""
    return [{**{k: v for k, v in row.items() if k != "config"}, "recipe": Recipe(**row["config"]).describe()}
            for row in rows]


def publish_leaderboard(store: Store, run_id: str, rows: list[dict]) -> None:
    paths = RunPaths(run_id)
    store.put_bytes(paths.leaderboard_md, leaderboard_markdown(run_id, rows).encode())
    store.put_bytes(paths.leaderboard_json, json.dumps(rows, indent=2).encode())


# --- the winners, retrained with several seeds and tested once -------------------------------------------------------

def retrain_winners(run: Run, winners: dict[str, dict], progress: Progress = lambda _: None) -> dict[str, dict]:
    """Each winner's recipe trained with seeds seed … seed+seeds-1 (one Tune trial each, through the run's own
    trainable, so each is tested once and published under <arch>/seed-<n>/); then the seed with the best
    validation accuracy becomes the architecture's model (<arch>/), its metrics.json giving all seeds."""
    config = run.config
    seeds = [config.seed + offset for offset in range(config.seeds)]
    specs = [trial_spec(run, "retrain", arch, parse_recipe(row["config"], f"the winning recipe of {arch}"), seed=seed,
                        artifact_name=RunPaths.seed_folder(arch, seed), recipe_name="search")
             for arch, row in winners.items() for seed in seeds]
    arrays = load_dataset_arrays(run.store, run.dataset_version, config.train_rows, config.test_rows, run.manifest)
    shown = trial_progress_callback(progress, live=live_progress_enabled())
    with shown:
        tuner = make_tuner(run, Experiment("retrain", specs, arrays), progress, progress_callback=shown)
        fit_or_explain(tuner, run, resume_with="fmnist search (a search is not resumed: start it again)")
    return {arch: publish_winner(run.store, run.run_id, arch,
                                 [json.loads(run.store.get_bytes(run.paths.metrics(RunPaths.seed_folder(arch, s))))
                                  for s in seeds])
            for arch in winners}


def seed_statistics(per_seed: list[dict]) -> dict[str, Any]:
    test = np.array([m["test_accuracy"] for m in per_seed])
    val = np.array([m["best_val_accuracy"] for m in per_seed])
    return {"seeds": [{"seed": m["seed"], "epochs": m["epochs"], "best_val_accuracy": m["best_val_accuracy"],
                       "test_accuracy": m["test_accuracy"]} for m in per_seed],
            "test_accuracy_mean": float(test.mean()),
            "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,  # sample std of the seeds
            "val_accuracy_mean": float(val.mean())}


def publish_winner(store: Store, run_id: str, architecture: str, per_seed: list[dict]) -> dict:
    """Copy the chosen seed's files to runs/<run_id>/<arch>/ (metrics.json last), with every seed's numbers."""
    best = max(per_seed, key=lambda m: m["best_val_accuracy"])
    paths = RunPaths(run_id)
    source, target = paths.model_prefix(RunPaths.seed_folder(architecture, best["seed"])), paths.model_prefix(architecture)
    for name in ARTIFACT_FILES:
        store.put_bytes(f"{target}/{name}", store.get_bytes(f"{source}/{name}"))
    metrics = {**best, "chosen_seed": best["seed"], **seed_statistics(per_seed)}
    store.put_bytes(paths.metrics(architecture), json.dumps(metrics, indent=2).encode())
    return metrics


# --- Table 1 and the stored recipes ---------------------------------------------------------------------------------

def search_table_rows(winners: dict[str, dict]) -> list[dict[str, Any]]:
    """Table 1 of the search: the winners' test accuracy (mean ± std over seeds) beside the report's single run."""
    rows = []
    for key, spec in ARCHITECTURES.items():
        if key not in winners:
            continue
        ours = winners[key]
        report = spec.report.test_accuracy if spec.report else None
        mean = 100 * ours["test_accuracy_mean"]
        rows.append({"model": spec.report_name, "key": key, "params": ours["params"],
                     "seeds": len(ours["seeds"]), "test_acc_mean": round(mean, 2),
                     "test_acc_std": round(100 * ours["test_accuracy_std"], 2), "report_test_acc": report,
                     "test_acc_diff": None if report is None else round(mean - report, 2),
                     "val_acc_mean": round(100 * ours["val_accuracy_mean"], 2), "epochs": ours["epochs"],
                     "recipe": ours["recipe"]})
    return rows


def search_table_markdown(run_id: str, rows: list[dict], note: str = "") -> str:
    lines = [f"# Search {run_id}: Table 1, the winning recipes beside the report", "",
             "| Model | Params | Test acc % (mean ± std, seeds) | Report | Δ (points) | Val acc % | Recipe |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        report = "—" if r["report_test_acc"] is None else f"{r['report_test_acc']:.2f}"
        diff = "—" if r["test_acc_diff"] is None else f"{r['test_acc_diff']:+.2f}"
        lines.append(f"| {r['model']} | {r['params']:,} | {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} "
                     f"({r['seeds']}) | {report} | {diff} | {r['val_acc_mean']:.2f} | {Recipe(**r['recipe']).describe()} |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def recipes_comparable(config: SearchConfig) -> bool:
    """Recipes are kept per preset, and only from searches on the preset's own rows (the epoch budget is part of a
    recipe, so max_epochs may differ)."""
    preset = PRESETS[config.preset]
    return config.train_rows == preset["train_rows"] and config.test_rows == preset["test_rows"]


def store_recipes(store: Store, config: SearchConfig, run_id: str, winners: dict[str, dict]) -> dict[str, bool]:
    """Each winner's recipe into recipes/<preset>/<arch>.json where it beats the stored one on mean validation
    accuracy; {arch: stored?}. Nothing is stored from a search on other rows than its preset's."""
    if not recipes_comparable(config):
        return {}
    return {arch: keep_if_better(store, config.preset, arch, {
        "architecture": arch, "recipe": metrics["recipe"], "run_id": run_id,
        "val_accuracy_mean": metrics["val_accuracy_mean"], "test_accuracy_mean": metrics["test_accuracy_mean"],
        "test_accuracy_std": metrics["test_accuracy_std"], "seeds": len(metrics["seeds"]),
        "test_rows": metrics["rows"]["test"]}) for arch, metrics in winners.items()}
