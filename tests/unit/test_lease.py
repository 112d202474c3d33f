"""One process per run: the lease on runs/<id>/, on both store backends, and two `fmnist run --run-id X` at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import tasks.runs.lease as lease_module
from tasks.config import PipelineConfig
from tasks.runs.lease import RunInProgress, RunLease
from tasks.runs.run import claim_run
from tasks.keys import RunPaths


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


@pytest.mark.parametrize("age, refused", [(5, True), (lease_module.LEASE_TTL_S + 5, False)])
def test_a_holder_on_another_host_counts_until_its_lease_lapses(store, age, refused):
    store.put_bytes(RunPaths("r3").lease, json.dumps({"host": "another-node", "pid": 1, "id": "y",
                                                      "renewed_at": time.time() - age}).encode())
    if refused:
        with pytest.raises(RunInProgress, match="on another-node"):
            lease_of(store, "r3").acquire()
    else:
        lease_of(store, "r3").acquire().release()


def test_the_holder_renews_its_lease_while_it_runs(store, monkeypatch):
    monkeypatch.setattr(lease_module, "RENEW_EVERY_S", 0.2)
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


@pytest.mark.slow
def test_two_runs_given_the_same_run_id_at_once_one_is_refused_in_one_line(tmp_path, prefect_api):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "flows.cli", "run", "--preset", "quick", "--architectures", "baseline",
               "--run-id", "same-night"]
    processes = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True) for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    codes = sorted(p.returncode for p in processes)
    assert codes == [0, 2], [o[1][-2000:] for o in outputs]
    refused = next(err for p, (_, err) in zip(processes, outputs) if p.returncode == 2)
    errors = [line for line in refused.splitlines() if line.startswith("fmnist run: error: ")]
    assert len(errors) == 1 and "run same-night is in progress" in errors[0] and "Traceback" not in refused
    run = tmp_path / "artifacts" / "runs" / "same-night"
    assert (run / "run.json").is_file() and not (run / "lease.json").exists()
    assert json.loads((run / "baseline" / "metrics.json").read_text())["resumed_from_epoch"] == 0
