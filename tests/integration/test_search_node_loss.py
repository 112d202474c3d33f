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

import pytest
import ray

from flows.cli import main
from tasks.data.store import open_store
from tasks.tune.cluster import WORKER_ENV
from tests.trial_processes import ray_address_file_restorer

pytestmark = pytest.mark.slow

RUN_ID = "node-loss"
SAMPLES = 4


@pytest.fixture(scope="module")
def two_nodes(s3_server):
    """A head and a worker node of one CPU each, this driver connected; yields (cluster, the worker node). Started
    after SeaweedFS: the nodes inherit its credentials from this process. The local Ray of other modules is shut
    down meanwhile (conftest's `ray_local` starts it again)."""
    from ray.cluster_utils import Cluster

    ray.shutdown()
    restore_address_file = ray_address_file_restorer()
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


def both_nodes_busy(polls: int = 4, interval_s: float = 0.25) -> bool:
    """No CPU free in the cluster, seen on `polls` polls in a row (Ray's resource view lags a moment behind: one
    stale reading can show a node busy whose trial just ended); with one CPU per node, a trial holds each node."""
    for _ in range(polls):
        if ray.available_resources().get("CPU", 0.0) != 0.0:
            return False
        time.sleep(interval_s)
    return True


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


def search_losing_the_worker(cluster, worker, s3_server, run_id: str) -> tuple[object, list[int]]:
    """One quick search with the worker's raylet SIGKILLed once both nodes train; (its store, each trial's
    num_failures in Tune's saved state)."""
    store_uri = f"s3://{s3_server.bucket}/node-loss-{uuid.uuid4().hex[:8]}"
    store = open_store(store_uri, s3_server.endpoint)
    experiment = f"runs/{run_id}/search/baseline"
    events: list[str] = []
    # Training under way (a checkpoint written) and both nodes busy (no CPU free: two trials, one CPU each): one of
    # them trains on the worker, whose raylet (and with it the trial's process) is SIGKILLed.
    watcher = kill_when(lambda: checkpointed_trials(store, experiment) and both_nodes_busy(),
                        lambda: cluster.remove_node(worker, allow_graceful=False), 300, events)
    code = main(["search", "--preset", "quick", "--architectures", "baseline", "--num-samples", str(SAMPLES),
                 "--max-epochs", "8", "--max-concurrent", "2", "--seeds", "1", "--store", store_uri,
                 "--s3-endpoint", s3_server.endpoint, "--run-id", run_id])
    watcher.join(timeout=5)
    assert events == ["killed"], events
    assert code == 0
    assert len([node for node in ray.nodes() if node["Alive"]]) == 1  # the search ended on the head alone
    leaderboard = json.loads(store.get_bytes(f"runs/{run_id}/search/leaderboard.json"))
    assert len(leaderboard) == SAMPLES and not [row for row in leaderboard if row["ended"] == "failed"]
    assert store.exists(f"runs/{run_id}/run.json") and store.exists(f"runs/{run_id}/baseline/metrics.json")
    states = sorted(key for key in store.list_keys(f"{experiment}/") if key.rsplit("/", 1)[-1].startswith("experiment_state"))
    saved = json.loads(store.get_bytes(states[-1]))
    return store, [json.loads(metadata).get("num_failures", 0) for _, metadata in saved["trial_data"]]


def test_the_second_nodes_raylet_killed_mid_search_and_the_search_ends_with_every_trial(two_nodes, prefect_api,
                                                                                          s3_server):
    """Every attempt must end with every trial and none failed. The kill must hit a training trial in one of three
    attempts: the resource view it is timed by lags, and a kill that lands between two trials proves nothing, so
    the search is run again with a new worker node."""
    cluster, worker = two_nodes
    tried: list[list[int]] = []
    for attempt in range(3):
        if attempt:
            worker = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
        _, failures = search_losing_the_worker(cluster, worker, s3_server, f"{RUN_ID}-{attempt}")
        tried.append(failures)
        if sum(failures) >= 1:  # the trial on the lost node failed once and was restarted, not dropped
            return
    raise AssertionError(f"no attempt's kill hit a training trial (num_failures per trial: {tried})")
