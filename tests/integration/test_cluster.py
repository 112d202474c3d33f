"""Scaling out: the five trials placed on a real multi-node Ray (cluster.yaml itself, checked offline the way
`ray up` checks it: tests/unit/test_cluster_yaml.py).

The placement tests start a `ray.cluster_utils.Cluster` on this machine (a head without CPUs, worker nodes with
logical GPUs: no real GPU is needed to check where Ray puts trials) and run the project's own `make_tuner` on it,
with a probe in place of the trainer.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import ray
import ray.cloudpickle

from tasks.config import ALL_ARCHITECTURES, PipelineConfig
from tasks.data.shards import PrepareResult
from tasks.model.recipes import recipe_for
from tasks.runs.run import Run
from tasks.tune.fanout import Experiment, make_tuner, trial_spec
from tasks.data.store import open_store
from tests.cli_user import run_fmnist
from tests.trial_processes import ray_address_file_restorer


# ---- placement on a multi-node Ray cluster ------------------------------------------------------------------

# The workers need not be able to import this test module (the repository is not on their sys.path): ship the
# probe by value, like a function defined in a notebook.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

BARRIER_TIMEOUT_S = 40.0


def probe(config: dict) -> None:
    """Stands in for tasks.model.training.train_trial: reports where Ray placed the trial and which GPU it got.

    A barrier (one file per started trial, in a folder all nodes of this one-machine cluster see) holds every
    trial until all five have started: the placement read afterwards is one Ray made for five trials running at
    the same time, not for trials that happened to run one after another. A trial that cannot be placed while
    the others run makes them time out with all_started False.
    """
    spec = config["spec"]  # tasks.model.spec.TrialSpec.model_dump(): what every trial of the fan-out receives
    barrier = Path(spec["store"]) / "barrier" / spec["run_id"]
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / spec["architecture"]).touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(barrier.iterdir())) < len(ALL_ARCHITECTURES) and time.monotonic() < deadline:
        time.sleep(0.1)
    all_started = len(list(barrier.iterdir())) == len(ALL_ARCHITECTURES)
    context = ray.get_runtime_context()
    ray.tune.report({
        "architecture": spec["architecture"],
        "node_id": context.get_node_id(),
        "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()),
        "gpu_share": float(context.get_assigned_resources().get("GPU", 0.0)),
        "all_started": all_started,
        # what tasks.tune.fanout's progress callback reads from a trial's last report
        "finished": True, "epoch": 0, "test_accuracy": 0.0,
    })


# Worker nodes per topology (the head never has CPUs or GPUs, as in cluster.yaml).
# - "two workers": 3 GPUs and 3 CPUs each. Five 1-GPU trials cannot fit on one of them, so both must be used.
# - "one worker": one node with 3 GPUs, like a g5.12xlarge with fewer GPUs. Five 0.2-GPU trials fit on any one of
#   its GPUs; the question is whether Ray packs them onto one or spreads them over the three.
TOPOLOGIES = {
    "two workers": [{"num_cpus": 3, "num_gpus": 3}, {"num_cpus": 3, "num_gpus": 3}],
    "one worker": [{"num_cpus": 3, "num_gpus": 3}],
}


@pytest.fixture(scope="module")
def no_local_ray():
    """Ray allows one cluster per driver: leave a local Ray started by an earlier module down while this module
    runs; conftest's module-scoped `ray_local` starts it again for the modules after this one."""
    ray.shutdown()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(request, no_local_ray):
    """A head without CPUs or GPUs and the topology's worker nodes, this driver connected to it.

    Yields (head node id, set of worker node ids)."""
    from ray.cluster_utils import Cluster

    restore_address_file = ray_address_file_restorer()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False})
    restore_address_file()
    try:
        workers = {cluster.add_node(**node).node_id for node in TOPOLOGIES[request.param]}
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster.head_node.node_id, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        restore_address_file()


def run_probes(tmp_path: Path, run_id: str, gpus_per_trial: float, cpus_per_trial: float) -> list[dict]:
    config = PipelineConfig(store=str(tmp_path), gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
                            max_failures=0)
    run = Run.unclaimed(config, open_store(str(tmp_path)), run_id, PrepareResult("any-version", False, {}))
    specs = [trial_spec(run, "tune", arch, recipe_for(config.model_dump(), arch)) for arch in config.architectures]
    results = make_tuner(run, Experiment("tune", specs, trainable=probe)).fit()
    assert [r.error for r in results if r.error] == []
    rows = [r.metrics for r in results]
    assert sorted(r["architecture"] for r in rows) == sorted(ALL_ARCHITECTURES)
    assert all(r["all_started"] for r in rows), "the five trials did not all run at the same time"
    for r in rows:
        r["gpu_ids"] = r["gpu_ids"].split(",") if r["gpu_ids"] else []
    return rows


