"""Fan the architectures out as Ray Tune trials, one trial per architecture.

Each trial asks for `cpus_per_trial` CPUs and `gpus_per_trial` of a GPU
(fractions pack several small models on one GPU). Tune keeps its state and
the per-epoch checkpoints under runs/<run_id>/tune in the run's store, so a
trial whose worker dies resumes from its last epoch (FailureConfig) and a
whole run started again with the same run id resumes too (Tuner.restore).
"""

from __future__ import annotations

import json
import os
from typing import Callable

from tasks.config import PipelineConfig
from tasks.errors import ConfigError, PipelineError, StoreError
from tasks.shards import load_manifest
from tasks.store import Store
from tasks.runs import RunPaths
from tasks.training import load_dataset_arrays, train_trial

Progress = Callable[[str], None]
# Quiet TensorFlow's start-up chatter in the workers. Never put secrets here: runtime_env
# env_vars show in the Ray dashboard and logs (ray-project/ray#28276).
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore::DeprecationWarning"}


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


def connect_ray(address: str | None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS); else start a local Ray on this machine."""
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=target, runtime_env={"env_vars": WORKER_ENV}, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise PipelineError(f"Ray cluster at {target!r}: cannot connect ({exc}); check --ray-address / RAY_ADDRESS "
                            "or leave it empty for a local Ray") from None


def alive_nodes() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_store_reaches_every_node(store_uri: str) -> None:
    """A folder store on a multi-node cluster: each trial would write to its own node's disk, where neither the
    report nor a resume finds it. Refuse before anything is trained (or claimed)."""
    nodes = alive_nodes()
    if not store_uri.startswith("s3://") and nodes > 1:
        raise ConfigError(f"store {store_uri} is a folder on this machine, but the Ray cluster has {nodes} nodes: "
                          "trials on the other nodes would write their models and checkpoints to their own disks. "
                          "Use an object store every node reaches: --store s3://bucket/prefix (see README, "
                          "'Scaling out on a Ray cluster')")


def _progress_callback(progress: Progress):
    from ray import tune

    class TrialProgress(tune.Callback):
        """One terminal line per epoch and per finished trial."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            arch = trial.config["architecture"]
            if result.get("finished"):
                progress(f"{arch}: finished after {result.get('epoch')} epochs, test accuracy {100 * result['test_accuracy']:.2f}%")
            else:
                progress(f"{arch}: epoch {result['epoch']} val_accuracy {100 * result['val_accuracy']:.2f}% "
                         f"({result['seconds']:.1f} s)")

        def on_trial_error(self, iteration, trials, trial, **info):
            progress(f"{trial.config['architecture']}: trial failed (Ray retries it from its last checkpoint "
                     f"up to max_failures times)")

    return TrialProgress()


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
               manifest: dict | None = None):
    """A Tuner with one trial per architecture, storing under runs/<run_id>/tune; restored if that exists."""
    from ray import tune

    filesystem, base = store.arrow_filesystem()
    storage_path = f"{base}/{RunPaths(run_id).root}"
    experiment = f"{storage_path}/tune"
    if trainable is train_trial:
        # Decode the rows once here; Ray's object store hands them to every trial (one copy per node).
        arrays = load_dataset_arrays(store, dataset_version, config.train_rows, config.test_rows, manifest)
        trainable = tune.with_parameters(train_trial, arrays=arrays)
    resourced = tune.with_resources(trainable, trial_resources(config))
    if has_experiment_state(filesystem, experiment):
        progress(f"resuming run {run_id} from {experiment}: finished trials are kept, others resume from checkpoints")
        return tune.Tuner.restore(experiment, resourced, resume_errored=True, storage_filesystem=filesystem)
    param_space = {**config.model_dump(), "run_id": run_id, "dataset_version": dataset_version,
                   "architecture": tune.grid_search(list(config.architectures))}
    return tune.Tuner(
        resourced,
        param_space=param_space,
        run_config=tune.RunConfig(
            name="tune",
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=tune.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[_progress_callback(progress)],
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


def run_trials(config: PipelineConfig, store: Store, run_id: str, dataset_version: str,
               progress: Progress = lambda _: None, manifest: dict | None = None) -> dict[str, dict]:
    """Train every configured architecture as a Tune trial; return their metrics by architecture."""
    # A missing version fails here, once, not in five retried trials.
    manifest = manifest or load_manifest(store, dataset_version)
    connect_ray(config.ray_address)
    check_store_reaches_every_node(store.uri)
    keep_secrets_out_of_trial_env()
    tuner = make_tuner(config, store, run_id, dataset_version, progress, manifest=manifest)
    try:
        results = tuner.fit()
    except Exception as exc:
        cause = store_failure_in(exc)
        if cause is None:
            raise
        raise StoreError(f"run {run_id}: Ray Tune lost the store {store.uri}"
                         f"{f' (endpoint {config.s3_endpoint})' if config.s3_endpoint else ''}: "
                         f"{str(cause).splitlines()[0][:300]}; what finished is kept: when the store answers again, "
                         f"resume with `fmnist run --resume {run_id}`") from None

    failed = {r.config["architecture"]: r.error for r in results if r.error}
    if failed:
        details = "; ".join(f"{arch}: {type(err).__name__}: {str(err).splitlines()[-1] if str(err) else ''}"
                            for arch, err in failed.items())
        raise TrainingError(f"run {run_id}: {len(failed)} trial(s) failed after {config.max_failures} retries: {details}. "
                            f"Fix the cause and resume with `fmnist run --resume {run_id}`")
    # The trials' own configs: on a resume they come from the stored experiment, whatever the new config says.
    trained = [r.config["architecture"] for r in results]
    return {arch: json.loads(store.get_bytes(RunPaths(run_id).metrics(arch))) for arch in trained}
