"""`fmnist search`: Ray Tune searches each architecture's training recipe, then retrains the winners.

Per architecture, one Tune experiment: Optuna's TPE (seeded per seed, architecture and run id, and warm-started
from the store's earlier searches) proposes recipes (search_space, below) under a concurrency limit the cluster can
hold, and ASHA stops the poor ones after a few epochs, which TPE is told as pruned. The trials see train and
validation rows only; each architecture's winner is the trial with the best final-epoch validation accuracy among
those that trained their whole budget. Only then are the test rows read: the winning recipe is retrained with
seeds other than the search's, each model tested once, and Table 1 gives their mean ± standard deviation beside the
report's single run. Driver-side code: no Prefect here.

A search killed part-way is finished by `fmnist search --resume RUN_ID` (or a Retry of its flow run): each
architecture whose search ended left its rows (runs/<id>/search/<arch>.rows.json) and is not searched again; the
interrupted one restores its Tune experiment (finished trials kept, running ones from their checkpoints, the Optuna
study and the samples left as they were saved, warm-started from the same earlier trials); the winners' retraining
restores as a run's trials do.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

from tasks.model.architectures import ARCHITECTURES
from tasks.config import PRESETS, SearchConfig
from tasks.errors import PipelineError
from tasks.tune.cluster import connect_ray
from tasks.tune.fanout import Experiment, fit_or_explain, make_tuner, resumes, trial_spec
from tasks.tune.progress import live_progress_enabled, trial_progress_callback
from tasks.tune.ray_compat import PastTrial, TruthfulOptunaSearch
from tasks.model.recipes import Recipe, RecipeKept, keep_if_better, parse_recipe, recipe_from_sample, report_recipe
from tasks.keys import RunPaths
from tasks.data.shards import load_split
from tasks.data.store import Store
from tasks.model.training import load_dataset_arrays
from tasks.runs.lease import check_held
from tasks.runs.run import Run
from tasks.progress import Progress

METRIC, MODE = "val_accuracy", "max"
FINISHED = "finished"  # a search trial's report says True on its last epoch only (tasks.model.training.train_trial)
MAX_PAST_TRIALS = 500  # per architecture, the newest leaderboards first: TPE's cost grows with its history
ARTIFACT_FILES = ("model.keras", "history.csv", "curves.png", "confusion.png")  # metrics.json is published last


# What a stored recipe's val_accuracy_mean measures (recipes/<preset>/<arch>.json): the retrain seeds' mean of their
# last epoch's validation accuracy, seeds other than the search's. Records without it measured the maximum over
# epochs, the first seed being the winning trial itself: a number that ran high.
VAL_ACCURACY_OF = "final epoch, retrain seeds disjoint from the search's"


class SearchError(PipelineError):
    """A search that produced nothing to choose from."""


# --- the search space: Ray Tune distributions over a recipe -------------------------------------------------------------------------------------------

def epoch_budgets(max_epochs: int) -> list[int]:
    """A quarter, half and all of max_epochs (distinct, at least 1): the search chooses among them."""
    return sorted({max(1, max_epochs // 4), max(1, max_epochs // 2), max_epochs})


def search_space(architecture: str, max_epochs: int, scheduler: str = "asha") -> dict[str, Any]:
    """Ray Tune distributions over the recipe; the layers stay the architecture's own.

    The epoch budget is searched under FIFO only. Under ASHA every trial's budget is max_epochs, ASHA's max_t: the
    schedules (cosine, one-cycle) span the budget, so with budgets of their own ASHA's rungs would compare trials at
    different points of their schedules and favour the short ones."""
    from ray import tune

    space: dict[str, Any] = {
        "learning_rate": tune.loguniform(1e-4, 1e-2),
        "batch_size": tune.choice([64, 128, 256]),
        "optimizer": tune.choice(["adam", "adamw"]),
        "weight_decay": tune.loguniform(1e-5, 1e-1),
        "schedule": tune.choice(["constant", "cosine", "one_cycle"]),
        "label_smoothing": tune.uniform(0.0, 0.15),
        "augmentation": tune.choice(["none", "shift", "shift_flip"]),
        "epochs": tune.choice(epoch_budgets(max_epochs)) if scheduler == "fifo" else max_epochs,
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


def tpe_seed(seed: int, architecture: str, run_id: str) -> int:
    """TPE's seed for one architecture's search: drawn from (seed, architecture, run id), so that two architectures,
    or two nights with the same --seed, do not open with the same recipes, and the same three give the same ones."""
    digest = hashlib.sha256(f"{seed}/{architecture}/{run_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")  # numpy's RandomState, which Optuna seeds, takes < 2**32


def tpe_sampler(num_samples: int, seed: int):
    """Optuna's TPE, seeded (the same proposals for the same results), with a start-up sized to the budget."""
    import optuna

    # Optuna's own INFO lines ("[I …] A new study created in memory with name: optuna") are not the pipeline's: the
    # search logs its trials itself. Warnings still show.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.samplers.TPESampler(n_startup_trials=startup_trials(num_samples), seed=seed)


