"""Fan the architectures out as Ray Tune trials, one trial per architecture.

Each trial asks for `cpus_per_trial` CPUs and `gpus_per_trial` of a GPU
(fractions pack several small models on one GPU). Tune keeps its state and
the per-epoch checkpoints under runs/<run_id>/tune in the run's store, so a
trial whose worker dies resumes from its last epoch (FailureConfig) and a
whole run started again with the same run id resumes too (Tuner.restore).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from tasks.config import PipelineConfig
from tasks.errors import PipelineError, StoreError
from tasks.tune.cluster import connect_ray
from tasks.tune.progress import trial_progress_callback
from tasks.data.shards import load_manifest
from tasks.data.store import Store
from tasks.keys import RunPaths
from tasks.model.training import load_dataset_arrays, train_trial
from tasks.tune.tune_state import repair_experiment_state

Progress = Callable[[str], None]


def keep_secrets_out_of_trial_env() -> None:
    """Stop Ray Tune copying the driver's AWS keys into each trial's runtime_env.

    Tune propagates AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN into the trial
    actors' runtime_env (ray/tune/execution/class_cache.py), and Ray's runtime-env agent writes
    that env, secret included, into runtime_env_agent.log and the dashboard. The trials don't need
    it: on a local Ray they inherit the driver's environment through the raylet, and on a cluster
    the nodes get credentials from their instance role.
    """
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = {v for v in class_cache.ENV_VARS_TO_PROPAGATE if not v.startswith("AWS_")}


class TrainingError(PipelineError):
    """One or more trials failed after their retries."""

def trial_resources(config: PipelineConfig) -> dict[str, float]:
    """What each trial asks Ray for: with gpus_per_trial=1 one trial per GPU, with 0.2 five share one."""
    return {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}


def has_experiment_state(filesystem, experiment: str) -> bool:
    """Whether Tune saved this experiment's trials. `Tuner.can_restore` only looks for tuner.pkl, which the
    Tuner writes when it is made: a run killed before its first state save has tuner.pkl and no trials, and
    restoring it fails (KeyError 'architecture'). Such a run starts its trials afresh; nothing was trained."""
    import pyarrow.fs

    found = filesystem.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
    return any(info.base_name.startswith("experiment_state") and info.base_name.endswith(".json") for info in found)


def make_tuner(config: PipelineConfig, store: Store, run_id: str, dataset_version: str,
               progress: Progress = lambda _: None, trainable: Callable[[dict], None] = train_trial,
               manifest: dict | None = None, name: str = "tune", grid: dict[str, list] | None = None,
               extra: dict[str, Any] | None = None, progress_callback=None):
    """A Tuner with one trial per architecture (times each `grid` value), storing under runs/<run_id>/<name>;
    restored if that exists. `extra` adds to (or overrides) each trial's config.

    `progress_callback` (tasks.tune.progress.trial_progress_callback) reports the trials; by default one that logs
    plain lines to `progress`. A restored Tuner reports through the callback made last (see tasks.tune.progress)."""
    progress_callback = progress_callback or trial_progress_callback(progress, live=False)
    from ray import tune

    filesystem, base = store.arrow_filesystem()
    storage_path = f"{base}/{RunPaths(run_id).root}"
    experiment = f"{storage_path}/{name}"
    if trainable is train_trial:
        # Decode the rows once here; Ray's object store hands them to every trial (one copy per node).
        arrays = load_dataset_arrays(store, dataset_version, config.train_rows, config.test_rows, manifest)
        trainable = tune.with_parameters(train_trial, arrays=arrays)
    resourced = tune.with_resources(trainable, trial_resources(config))
    if has_experiment_state(filesystem, experiment):
        progress(f"resuming run {run_id} from {experiment}: finished trials are kept, others resume from checkpoints")
        # Tune restores only the checkpoint its saved state names, which a store outage can leave deleted
        # (num_to_keep=1, design §10): point each unfinished trial at its newest complete checkpoint first.
        repair_experiment_state(store, f"{RunPaths(run_id).root}/{name}", progress)
        return tune.Tuner.restore(experiment, resourced, resume_errored=True, storage_filesystem=filesystem)
    param_space = {**config.model_dump(), "run_id": run_id, "dataset_version": dataset_version, "experiment": name,
                   "architecture": tune.grid_search(list(config.architectures)),
                   **{key: tune.grid_search(values) for key, values in (grid or {}).items()}, **(extra or {})}
    return tune.Tuner(
        resourced,
        param_space=param_space,
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[progress_callback],
            verbose=0,
        ),
    )


def store_failure_in(exc: BaseException) -> BaseException | None:
    """The storage error behind a failure of Tune's (pyarrow raises OSError for an S3 server or disk that went
    away, e.g. in Tune's final ExperimentAnalysis), searched through the exception's causes; None if there is none."""
    import pyarrow

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (OSError, pyarrow.ArrowException)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def trial_error_line(error: BaseException) -> str:
    """One line for a failed trial. Tune hands back a RayTaskError whose text is the trial's whole traceback,
    ending in `module.Type: message`; our own errors (a full disk, a damaged checkpoint, the store) are lines
    written for the user, so the trial's exception (the RayTaskError's `cause`) is shown as it is."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, PipelineError):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[-1] if text else ''}"


