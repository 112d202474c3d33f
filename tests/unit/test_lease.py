"""One process per run: the lease on runs/<id>/, on a store (a folder here; tests/integration/test_lease_s3.py runs the
same on SeaweedFS). Two `fmnist run --run-id X` at once: tests/cli/test_lease.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tasks.config import PipelineConfig
from tasks.runs.lease import RunInProgress, RunLease
from tasks.runs.run import claim_run
from tasks.keys import RunPaths
from tasks.settings import Settings

DEFAULT_TTL_S = Settings.model_fields["lease_ttl_s"].default


def lease_of(store, run_id: str) -> RunLease:
    return RunLease(store, RunPaths(run_id).lease, run_id)


def test_a_live_holder_keeps_the_run_and_release_frees_it(store):
    first = lease_of(store, "r1").acquire()
    with pytest.raises(RunInProgress) as refused:
        lease_of(store, "r1").acquire()
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "is in progress" in message and message.count("\n") == 0
    first.release()
    assert not store.exists(RunPaths("r1").lease)
    lease_of(store, "r1").acquire().release()


def test_a_dead_holder_on_this_host_is_taken_over_at_once(store):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    import socket

    store.put_bytes(RunPaths("r2").lease, json.dumps({"host": socket.gethostname(), "pid": gone.pid, "id": "x",
                                                      "renewed_at": time.time()}).encode())
    taken = lease_of(store, "r2").acquire()
    assert json.loads(store.get_bytes(RunPaths("r2").lease))["pid"] == os.getpid()
    taken.release()


@pytest.mark.parametrize("age, refused", [(5, True), (DEFAULT_TTL_S + 5, False)])
def test_a_holder_on_another_host_counts_until_its_lease_lapses(store, age, refused):
    store.put_bytes(RunPaths("r3").lease, json.dumps({"host": "another-node", "pid": 1, "id": "y",
                                                      "renewed_at": time.time() - age}).encode())
    if refused:
        with pytest.raises(RunInProgress, match="on another-node"):
            lease_of(store, "r3").acquire()
    else:
        lease_of(store, "r3").acquire().release()


def test_a_holder_on_another_host_lapses_after_the_ttl_the_environment_sets(store, monkeypatch):
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "30")
    store.put_bytes(RunPaths("r6").lease, json.dumps({"host": "another-node", "pid": 1, "id": "y",
                                                      "renewed_at": time.time() - 40}).encode())
    lease_of(store, "r6").acquire().release()  # 40 s silent: past a 30 s TTL, not past the default 120 s


def test_the_holder_renews_its_lease_while_it_runs(store, monkeypatch):
    monkeypatch.setenv("FMNIST_LEASE_TTL_S", "0.8")  # renewed four times per TTL: every 0.2 s
    held = lease_of(store, "r4").acquire()
    try:
        first = json.loads(store.get_bytes(RunPaths("r4").lease))["renewed_at"]
        deadline = time.monotonic() + 10
        while json.loads(store.get_bytes(RunPaths("r4").lease))["renewed_at"] == first:
            assert time.monotonic() < deadline, "the lease was not renewed within 10 s"
            time.sleep(0.1)
    finally:
        held.release()


def test_a_second_claim_of_a_run_in_progress_writes_nothing(store):
    config = PipelineConfig(preset="quick", store=store.uri, run_id="r5", architectures=["baseline"])
    if store.uri.startswith("s3://"):
        config = config.model_copy(update={"s3_endpoint": store.endpoint})
    run = claim_run(config, store)
    before = {key: store.get_bytes(key) for key in store.list_keys("runs/r5/") if not key.endswith("lease.json")}
    with pytest.raises(RunInProgress):
        claim_run(config, store)
    after = {key: store.get_bytes(key) for key in store.list_keys("runs/r5/") if not key.endswith("lease.json")}
    assert after == before
    run.release()
    assert claim_run(config, store).resumed  # once released, the same id resumes