# --- warm start: the trials of earlier searches in the same store ------------------------------------------------------

def warm_start_compatible(past: dict[str, Any], config: SearchConfig) -> bool:
    """Whether an earlier search's trials measured what this one measures: the same preset, rows, epoch bound and
    patience (the stored config.json of that search)."""
    return past.get("kind") == "search" and all(
        past.get(name) == getattr(config, name) for name in ("preset", "train_rows", "max_epochs", "patience"))


def past_search_rows(store: Store, config: SearchConfig, run_id: str) -> list[dict]:
    """The new trials (not their own warm start) of every earlier compatible search's leaderboard in this store,
    newest leaderboard first, each row given the run id it came from."""
    found: list[tuple[float, list[dict]]] = []
    for prefix in store.list_prefixes("runs/"):
        other = prefix[len("runs/"):-1]
        paths = RunPaths(other)
        if other == run_id or not store.exists(paths.leaderboard_json) or not store.exists(paths.config):
            continue
        try:
            past_config = json.loads(store.get_bytes(paths.config))
            rows = json.loads(store.get_bytes(paths.leaderboard_json))
        except (ValueError, PipelineError):
            continue  # unreadable: a warm start is a help, never a reason to fail
        if warm_start_compatible(past_config, config) and isinstance(rows, list):
            found.append((store.modified_at(paths.leaderboard_json) or 0.0,
                          [{**row, "run_id": other} for row in rows if isinstance(row, dict) and row.get("new")]))
    return [row for _, rows in sorted(found, key=lambda item: -item[0]) for row in rows]


def past_trial(row: dict, config: SearchConfig) -> PastTrial | None:
    """A past leaderboard row as the searcher's trial, or None where it cannot inform this search: it failed, it
    predates final-epoch validation accuracy in the leaderboard, or (under ASHA) its budget was not max_epochs."""
    if row.get("ended") == "failed" or "val_accuracy" not in row:
        return None
    recipe = dict(row["config"])
    if config.scheduler == "asha" and recipe.get("epochs") != config.max_epochs:
        return None  # another schedule horizon: its numbers are not this search's
    if config.scheduler == "asha":
        recipe.pop("epochs")  # not searched: a constant of the space
    if recipe.get("optimizer") == "adam":
        recipe.pop("weight_decay", None)  # stored as 0 (no meaning for Adam): the sampled value is unknown
    params = {f"recipe/{name}": value for name, value in recipe.items() if value is not None}
    return PastTrial(params=params, value=float(row["val_accuracy"]), step=int(row["epochs"]),
                     pruned=row.get("ended") != "finished")


def warm_start_rows(run: Run, architecture: str) -> list[dict]:
    """The earlier trials this architecture's search starts from (none with --no-warm-start), newest first."""
    if not run.config.warm_start:
        return []
    rows = [row for row in past_search_rows(run.store, run.config, run.run_id) if row.get("architecture") == architecture]
    return [row for row in rows if past_trial(row, run.config) is not None][:MAX_PAST_TRIALS]