def run_trials(config: PipelineConfig, store: Store, run_id: str, dataset_version: str,
               progress: Progress = lambda _: None, manifest: dict | None = None,
               live: bool = False) -> dict[str, dict]:
    """Train every configured architecture as a Tune trial; return their metrics by architecture. With `live`, the
    trials show as a table updated in place on this terminal (tasks.tune.progress), stopped on any exit."""
    # A missing version fails here, once, not in five retried trials.
    manifest = manifest or load_manifest(store, dataset_version)
    connect_ray(config.ray_address)  # joined already when the flow ran tasks.tune.cluster.preflight
    keep_secrets_out_of_trial_env()
    # A live view needs the Tune loop in this process; through Ray Client (ray://) it runs on the cluster.
    from ray.util.client import ray as ray_client

    shown = trial_progress_callback(progress, live=live and not ray_client.is_connected())
    with shown:  # the live view stops on any exit (Ctrl-C, an error) before anything else is printed
        tuner = make_tuner(config, store, run_id, dataset_version, progress, manifest=manifest, progress_callback=shown)
        results = fit_or_explain(tuner, config, store, run_id, resume_with=f"fmnist run --resume {run_id}")
    # The trials' own configs: on a resume they come from the stored experiment, whatever the new config says.
    trained = [r.config["architecture"] for r in results]
    return {arch: json.loads(store.get_bytes(RunPaths(run_id).metrics(arch))) for arch in trained}


def fit_or_explain(tuner, config: PipelineConfig, store: Store, run_id: str, resume_with: str,
                   tolerate_failures: bool = False):
    """`tuner.fit()`, its store failures as one StoreError line and (unless tolerated) its failed trials as one
    TrainingError line, each saying what is kept and the command that goes on."""
    try:
        results = tuner.fit()
    except Exception as exc:
        cause = store_failure_in(exc)
        if cause is None:
            raise
        raise StoreError(f"run {run_id}: Ray Tune lost the store {store.uri}"
                         f"{f' (endpoint {config.s3_endpoint})' if config.s3_endpoint else ''}: "
                         f"{str(cause).splitlines()[0][:300]}; what finished is kept: when the store answers again, "
                         f"resume with `{resume_with}`") from None
    failed = [(r.config.get("artifact_name") or r.config["architecture"], r.error) for r in results if r.error]
    if failed and not tolerate_failures:
        details = "; ".join(f"{name}: {trial_error_line(err)}" for name, err in failed)
        raise TrainingError(f"run {run_id}: {len(failed)} trial(s) failed after {config.max_failures} retries: {details}. "
                            f"Fix the cause and resume with `{resume_with}`")
    return results