@pytest.mark.parametrize("ray_cluster", ["two workers"], indirect=True)
def test_one_gpu_per_trial_spreads_the_five_trials_over_both_workers(ray_cluster, tmp_path):
    head, workers = ray_cluster
    rows = run_probes(tmp_path, "whole-gpus", gpus_per_trial=1.0, cpus_per_trial=1)
    nodes = {r["node_id"] for r in rows}
    assert head not in nodes
    assert nodes == workers  # 3 GPUs per worker: the five could not all fit on one
    assert all(len(r["gpu_ids"]) == 1 and r["gpu_share"] == 1.0 for r in rows)
    # All five ran at once (barrier), so no two may hold the same GPU of the same node.
    assert len({(r["node_id"], r["gpu_ids"][0]) for r in rows}) == len(rows)


@pytest.mark.parametrize("ray_cluster", ["one worker"], indirect=True)
def test_five_trials_at_a_fifth_of_a_gpu_run_together_on_one_gpu(ray_cluster, tmp_path):
    # Ray fills one GPU of a node with fractional shares before it opens the next ("it will pack one GPU before
    # moving on to the next one to avoid fragmentation", Ray's GPU docs), so five 0.2 shares on a node with three
    # free GPUs all get GPU 0. Across nodes there is no such promise: on the "two workers" cluster the same five
    # trials were spread 3 + 2 over both workers (each node packing its share onto its GPU 0). So on a real
    # cluster `--gpus-per-trial 0.2` means "at most five trials per GPU", not "one GPU in all".
    head, workers = ray_cluster
    rows = run_probes(tmp_path, "fifth-gpus-one-gpu", gpus_per_trial=0.2, cpus_per_trial=0.5)
    assert {r["node_id"] for r in rows} == workers
    assert {tuple(r["gpu_ids"]) for r in rows} == {("0",)}
    assert sum(r["gpu_share"] for r in rows) == pytest.approx(1.0)


@pytest.mark.parametrize("ray_cluster", ["two workers"], indirect=True)
def test_a_folder_store_on_a_multi_node_cluster_is_refused_before_anything_runs(ray_cluster, tmp_path):
    """`fmnist run` as a user types it, joining a cluster of three nodes with the default ./artifacts store:
    one line saying why and what to use, exit 2, nothing claimed or trained (the error is raised inside the flow,
    after Prefect started: its traceback stays out of the terminal)."""
    address = ray.get_runtime_context().gcs_address
    result = run_fmnist(["fmnist", "run", "--preset", "quick", "--architectures", "baseline", "--ray-address",
                         address], tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("fmnist run: error: ")]
    assert len(errors) == 1 and "is a folder on this machine" in errors[0] and "s3://" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "artifacts" / "runs").exists()


# ---- trials no single node can hold -------------------------------------------------------------------------


@pytest.mark.parametrize("ray_cluster", ["two workers"], indirect=True)
def test_a_trial_must_fit_one_node_not_the_clusters_sum(ray_cluster, monkeypatch):
    """3 CPUs and 3 GPUs per worker, 6 CPUs in all. A trial of 3 CPUs and a whole GPU fits one worker: accepted at
    once. A trial of 4 CPUs fits the sum but no node: refused, naming the field and the largest node. This driver
    joined the cluster by its address and no autoscaler reported node types to its GCS, so the cluster may be
    autoscaling: the refusal comes after the placement wait (2 s here), having asked the autoscaler for the shape."""
    from tasks.tune.cluster import PlacementError, check_trials_fit

    monkeypatch.setenv("FMNIST_PLACEMENT_TIMEOUT_S", "2")
    fits = PipelineConfig(store="s3://bucket/any", cpus_per_trial=3, gpus_per_trial=1.0)
    started = time.monotonic()
    check_trials_fit(fits)
    assert time.monotonic() - started < 2  # no wait for a request some node holds

    lines: list[str] = []
    too_big = PipelineConfig(store="s3://bucket/any", cpus_per_trial=4, gpus_per_trial=0.2)
    started = time.monotonic()
    with pytest.raises(PlacementError) as error:
        check_trials_fit(too_big, lines.append)
    waited = time.monotonic() - started
    assert 2 <= waited < 15, waited
    assert str(error.value).startswith(
        "config field 'cpus_per_trial': each trial asks for 4 CPUs, but the largest node of the Ray cluster has 3 "
        "(6 in all, but a trial runs on one node); lower --cpus-per-trial or add a bigger node (none joined within "
        "2 s of asking the autoscaler; FMNIST_PLACEMENT_TIMEOUT_S sets the wait)"), str(error.value)
    assert len(lines) == 1 and "waiting up to 2 s" in lines[0], lines
    # The request made for the wait is withdrawn: it would otherwise keep asking for a 4-CPU node after this run.
    # (This Cluster runs the v1 autoscaler protocol: requests are a JSON list in the GCS's key-value store.)
    import json

    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    assert not is_autoscaler_v2()
    assert json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)) == []