def make_searcher(config: SearchConfig, architecture: str, run_id: str, past: list[dict]) -> TruthfulOptunaSearch:
    """TPE seeded for this architecture and run, told stopped trials as pruned, starting from `past` trials."""
    trials = [trial for trial in (past_trial(row, config) for row in past) if trial is not None]
    return TruthfulOptunaSearch(sampler=tpe_sampler(config.num_samples, tpe_seed(config.seed, architecture, run_id)),
                                finished_key=FINISHED, past_trials=trials)


def search_experiment(run: Run, architecture: str, train_rows: tuple[np.ndarray, np.ndarray],
                      time_budget_s: float | None, past: list[dict] | None = None):
    """One architecture's experiment under runs/<run_id>/search/<architecture>; returns (experiment, scheduler,
    searcher)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    config = run.config
    scheduler = make_scheduler(config)
    optuna_search = make_searcher(config, architecture, run.run_id, past or [])
    searcher = ConcurrencyLimiter(optuna_search, max_concurrent=config.max_concurrent or default_concurrency(config))
    name = f"search/{architecture}"
    # The base spec: its recipe's epochs are the search's bound; each trial's sampled recipe replaces it.
    base = trial_spec(run, name, architecture, report_recipe(config.batch_size, config.max_epochs), publish=False)
    tune_config = tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                  num_samples=config.num_samples, time_budget_s=time_budget_s)
    return Experiment(name, [base], {"train": train_rows}, search_space(architecture, config.max_epochs, config.scheduler),
                      tune_config), scheduler, optuna_search


def asha_rung_epochs(config: SearchConfig) -> set[int]:
    """The epochs at which ASHA can stop a trial: its rungs grace_period × reduction_factor^k below max_t (a rung
    decides at the first report at or past it: the epoch rounded up)."""
    import math

    grace, epochs = min(config.grace_period, config.max_epochs), set()
    rung = float(grace)
    while rung < config.max_epochs:
        epochs.add(math.ceil(rung))
        rung *= config.reduction_factor
    return epochs


def stopped_by_asha(results, recorded: set[str], config: SearchConfig, restored: bool) -> set[str]:
    """The trials ASHA stopped before their last epoch: those it recorded in this process; for a restored
    experiment (its ASHA ran in the killed process), the unfinished ones that ended, without error, at a rung."""
    if not restored or config.scheduler != "asha":
        return recorded
    rungs = asha_rung_epochs(config)
    return recorded | {r.metrics.get("trial_id") for r in results
                       if not r.error and r.metrics and not r.metrics.get(FINISHED) and r.metrics.get("epoch") in rungs}


def how_it_ended(result, stopped: set[str], budget_reached: bool) -> str:
    trial_id = result.metrics.get("trial_id")
    if result.error:
        return "failed"
    if result.metrics.get(FINISHED):
        return "finished"
    if trial_id in stopped:
        return "stopped by ASHA"
    return "stopped by the time budget" if budget_reached else "stopped"


def leaderboard_rows(results, architecture: str, stopped: set[str], budget_reached: bool) -> list[dict]:
    """One object per trial that trained at least one epoch, best final-epoch validation accuracy first; `new`: a
    trial of this search (rows of earlier searches it was warm-started with say False, and their run_id)."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        if "best_val_accuracy" not in metrics:
            continue  # never trained an epoch (the budget ran out first, or it failed at once)
        ended = how_it_ended(result, stopped, budget_reached)
        rows.append({
            "architecture": architecture,
            "trial_id": metrics.get("trial_id"),
            "config": recipe_from_sample(result.config["recipe"]).model_dump(),
            "epochs": int(metrics["epoch"]),
            "val_accuracy": float(metrics[METRIC]),  # its last epoch's: the model it would have ended with
            "best_val_accuracy": float(metrics["best_val_accuracy"]),  # the maximum over epochs, for reference
            "stopped_early": ended == "stopped by ASHA",
            "ended": ended,
            "new": True,
        })
    return sorted(rows, key=lambda row: -row["val_accuracy"])


