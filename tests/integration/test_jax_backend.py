"""The trainer on both Keras backends: TensorFlow (this machine's, the suite's) and JAX (the GPU machine's, design
section 9). One quick trial each through the project's fan-out on the session's Ray; the JAX one from a driver in a
subprocess started with KERAS_BACKEND=jax (Keras fixes its backend when it is first imported), whose trials get that
backend through connect_ray's runtime_env (tasks.tune.cluster.worker_env)."""

import json
import os
import subprocess
import sys

import pytest

from tasks.config import PipelineConfig
from tasks.runs.run import Run
from tasks.tune.fanout import run_trials
from tests.unit.test_training import local_dataset  # noqa: F401  (a fixture)

ROWS = {"architectures": ["mlp1"], "max_epochs": 2, "train_rows": 3000, "test_rows": 500}

JAX_DRIVER = """
import json, sys
from tasks.config import PipelineConfig
from tasks.data.store import open_store
from tasks.runs.run import Run
from tasks.tune.fanout import run_trials

store_uri, version, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
store = open_store(store_uri)
config = PipelineConfig(preset="quick", store=store.uri, **rows)
metrics = run_trials(Run.on_published_dataset(config, store, "backend-jax", version))["mlp1"]
print("METRICS " + json.dumps({k: metrics[k] for k in ("backend", "epochs", "test_accuracy", "rows")}))
"""


def sane(metrics: dict) -> None:
    assert metrics["epochs"] == 2 and metrics["rows"] == {"fit": 2400, "validation": 600, "test": 500}
    assert 0.6 < metrics["test_accuracy"] <= 1.0  # ten classes: chance is 0.1; two epochs of mlp1 reach ~0.75


def test_one_quick_trial_trains_on_tensorflow_and_on_jax(ray_local, local_dataset):
    pytest.importorskip("jax")  # the test extra installs jax[cpu]
    import ray

    store, version = local_dataset
    tf = run_trials(Run.on_published_dataset(PipelineConfig(preset="quick", store=store.uri, **ROWS), store,
                                             "backend-tf", version))["mlp1"]
    assert tf["backend"] == "tensorflow"
    sane(tf)

    env = {**os.environ, "KERAS_BACKEND": "jax", "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run([sys.executable, "-c", JAX_DRIVER, store.uri, version, json.dumps(ROWS)], env=env,
                          capture_output=True, text=True, timeout=240)
    lines = [line for line in done.stdout.splitlines() if line.startswith("METRICS ")]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-4000:]
    jax = json.loads(lines[-1].removeprefix("METRICS "))
    assert jax["backend"] == "jax"
    sane(jax)
