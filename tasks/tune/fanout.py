"""Ray Tune experiments of a run: one trial per architecture (or per architecture and seed), made by one
`make_tuner(run, experiment)`, run by `fit_or_explain`.

Each trial asks for `cpus_per_trial` CPUs and `gpus_per_trial` of a GPU (fractions pack several small models on one
GPU) and receives one TrialSpec (tasks.model.spec). Tune keeps its state and the per-epoch checkpoints under
runs/<run_id>/<experiment> in the run's store, so a trial whose worker dies resumes from its last epoch
(FailureConfig) and a whole run started again with the same run id resumes too (Tuner.restore).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from tasks.config import PipelineConfig, kind_of
from tasks.errors import PipelineError, StoreError
from tasks.model.recipes import Recipe, recipe_for
from tasks.model.spec import TrialSpec
from tasks.model.training import SplitArrays, load_dataset_arrays, train_trial
from tasks.runs.hints import resume_command
from tasks.runs.deadline import check_time_limit
from tasks.runs.run import Run
from tasks.tune.cluster import connect_ray
from tasks.tune.progress import starting_line, trial_error_line, trial_progress_callback
from tasks.tune.ray_compat import aws_keys_kept_from_trials
from tasks.tune.tune_state import repair_experiment_state
from tasks.progress import Progress


class TrainingError(PipelineError):
    """One or more trials failed after their retries."""


def trial_resources(config: PipelineConfig) -> dict[str, float]:
    """What each trial asks Ray for: with gpus_per_trial=1 one trial per GPU, with 0.2 five share one."""
    return {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}


def trial_spec(run: Run, experiment: str, architecture: str, recipe: Recipe, *, seed: int | None = None,
               artifact_name: str | None = None, publish: bool = True, recipe_name: str | None = None) -> TrialSpec:
    """What one trial of this run trains; the recipe's epochs are capped by the run's max_epochs here, once."""
    config = run.config
    return TrialSpec(run_id=run.run_id, experiment=experiment, dataset_version=run.dataset_version, store=config.store,
                     s3_endpoint=config.s3_endpoint, architecture=architecture,
                     recipe=recipe.capped(config.max_epochs), recipe_name=recipe_name or config.recipe, publish=publish,
                     seed=config.seed if seed is None else seed, patience=config.patience,
                     steps_per_execution=config.steps_per_execution, eval_batch_size=config.eval_batch_size,
                     cpus_per_trial=config.cpus_per_trial, train_rows=config.train_rows, test_rows=config.test_rows,
                     store_wait_s=config.store_wait_s, artifact_name=artifact_name)


@dataclass(frozen=True)
class Experiment:
    """One Tune experiment of a run: its folder under runs/<run_id>/, the trials' specs, the rows they share."""

    name: str  # 'tune', 'retrain', 'search/<architecture>'
    specs: list[TrialSpec]  # one trial each; a search has one, the base its sampled recipes replace
    arrays: SplitArrays | None = None  # decoded once here, handed to every trial through Ray's object store
    search_space: dict[str, Any] | None = None  # a search's recipe space (then tune_config says how to sample it)
    tune_config: Any = None  # ray.tune.TuneConfig of a search: searcher, scheduler, samples, time budget
    # What each trial runs: the project's trainer; a test that measures placement only passes a probe.
    trainable: Callable[..., None] = field(default=train_trial)

    def param_space(self) -> dict[str, Any]:
        from ray import tune

        if self.search_space is not None:
            return {"spec": self.specs[0].model_dump(), "recipe": self.search_space}
        return {"spec": tune.grid_search([spec.model_dump() for spec in self.specs])}


def trial_dirname(trial) -> str:
    """Tune's folder of a trial, named by its spec (Tune's default would spell the whole spec)."""
    return TrialSpec.from_tune(trial.config).tune_dirname(trial.trial_id)


def has_experiment_state(filesystem, experiment: str) -> bool:
    """Whether Tune saved this experiment's trials. `Tuner.can_restore` only looks for tuner.pkl, which the
    Tuner writes when it is made: a run killed before its first state save has tuner.pkl and no trials, and
    restoring it fails (KeyError 'architecture'). Such a run starts its trials afresh; nothing was trained."""
    import pyarrow.fs

    found = filesystem.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
    return any(info.base_name.startswith("experiment_state") and info.base_name.endswith(".json") for info in found)