def past_leaderboard_rows(past: list[dict]) -> list[dict]:
    """The earlier trials a search was warm-started with, as leaderboard rows marked not new, with their run id."""
    fields = ("architecture", "trial_id", "config", "epochs", "val_accuracy", "best_val_accuracy", "stopped_early",
              "ended")
    return [{**{name: row.get(name) for name in fields}, "new": False, "run_id": row["run_id"]} for row in past]


def architecture_warm_start(run: Run, architecture: str) -> list[dict]:
    """The earlier trials this architecture's search starts from: chosen once, when it first starts, and kept in
    the store, so that a resume adds the same ones (a search finished meanwhile would change the choice)."""
    key = run.paths.warm_start_rows(architecture)
    if run.store.exists(key):
        return json.loads(run.store.get_bytes(key))
    past = warm_start_rows(run, architecture)
    check_held(run.lease)
    run.store.put_bytes(key, json.dumps(past).encode())
    return past


def search_architecture(run: Run, architecture: str, train_rows: tuple[np.ndarray, np.ndarray],
                        time_budget_s: float | None, progress: Progress) -> list[dict]:
    config = run.config
    restored = resumes(run, f"search/{architecture}")
    progress(f"search {architecture}: {config.num_samples} recipes, {config.scheduler.upper()}"
             + (f", {time_budget_s:.0f} s of the time budget" if time_budget_s else "")
             + ("; resumed: its finished trials are kept" if restored else ""))
    shown = trial_progress_callback(progress, live=live_progress_enabled())
    past = architecture_warm_start(run, architecture)
    with shown:  # on a terminal, the trials as a live table (plain lines elsewhere); stopped on any exit
        # Restored, the Tuner brings back the searcher and scheduler it began with; these are then not used.
        experiment, scheduler, searcher = search_experiment(run, architecture, train_rows, time_budget_s, past)
        tuner = make_tuner(run, experiment, progress, progress_callback=shown)
        started = time.monotonic()
        results = fit_or_explain(tuner, run, tolerate_failures=True)
    budget_reached = time_budget_s is not None and time.monotonic() - started >= time_budget_s * 0.98
    rows = leaderboard_rows(results, architecture, stopped_by_asha(results, scheduler.stopped, config, restored),
                            budget_reached)
    if not rows:
        errors = [r.error for r in results if r.error]
        raise SearchError(f"search {architecture}: no trial trained an epoch"
                          + (f" ({len(errors)} failed: {str(errors[0]).splitlines()[-1][:300]})" if errors else
                             " before the time budget ran out; give --time-budget more time"))
    started_from = len(past) if restored else searcher.past_trials_added
    progress(f"search {architecture}: {len(rows)} trials, {sum(r['stopped_early'] for r in rows)} stopped early, best "
             f"final validation accuracy {100 * rows[0]['val_accuracy']:.2f}%"
             + (f"; started from {started_from} trials of earlier searches" if past else ""))
    return rows + past_leaderboard_rows(past)


def searched_architecture(run: Run, architecture: str) -> list[dict] | None:
    """An architecture's rows when an earlier attempt of this search finished searching it, else None."""
    key = run.paths.searched_rows(architecture)
    return json.loads(run.store.get_bytes(key)) if run.store.exists(key) else None


def keep_searched_rows(run: Run, architecture: str, rows: list[dict]) -> None:
    """An architecture's rows, written when its search ends: a resume of the search does not search it again."""
    check_held(run.lease)  # taken over meanwhile: LeaseLost, and nothing is written
    run.store.put_bytes(run.paths.searched_rows(architecture), json.dumps(rows, indent=2).encode())


