"""Faults a night brings, in this process: a trial's worker killed, the store going away, a resume after an outage.
The faults a user meets through `fmnist run` (the whole run killed, two runs at once, Ctrl-C) are in
tests/cli/test_reliability.py.

Each test injects the real fault (SIGKILL, a stopped S3 server) into real Ray and SeaweedFS.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from pathlib import Path

import pytest

from tasks.config import PipelineConfig
from tasks.errors import StoreError
from tasks.runs.run import Run
from tasks.tune.fanout import TrainingError, run_trials
from tasks.data.shards import publish_dataset
from tasks.data.store import open_store
from tests.trial_processes import history_epochs, registered_history_len, trial_pids, trials_killed_after, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_store_with_data(tmp_path_factory, raw_dataset):
    store = open_store(str(tmp_path_factory.mktemp("reliability")))
    return store, publish_dataset(raw_dataset, store).version


def test_a_killed_trial_worker_resumes_from_its_last_epoch(ray_local, local_store_with_data):
    store, version = local_store_with_data
    run_id = f"killed-worker-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["cnn2"], max_epochs=6, train_rows=6000,
                            test_rows=500, max_failures=2)

    with trials_killed_after(store, run_id, epochs=2) as killed:
        metrics = run_trials(Run.on_published_dataset(config, store, run_id, version))["cnn2"]

    assert killed, "no trial process was found to kill"
    assert metrics["resumed_from_epoch"] >= 2  # restarted from a checkpoint, not from scratch
    assert history_epochs(store, run_id, "cnn2") == list(range(1, 7))  # no gap, no duplicate


def test_store_away_briefly_is_retried_and_away_for_good_is_a_clear_error(s3_server, s3_store_uri, raw_dataset,
                                                                           monkeypatch):
    monkeypatch.setenv("FMNIST_S3_MAX_ATTEMPTS", "12")  # a wide window, so the restart always fits in it
    store = open_store(s3_store_uri, s3_server.endpoint)
    store.put_bytes("probe", b"before")

    # Away for ~3 s (plus the server's own start-up), inside botocore's retry window (standard mode, backoff).
    s3_server.stop()
    restarter = threading.Timer(3.0, s3_server.start)
    restarter.start()
    try:
        store.put_bytes("probe", b"after")
    finally:
        restarter.join()
    assert store.get_bytes("probe") == b"after"

    # Away for good: a clear error, and no manifest — the half-written version is invisible.
    monkeypatch.setenv("FMNIST_S3_MAX_ATTEMPTS", "2")
    flaky = open_store(s3_store_uri, s3_server.endpoint)
    real_put = flaky.put_if_absent  # how shards and the manifest are written
    writes = []

    def put_then_vanish(key, data):
        writes.append(key)
        if len(writes) == 3:
            s3_server.stop()
        return real_put(key, data)

    flaky.put_if_absent = put_then_vanish
    try:
        with pytest.raises(StoreError) as error:
            publish_dataset(raw_dataset, flaky)
        assert "cannot reach S3 endpoint" in str(error.value) and s3_server.endpoint in str(error.value)
    finally:
        s3_server.start()
    assert not [k for k in store.list_keys("datasets/") if k.endswith("manifest.json")]


def test_s3_gone_for_good_mid_training_is_one_store_error_with_the_resume_hint(s3_server, s3_store_uri, raw_dataset,
                                                                               ray_local):
    """Tune's own storage calls (pyarrow) fail when the S3 server goes for good after a checkpoint: a StoreError
    naming the store, the endpoint and how to resume, not pyarrow's OSError from Tune's analysis."""
    store = open_store(s3_store_uri, s3_server.endpoint)
    version = publish_dataset(raw_dataset, store).version
    run_id = f"s3-gone-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig(preset="quick", store=s3_store_uri, s3_endpoint=s3_server.endpoint, architectures=["cnn2"],
                            max_epochs=6, train_rows=6000, test_rows=500, max_failures=1,
                            store_wait_s=3)  # the restart gives up waiting for the store after 3 s, not 120

    def stop_after_first_checkpoint():
        wait_for(lambda: any("checkpoint_" in k for k in store.list_keys(f"runs/{run_id}/tune/")), 240,
                 "a checkpoint in S3")
        s3_server.stop()

    stopper = threading.Thread(target=stop_after_first_checkpoint, daemon=True)
    stopper.start()
    try:
        with pytest.raises(StoreError) as error:
            run_trials(Run.on_published_dataset(config, store, run_id, version))
    finally:
        stopper.join(timeout=240)
        s3_server.start()
    message = str(error.value)
    assert f"Ray Tune lost the store {s3_store_uri} (endpoint {s3_server.endpoint})" in message
    assert f"fmnist run --resume {run_id}" in message and message.count("\n") == 0


def _checkpoint_dirs(trial_dir: Path) -> list[Path]:
    return sorted(trial_dir.glob("checkpoint_*"))


def test_a_resume_uses_the_newest_checkpoint_when_the_saved_state_names_a_deleted_one(ray_local,
                                                                                       local_store_with_data):
    """Issue 10, item 1: Tune (num_to_keep=1) deletes checkpoint_K once checkpoint_K+1 is written, even when the
    experiment-state upload that would name K+1 fails (a long store outage). The stored state then names a
    checkpoint that is gone. Reproduced exactly: a trial stopped after some epochs, then its named checkpoint_K
    moved to checkpoint_K+1 (what the outage leaves). A resume must continue from checkpoint_K+1."""
    store, version = local_store_with_data
    run_id = f"stale-ckpt-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["cnn2"], max_epochs=5, train_rows=6000,
                            test_rows=500, max_failures=0)

    def kill_after_second_checkpoint():
        wait_for(lambda: registered_history_len(store, run_id) >= 2, 240, "Tune to take epoch 2's checkpoint")
        for pid in trial_pids():
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_second_checkpoint, daemon=True)
    killer.start()
    with pytest.raises(TrainingError):
        run_trials(Run.on_published_dataset(config, store, run_id, version))
    killer.join(timeout=5)

    tune_dir = Path(store.uri.removeprefix("file://")) / "runs" / run_id / "tune"
    (trial_dir,) = [p for p in tune_dir.glob("*architecture=cnn2*") if p.is_dir()]
    (named,) = _checkpoint_dirs(trial_dir)  # the one the saved state names (num_to_keep=1)
    assert any(named.name in p.read_text() for p in tune_dir.glob("experiment_state-*.json"))
    newer = trial_dir / f"checkpoint_{int(named.name.split('_')[1]) + 1:06d}"
    named.rename(newer)  # the outage: K+1 written, K deleted, the state still naming K
    epochs_done = len(json.loads((newer / "state.json").read_text())["history"])

    said: list[str] = []
    metrics = run_trials(Run.on_published_dataset(config, store, run_id, version), progress=said.append)["cnn2"]
    assert f"resuming from {newer.name} ({epochs_done} epochs); the saved state named {named.name} (missing)" \
        in "\n".join(said)
    assert metrics["resumed_from_epoch"] == epochs_done
    assert history_epochs(store, run_id, "cnn2") == list(range(1, 6))  # no gap, no duplicate




@pytest.mark.parametrize("outage_s", [60])
def test_an_s3_outage_of_a_minute_mid_training_costs_no_failed_run(s3_server, s3_store_uri, raw_dataset, ray_local,
                                                                   outage_s):
    """Issue 21 X9: S3 stopped for `outage_s` after the first checkpoint, then back. Tune restarts a failed trial at
    once, so before, both trials spent their 2 restarts in seconds (+0, +12, +27 s) and a 30 s outage failed the run.
    A restarted trial now waits for the store (up to store_wait_s), so the run finishes and every model is there."""
    store = open_store(s3_store_uri, s3_server.endpoint)
    version = publish_dataset(raw_dataset, store).version
    run_id = f"s3-blip-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig(preset="quick", store=s3_store_uri, s3_endpoint=s3_server.endpoint,
                            architectures=["baseline", "mlp1"], max_epochs=8, train_rows=6000, test_rows=500)

    def outage_after_first_checkpoint():
        wait_for(lambda: any("checkpoint_" in k for k in store.list_keys(f"runs/{run_id}/tune/")), 240,
                 "a checkpoint in S3")
        s3_server.stop()
        threading.Event().wait(outage_s)
        s3_server.start()

    outage = threading.Thread(target=outage_after_first_checkpoint, daemon=True)
    outage.start()
    try:
        metrics = run_trials(Run.on_published_dataset(config, store, run_id, version))
    finally:
        outage.join(timeout=240 + outage_s)
        if not outage.is_alive():
            s3_server.start()  # no-op when it is up
    assert sorted(metrics) == ["baseline", "mlp1"]
    for arch in ("baseline", "mlp1"):
        assert store.exists(f"runs/{run_id}/{arch}/metrics.json")
