"""Every private name of Ray the project touches, in one place, checked when this module loads.

Ray offers no public API for these; each is used for a reason given at its function. If an upgrade of Ray
moves one, importing this module fails at once with one line naming the Ray version and what is missing,
instead of a trial failing hours into a run. The pins in pyproject.toml name the version it was tested on.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

from tasks.errors import IncompatibleVersion

TESTED_WITH = "2.60"

# (module, attribute) pairs this module reads; checked below.
_NEEDED = (
    ("ray.tune.execution.class_cache", "ENV_VARS_TO_PROPAGATE"),
    ("ray._common.utils", "get_ray_address_file"),
    ("ray._private.services", "canonicalize_bootstrap_address"),
    ("ray._private.state", "state"),
    ("ray._private.worker", "_global_node"),
    ("ray.train._internal.session", "_TrainingResult"),
    ("ray._raylet", "AuthenticationTokenLoader"),
    ("ray.tune.search.optuna.optuna_search", "OptunaSearch"),
)
# Private attributes of an OptunaSearch instance that TruthfulOptunaSearch (below) reads; checked on an instance.
_OPTUNA_SEARCH_ATTRIBUTES = ("_ot_trials", "_ot_study", "_completed_trials", "_space", "_metric")


def _check() -> None:
    missing = []
    for module_name, attribute in _NEEDED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(module_name)
            continue
        if not hasattr(module, attribute):
            missing.append(f"{module_name}.{attribute}")
    # Without optuna (the GPU machine's kit carries none: searches only) Ray's module still imports, but
    # OptunaSearch() refuses to be made: its attributes are checked where optuna is installed.
    if not missing and importlib.util.find_spec("optuna") is not None:
        from ray.tune.search.optuna.optuna_search import OptunaSearch

        made = OptunaSearch()  # no space: nothing is set up, only the attributes exist
        missing += [f"OptunaSearch().{name}" for name in _OPTUNA_SEARCH_ATTRIBUTES if not hasattr(made, name)]
    if missing:
        raise IncompatibleVersion(f"Ray {version('ray')} lacks {', '.join(missing)}, which this project uses "
                                  f"(tested with Ray {TESTED_WITH}); install the version pyproject.toml pins")


_check()


@contextmanager
def aws_keys_kept_from_trials() -> Iterator[None]:
    """While Tune starts trials, stop it copying the driver's AWS keys into each trial's runtime_env.

    Tune propagates AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN into the trial actors'
    runtime_env (ray/tune/execution/class_cache.py), and Ray's runtime-env agent writes that env, secret included,
    into runtime_env_agent.log and the dashboard (ray-project/ray#28276). The trials don't need it: on a local Ray
    they inherit the driver's environment through the raylet, and on a cluster the nodes get credentials from their
    instance role. The set is restored afterwards."""
    from ray.tune.execution import class_cache

    kept = class_cache.ENV_VARS_TO_PROPAGATE
    class_cache.ENV_VARS_TO_PROPAGATE = {v for v in kept if not v.startswith("AWS_")}
    try:
        yield
    finally:
        class_cache.ENV_VARS_TO_PROPAGATE = kept


def recorded_ray_address_file() -> str:
    """The file where `ray start` records the address of the cluster on this machine (read by `auto`)."""
    from ray._common.utils import get_ray_address_file

    return get_ray_address_file(None)


def canonical_bootstrap_address(address: str | None) -> str | None:
    """What ray.init would connect to for `address` (None or 'auto': the recorded cluster; None if none and the
    address was empty). Raises ConnectionError for 'auto' with nothing recorded, as ray.init does."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(address)


def autoscaler_node_groups() -> list[Any] | None:
    """The node groups an autoscaler (KubeRay, autoscaler v2) reported to the GCS, or None when none did or the
    connection can't tell (Ray Client). Ray Data reads the same key to decide whether a cluster autoscales."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001  (Ray Client mode, or an older GCS: unknown, not "no autoscaler")
        return None
    if not config or not config.node_group_configs:
        return None
    return list(config.node_group_configs)


# Two calls of Ray's wire protocol (gRPC) that tell a Ray endpoint from anything else listening on its port: the GCS
# answers GetClusterId (an empty request), the Ray Client server answers ClusterInfo of type PING (field 1 = 6).
# Neither needs a connected driver; both go through Ray's token check when the cluster has one.
GCS_PROBE = ("/ray.rpc.NodeInfoGcsService/GetClusterId", b"")
RAY_CLIENT_PROBE = ("/ray.rpc.RayletDriver/ClusterInfo", b"\x08\x06")


def auth_metadata() -> tuple[tuple[str, str], ...]:
    """The gRPC metadata ray.init would send (("authorization", "Bearer <token>") under RAY_AUTH_MODE=token with a
    token found, else none): Ray's own token loader, so the probe sees what ray.init will see."""
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    return tuple(loader.get_token_for_http_header().items()) if loader.has_token() else ()


def ray_started_by_this_process() -> bool:
    """This process started the Ray it uses (a local Ray: this machine, which no autoscaler grows)."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    return bool(node is not None and getattr(node, "head", False))


def point_trial_at_checkpoint(trial: Any, path: str, epochs: int, index: int, name: str) -> None:
    """Make a restored (stub) Trial track the checkpoint at `path` as its latest: Tune's checkpoint manager has no
    public setter, and its saved state can name a checkpoint that num_to_keep=1 already deleted (design §10)."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult

    manager = trial.run_metadata.checkpoint_manager
    old_metrics = manager.latest_checkpoint_result.metrics if manager.latest_checkpoint_result else {}
    result = _TrainingResult(
        checkpoint=Checkpoint(path=path, filesystem=trial.storage.storage_filesystem),
        metrics={**old_metrics, "checkpoint_dir_name": name, "training_iteration": epochs})
    manager._checkpoint_results = [result]
    manager._latest_checkpoint_result = result
    trial.storage.current_checkpoint_index = index
    trial.run_metadata.invalidate_cache()
    trial.invalidate_json_state()


# --- Optuna told the truth about trials a scheduler stopped, and about earlier searches -----------------------------

from dataclasses import dataclass  # noqa: E402  (kept beside the one class that needs it)

from ray.tune.search.optuna.optuna_search import OptunaSearch  # noqa: E402  (checked by _check above)


@dataclass(frozen=True)
class PastTrial:
    """A trial of an earlier search, handed to TPE before it proposes anything: its sampled values under the
    searcher's flattened names (e.g. 'recipe/learning_rate'), its metric at its last epoch, and whether it ended
    there because it was stopped (pruned) rather than at the end of its budget."""

    params: dict[str, Any]
    value: float
    step: int
    pruned: bool


class TruthfulOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, with two corrections.

    1. A trial stopped before its last epoch (by ASHA, or by the time budget) is told to Optuna as PRUNED, with its
       per-epoch values as intermediate values. Ray 2.60 tells it as COMPLETE with the metric of the epoch it was
       stopped at (optuna_search.py, on_trial_complete), so TPE would learn that a rung's early number is a final
       one. A trial's own report says whether it ended at its last epoch: `finished_key`, True on that epoch only.
    2. `past_trials` (earlier searches' trials of the same space) are added to the study once the space is known,
       as COMPLETE or PRUNED with their intermediate value at their last epoch. Ray's `evaluated_rewards` would
       add them all as COMPLETE, and takes the points under their nested names, which a space given through
       Tune's param_space does not know before set_search_properties.
    """

    def __init__(self, *, sampler: Any, finished_key: str, past_trials: list[PastTrial] | tuple = ()) -> None:
        super().__init__(sampler=sampler)
        self.finished_key = finished_key
        self.past_trials = list(past_trials)
        self.past_trials_added = 0  # how many past trials fitted this space (the others are left out)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        done = super().set_search_properties(metric, mode, config, **spec)
        if done:
            self.past_trials_added = sum(self._add_past_trial(trial) for trial in self.past_trials)
        return done

    def _add_past_trial(self, past: PastTrial) -> bool:
        """Add one past trial if every value it has lies in this space (a space that changed since: left out)."""
        import optuna

        distributions = {name: self._space[name] for name in past.params if name in self._space}
        if len(distributions) != len(past.params):
            return False
        try:
            if not all(dist._contains(dist.to_internal_repr(past.params[name])) for name, dist in distributions.items()):
                return False
        except ValueError:  # a categorical value that is no longer a choice
            return False
        state = optuna.trial.TrialState.PRUNED if past.pruned else optuna.trial.TrialState.COMPLETE
        self._ot_study.add_trial(optuna.trial.create_trial(
            state=state, value=past.value, params=past.params, distributions=distributions,
            intermediate_values={past.step: past.value}))
        return True

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        stopped = (not error and result is not None and not result.get(self.finished_key)
                   and trial_id in self._ot_trials and trial_id not in self._completed_trials)
        if not stopped:
            super().on_trial_complete(trial_id, result, error)
            return
        import optuna
        from ray.tune.result import TRAINING_ITERATION

        ot_trial = self._ot_trials[trial_id]
        value, step = result.get(self._metric), result.get(TRAINING_ITERATION)
        if value is not None and step is not None:
            # Tune hands the result a scheduler stops a trial on to the searcher only here (tune_controller.py,
            # _process_trial_result): record it as the last intermediate value, which Optuna keeps as the pruned
            # trial's value. A step reported already is left as it was (Optuna warns; nothing is wrong).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ot_trial.report(value, step)
        self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)