def search(run: Run, progress: Progress = lambda _: None) -> list[dict]:
    """Every architecture's search, one after another (each uses the whole cluster); the time budget is shared
    out evenly among the architectures not yet searched (on a resume: the budget given, afresh, for those left; the
    interrupted one keeps the share it began with). Reads the training rows only."""
    config = run.config
    connect_ray(config.ray_address)  # joined already when the flow ran tasks.tune.cluster.preflight
    images, labels, _ = load_split(run.store, run.dataset_version, "train", config.train_rows, run.manifest)
    deadline = None if config.time_budget is None else time.monotonic() + config.time_budget
    rows: list[dict] = []
    for index, architecture in enumerate(config.architectures):
        kept = searched_architecture(run, architecture)
        if kept is not None:
            progress(f"search {architecture}: searched already by this search ({sum(r.get('new', True) for r in kept)} "
                     "trials), not searched again")
            rows += kept
            continue
        budget = None if deadline is None else max(1.0, (deadline - time.monotonic()) / (len(config.architectures) - index))
        searched = search_architecture(run, architecture, (images, labels), budget, progress)
        keep_searched_rows(run, architecture, searched)
        rows += searched
    return rows


def winners_of(rows: list[dict]) -> dict[str, dict]:
    """Each architecture's new trial with the best final-epoch validation accuracy among those that trained their
    whole budget (or stopped early by patience), else among all its new trials (a time budget that stopped them
    all). The final epoch's, not the best epoch's: the model retrained and tested is the last epoch's, and a maximum
    over epochs runs high. The test set plays no part."""
    best: dict[str, dict] = {}
    for architecture in dict.fromkeys(row["architecture"] for row in rows if row.get("new", True)):
        own = [row for row in rows if row["architecture"] == architecture and row.get("new", True)]
        finished = [row for row in own if row["ended"] == "finished"]
        best[architecture] = max(finished or own, key=lambda row: row["val_accuracy"])
    return best


# --- the leaderboard ------------------------------------------------------------------------------------------------

def leaderboard_markdown(run_id: str, rows: list[dict]) -> str:
    lines = [f"# Search {run_id}: leaderboard", "",
             "| # | architecture | final val acc % | best val acc % | epochs | ended | trial | recipe |",
             "|---:|---|---:|---:|---:|---|---|---|"]
    for rank, row in enumerate(sorted(rows, key=lambda r: (r["architecture"], not r.get("new", True), -r["val_accuracy"])), 1):
        trial = "new" if row.get("new", True) else f"from {row['run_id']}"
        lines.append(f"| {rank} | {row['architecture']} | {100 * row['val_accuracy']:.2f} | "
                     f"{100 * row['best_val_accuracy']:.2f} | {row['epochs']} | {row['ended']} | {trial} | "
                     f"{Recipe(**row['config']).describe()} |")
    return "\n".join(lines) + "\n"


def publish_leaderboard(store: Store, run_id: str, rows: list[dict]) -> None:
    paths = RunPaths(run_id)
    store.put_bytes(paths.leaderboard_md, leaderboard_markdown(run_id, rows).encode())
    store.put_bytes(paths.leaderboard_json, json.dumps(rows, indent=2).encode())


# --- the winners, retrained with several seeds and tested once -------------------------------------------------------

def retrain_winners(run: Run, winners: dict[str, dict], progress: Progress = lambda _: None) -> dict[str, dict]:
    """Each winner's recipe trained with seeds seed+1 … seed+seeds (one Tune trial each, through the run's own
    trainable, so each is tested once and published under <arch>/seed-<n>/); then the seed with the best final-epoch
    validation accuracy becomes the architecture's model (<arch>/), its metrics.json giving all seeds.

    Not the search's own seed: retrained with it, the winning recipe would repeat the winning trial exactly (the same
    rows, order and initial weights), whose validation score is the very maximum that won the search."""
    config = run.config
    seeds = retrain_seeds(config)
    specs = [trial_spec(run, "retrain", arch, parse_recipe(row["config"], f"the winning recipe of {arch}"), seed=seed,
                        artifact_name=RunPaths.seed_folder(arch, seed), recipe_name="search")
             for arch, row in winners.items() for seed in seeds]
    arrays = load_dataset_arrays(run.store, run.dataset_version, config.train_rows, config.test_rows, run.manifest)
    shown = trial_progress_callback(progress, live=live_progress_enabled())
    with shown:
        tuner = make_tuner(run, Experiment("retrain", specs, arrays), progress, progress_callback=shown)
        fit_or_explain(tuner, run)
    return {arch: publish_winner(run.store, run.run_id, arch,
                                 [json.loads(run.store.get_bytes(run.paths.metrics(RunPaths.seed_folder(arch, s))))
                                  for s in seeds])
            for arch in winners}