def experiment_location(run: Run, name: str) -> tuple[Any, str, str]:
    """(pyarrow filesystem, parent folder, experiment folder name) of one of the run's Tune experiments."""
    filesystem, base = run.store.arrow_filesystem()
    parent, _, folder = f"{base}/{run.paths.experiment(name)}".rpartition("/")
    return filesystem, parent, folder


def resumes(run: Run, name: str) -> bool:
    """Whether make_tuner restores this experiment (Tune saved its trials in an earlier attempt of the run)."""
    filesystem, parent, folder = experiment_location(run, name)
    return has_experiment_state(filesystem, f"{parent}/{folder}")


def trial_parameters(run: Run, experiment: Experiment) -> dict[str, Any]:
    """What tune.with_parameters hands every trial: the decoded rows, and the run's lease fence (checked before a
    trial publishes) when the run holds a lease and the trainable takes one. Not in the TrialSpec: a resumed
    experiment keeps the specs its first holder saved, and the fence must be the current holder's."""
    parameters: dict[str, Any] = {}
    if experiment.arrays is not None:
        parameters["arrays"] = experiment.arrays
    if run.lease is not None and "fence" in inspect.signature(experiment.trainable).parameters:
        parameters["fence"] = run.lease.fence()
    return parameters


def quiet_tune_output() -> None:
    """Tune's console output off, so that the flow's log has only our lines. With `verbose=0` Ray 2.60's default
    output engine still prints its configuration box, "View detailed results here", a TensorBoard hint and blank
    lines (tune/experimental/output.py, printed whatever the verbosity); its documented switch
    RAY_AIR_NEW_OUTPUT=0 selects the older engine, which prints nothing at verbosity 0. A user's own setting wins."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def trial_count(experiment: Experiment) -> int:
    """How many trials the experiment runs: a search's samples, else one per spec."""
    samples = getattr(experiment.tune_config, "num_samples", None)
    return samples if experiment.search_space is not None and samples else len(experiment.specs)


def concurrency_limit(experiment: Experiment) -> int | None:
    """The most trials the experiment runs at once by its own limit (a search's ConcurrencyLimiter), if any."""
    config = experiment.tune_config
    return (getattr(config, "max_concurrent_trials", None)
            or getattr(getattr(config, "search_alg", None), "max_concurrent", None))


def cluster_resources() -> dict[str, float]:
    """What the Ray cluster this process joined has ({} when it joined none)."""
    import ray

    return dict(ray.cluster_resources()) if ray.is_initialized() else {}


