"""A node lost mid-search (issue 18 §3's second red-team case): a real two-node Ray (`ray.cluster_utils.Cluster`: a
head and a worker with one CPU each, so two trials run at once, one on each node), a search on SeaweedFS, and the
worker's raylet killed (SIGKILL, no graceful drain) while both trials train. The trial that lost its node is
restarted by Tune from its last checkpoint on the node that is left, and the search ends with every trial.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import ray

from flows.cli import main
from tasks.data.store import open_store
from tasks.tune.cluster import WORKER_ENV

pytestmark = pytest.mark.slow

RUN_ID = "node-loss"
SAMPLES = 4


@pytest.fixture(scope="module")
def two_nodes(s3_server):
    """A head and a worker node of one CPU each, this driver connected; yields (cluster, the worker node). Started
    after SeaweedFS: the nodes inherit its credentials from this process. The local Ray of other modules is shut
    down meanwhile (conftest's `ray_local` starts it again)."""
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    ray.shutdown()
    # Cluster writes its address where any `ray.init()` on this machine would find it: put the file back at once.
    address_file = Path(get_ray_address_file(None))
    saved = address_file.read_text() if address_file.exists() else None

    def restore_address_file():
        if saved is None:
            address_file.unlink(missing_ok=True)
        else:
            address_file.write_text(saved)

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    restore_address_file()
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": WORKER_ENV})
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()
        restore_address_file()


def checkpointed_trials(store, experiment: str) -> set[str]:
    """The trials (their folder names) that have written a checkpoint into the store."""
    return {key.split("/")[len(experiment.split("/"))] for key in store.list_keys(f"{experiment}/")
            if "/checkpoint_" in key}


def both_nodes_busy() -> bool:
    """No CPU free in the cluster: with one CPU per node, a trial holds each node."""
    return ray.available_resources().get("CPU", 0.0) == 0.0


def kill_when(condition, action, timeout_s: float, events: list[str]) -> threading.Thread:
    """In the background: once `condition()` holds, `action()`; give up (recording why) after `timeout_s`."""
    def watch():
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                action()
                events.append("killed")
                return
            time.sleep(0.2)
        events.append(f"the condition did not hold within {timeout_s:.0f} s")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_the_second_nodes_raylet_killed_mid_search_and_the_search_ends_with_every_trial(two_nodes, prefect_api,
                                                                                          s3_server):
    cluster, worker = two_nodes
    store_uri = f"s3://{s3_server.bucket}/node-loss-{uuid.uuid4().hex[:8]}"
    store = open_store(store_uri, s3_server.endpoint)
    experiment = f"runs/{RUN_ID}/search/baseline"
    events: list[str] = []
    # Training under way (a checkpoint written) and both nodes busy (no CPU free: two trials, one CPU each): one of
    # them trains on the worker, whose raylet (and with it the trial's process) is SIGKILLed.
    watcher = kill_when(lambda: checkpointed_trials(store, experiment) and both_nodes_busy(),
                        lambda: cluster.remove_node(worker, allow_graceful=False), 300, events)
    code = main(["search", "--preset", "quick", "--architectures", "baseline", "--num-samples", str(SAMPLES),
                 "--max-epochs", "4", "--max-concurrent", "2", "--seeds", "1", "--store", store_uri,
                 "--s3-endpoint", s3_server.endpoint, "--run-id", RUN_ID])
    watcher.join(timeout=5)
    assert events == ["killed"], events
    assert code == 0
    assert len([node for node in ray.nodes() if node["Alive"]]) == 1  # the search ended on the head alone

    leaderboard = json.loads(store.get_bytes(f"runs/{RUN_ID}/search/leaderboard.json"))
    assert len(leaderboard) == SAMPLES and not [row for row in leaderboard if row["ended"] == "failed"]
    states = sorted(key for key in store.list_keys(f"{experiment}/") if key.rsplit("/", 1)[-1].startswith("experiment_state"))
    saved = json.loads(store.get_bytes(states[-1]))
    failures = [json.loads(metadata).get("num_failures", 0) for _, metadata in saved["trial_data"]]
    assert sum(failures) >= 1, failures  # the trial on the lost node failed once and was restarted, not dropped
    assert store.exists(f"runs/{RUN_ID}/run.json") and store.exists(f"runs/{RUN_ID}/baseline/metrics.json")