def retrain_seeds(config: SearchConfig) -> list[int]:
    """The winners' seeds: seed+1 … seed+seeds, disjoint from the seed every search trial trained with."""
    return [config.seed + offset for offset in range(1, config.seeds + 1)]


def seed_statistics(per_seed: list[dict]) -> dict[str, Any]:
    """Test accuracy mean ± std over the seeds, and the mean of their final-epoch validation accuracy (the model
    tested is the last epoch's; a maximum over epochs would run high)."""
    test = np.array([m["test_accuracy"] for m in per_seed])
    val = np.array([m["final_val_accuracy"] for m in per_seed])
    return {"seeds": [{"seed": m["seed"], "epochs": m["epochs"], "final_val_accuracy": m["final_val_accuracy"],
                       "best_val_accuracy": m["best_val_accuracy"], "test_accuracy": m["test_accuracy"]}
                      for m in per_seed],
            "test_accuracy_mean": float(test.mean()),
            "test_accuracy_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,  # sample std of the seeds
            "val_accuracy_mean": float(val.mean()),
            # the mean's standard error from the seeds' spread: what a stored recipe must be beaten by (twice)
            "val_accuracy_se": float(val.std(ddof=1) / np.sqrt(len(val))) if len(val) > 1 else None}


def publish_winner(store: Store, run_id: str, architecture: str, per_seed: list[dict]) -> dict:
    """Copy the chosen seed's files (best final-epoch validation accuracy) to runs/<run_id>/<arch>/ (metrics.json
    last), with every seed's numbers."""
    best = max(per_seed, key=lambda m: m["final_val_accuracy"])
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
             # As the table artifact (tasks.runs.tables.search_table): headers in words with units, test accuracy first.
             "| Model | Test accuracy (%, mean ± std over seeds) | Report's test accuracy (%) | Δ vs report (points) "
             "| Seeds | Validation accuracy (%, mean) | Parameters | Recipe |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        report = "—" if r["report_test_acc"] is None else f"{r['report_test_acc']:.2f}"
        diff = "—" if r["test_acc_diff"] is None else f"{r['test_acc_diff']:+.2f}"
        lines.append(f"| {r['model']} | {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} | {report} | {diff} | "
                     f"{r['seeds']} | {r['val_acc_mean']:.2f} | {r['params']:,} | {Recipe(**r['recipe']).describe()} |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def recipes_comparable(config: SearchConfig) -> bool:
    """Recipes are kept per preset, and only from searches on the preset's own rows (the epoch budget is part of a
    recipe, so max_epochs may differ)."""
    preset = PRESETS[config.preset]
    return config.train_rows == preset["train_rows"] and config.test_rows == preset["test_rows"]


def store_recipes(store: Store, config: SearchConfig, run_id: str, winners: dict[str, dict]) -> dict[str, RecipeKept]:
    """Each winner's recipe into recipes/<preset>/<arch>.json where it beats the stored one on mean validation
    accuracy; {arch: what keep_if_better did}. Nothing is stored from a search on other rows than its preset's."""
    if not recipes_comparable(config):
        return {}
    return {arch: keep_if_better(store, config.preset, arch, {
        "architecture": arch, "recipe": metrics["recipe"], "run_id": run_id,
        "val_accuracy_mean": metrics["val_accuracy_mean"], "val_accuracy_se": metrics.get("val_accuracy_se"),
        "val_accuracy_of": VAL_ACCURACY_OF,
        "test_accuracy_mean": metrics["test_accuracy_mean"],
        "test_accuracy_std": metrics["test_accuracy_std"], "seeds": len(metrics["seeds"]),
        "test_rows": metrics["rows"]["test"]}) for arch, metrics in winners.items()}