def make_tuner(run: Run, experiment: Experiment, progress: Progress = lambda _: None, progress_callback=None):
    """The Tuner of one experiment, storing under runs/<run_id>/<experiment.name>; restored if Tune saved its state
    there before (an attempt of the run or search that was killed).

    `progress_callback` (tasks.tune.progress.trial_progress_callback) reports the trials; by default one that logs
    plain lines to `progress`. A restored Tuner reports through the callback made last (see tasks.tune.progress)."""
    from ray import tune

    from tasks.tune.fencing import StopWhenLeaseLost
    from tasks.tune.outage import WaitForStoreBeforeRestart

    quiet_tune_output()
    progress_callback = progress_callback or trial_progress_callback(progress, live=False)
    progress_callback.starting = starting_line(trial_count(experiment), run.config.cpus_per_trial,
                                               run.config.gpus_per_trial, cluster_resources(),
                                               concurrency_limit(experiment))
    filesystem, parent, name = experiment_location(run, experiment.name)
    trainable = experiment.trainable
    parameters = trial_parameters(run, experiment)
    if parameters:
        trainable = tune.with_parameters(trainable, **parameters)
    resourced = tune.with_resources(trainable, trial_resources(run.config))
    if has_experiment_state(filesystem, f"{parent}/{name}"):
        # A search's searcher (the Optuna study, the samples proposed) and its concurrency limit come back too;
        # ASHA's rungs start empty (Tune does not save a scheduler's state).
        progress(f"resuming {kind_of(run.config)} {run.run_id} from {parent}/{name}: finished trials are kept, "
                 f"others resume from checkpoints")
        # Tune restores only the checkpoint its saved state names, which a store outage can leave deleted
        # (num_to_keep=1, design §10): point each unfinished trial at its newest complete checkpoint first.
        repair_experiment_state(run.store, run.paths.experiment(experiment.name), progress)
        return tune.Tuner.restore(f"{parent}/{name}", resourced, resume_errored=True, storage_filesystem=filesystem)
    # A copy: the experiment's TuneConfig (a search's) is the caller's, left as it was given.
    tune_config = dataclasses.replace(experiment.tune_config or tune.TuneConfig(), trial_dirname_creator=trial_dirname)
    return tune.Tuner(
        resourced,
        param_space=experiment.param_space(),
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name,
            storage_path=parent,
            storage_filesystem=filesystem,
            failure_config=tune.FailureConfig(max_failures=run.config.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[progress_callback, WaitForStoreBeforeRestart(run.config.store, run.config.s3_endpoint,
                                                                     run.config.store_wait_s)],
            stop=StopWhenLeaseLost(run.run_id),  # the trials end within a renewal interval of a takeover
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


def run_trials(run: Run, progress: Progress = lambda _: None, live: bool = False) -> dict[str, dict]:
    """Train every configured architecture as a Tune trial; return their metrics by architecture. With `live`, the
    trials show as a table updated in place on this terminal (tasks.tune.progress), stopped on any exit."""
    connect_ray(run.config.ray_address)  # joined already when the flow ran tasks.tune.cluster.preflight
    config = run.config
    # Decode the rows once here; Ray's object store hands them to every trial (one copy per node).
    arrays = load_dataset_arrays(run.store, run.dataset_version, config.train_rows, config.test_rows, run.manifest)
    specs = [trial_spec(run, "tune", arch, recipe_for(config.model_dump(), arch)) for arch in config.architectures]
    # A live view needs the Tune loop in this process; through Ray Client (ray://) it runs on the cluster.
    from ray.util.client import ray as ray_client

    shown = trial_progress_callback(progress, live=live and not ray_client.is_connected())
    with shown:  # the live view stops on any exit (Ctrl-C, an error) before anything else is printed
        tuner = make_tuner(run, Experiment("tune", specs, arrays), progress, progress_callback=shown)
        results = fit_or_explain(tuner, run)
    # The trials' own specs: on a resume they come from the stored experiment, whatever the new config says.
    trained = [TrialSpec.from_tune(r.config).folder for r in results]
    return {arch: json.loads(run.store.get_bytes(run.paths.metrics(arch))) for arch in trained}


def fit_or_explain(tuner, run: Run, tolerate_failures: bool = False) -> Any:
    """`tuner.fit()` (the driver's AWS keys kept out of the trials' runtime_env), its store failures as one
    StoreError line and (unless tolerated) its failed trials as one TrainingError line, each saying what is kept and
    the command that goes on (`fmnist run --resume …`, or `fmnist search --resume …`)."""
    config, store = run.config, run.store
    resume_with = resume_command(run.run_id, store.uri, getattr(store, "endpoint", None), kind_of(config))
    try:
        with aws_keys_kept_from_trials():
            results = tuner.fit()
    except Exception as exc:
        if run.lease is not None and run.lease.lost is not None:
            raise run.lease.lost from None  # the takeover, not what Tune made of it, is why the run ended
        check_time_limit(run.run_id, f"resume with `{resume_with}`")  # the time limit, not what Tune made of it
        cause = store_failure_in(exc)
        if cause is None:
            raise
        raise StoreError(f"run {run.run_id}: Ray Tune lost the store {store.uri}"
                         f"{f' (endpoint {config.s3_endpoint})' if config.s3_endpoint else ''}: "
                         f"{str(cause).splitlines()[0][:300]}; what finished is kept: when the store answers again, "
                         f"resume with `{resume_with}`") from None
    if run.lease is not None:
        run.lease.check()  # taken over while Tune ran (its stopper ended the trials): the one line, nothing more
    check_time_limit(run.run_id, f"resume with `{resume_with}`")  # past it, the stopper ended the trials: TimedOut
    failed = [(TrialSpec.from_tune(r.config).label, r.error) for r in results if r.error]
    if failed and not tolerate_failures:
        details = "; ".join(f"{name}: {trial_error_line(err)}" for name, err in failed)
        raise TrainingError(f"run {run.run_id}: {len(failed)} trial(s) failed after {config.max_failures} retries: "
                            f"{details}. Fix the cause and resume with `{resume_with}`")
    return results
