"""Every private name of Ray the project touches, in one place, checked when this module loads.

Ray offers no public API for these; each is used for a reason given at its function. If an upgrade of Ray
moves one, importing this module fails at once with one line naming the Ray version and what is missing,
instead of a trial failing hours into a run. The pins in pyproject.toml name the version it was tested on.
"""

from __future__ import annotations

import importlib
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
)


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
