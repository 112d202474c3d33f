"""Ray limits a user meets before any trial runs: a cluster address where nothing answers, and trials no node can hold.

Ray alone would wait forever in both cases: its GCS client retries "Failed to connect to GCS" and ignores Ctrl-C, and
Tune keeps an unplaceable trial pending ("Ignore this message if the cluster is autoscaling"). Here, with a real
local Ray and the real `fmnist` command in a subprocess, each ends in one line and exit 2.
The multi-node cases (a request that fits the cluster's sum but no single node; the autoscaling wait) are in
test_cluster.py, on its ray.cluster_utils.Cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.config import PipelineConfig
from tasks.errors import ConfigError, PipelineError
from tasks.tune.cluster import PlacementError, RayConnectError, check_ray_reachable
from tasks.tune.fanout import run_trials
from tasks.data.store import open_store

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 300


def run_cli(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m flows.cli …` in its own session, killed by its process group if it outlives CLI_TIMEOUT_S."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")} | {
        "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)} | (extra_env or {})
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), time.monotonic() - started


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("fmnist run: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    return errors[0]


# ---- item 5: an address where nothing answers -----------------------------------------------------------------


def test_an_address_where_nothing_listens_fails_within_the_deadline():
    started = time.monotonic()
    with pytest.raises(RayConnectError) as error:
        check_ray_reachable("127.0.0.1:1", timeout_s=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    assert str(error.value).startswith("cannot connect to the Ray cluster at 127.0.0.1:1 within 1.5 s: ")
    assert "check --ray-address / RAY_ADDRESS, or leave it empty for a local Ray" in str(error.value)


@pytest.mark.parametrize("address, expected", [
    ("head", "expected host:port"), ("ray://", "expected ray://host:port")])
def test_an_address_that_is_not_host_port_is_refused_at_once(address, expected):
    with pytest.raises(RayConnectError, match=expected):
        check_ray_reachable(address, timeout_s=30)


def test_a_bad_connect_timeout_names_the_variable(monkeypatch):
    monkeypatch.setenv("FMNIST_RAY_CONNECT_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="FMNIST_RAY_CONNECT_TIMEOUT_S"):
        check_ray_reachable("127.0.0.1:1")


def test_fmnist_run_with_an_unreachable_gcs_address_exits_2_within_the_default_30_s(tmp_path):
    """Before this check, `fmnist run --ray-address 127.0.0.1:1` hung forever and ignored Ctrl-C."""
    result, seconds = run_cli(["run", "--preset", "quick", "--architectures", "baseline", "--ray-address",
                               "127.0.0.1:1"], tmp_path)
    assert_one_error_line(result, "cannot connect to the Ray cluster at 127.0.0.1:1 within 30 s: ",
                          "Connection refused", "check --ray-address / RAY_ADDRESS")
    assert seconds < 45, seconds  # the 30 s deadline plus start-up, not forever
    assert not (tmp_path / "artifacts" / "runs").exists()


def test_fmnist_run_with_an_unreachable_ray_client_address_exits_2_within_the_configured_wait(tmp_path):
    result, seconds = run_cli(["run", "--preset", "quick", "--architectures", "baseline", "--ray-address",
                               "ray://127.0.0.1:1"], tmp_path, {"FMNIST_RAY_CONNECT_TIMEOUT_S": "3"})
    assert_one_error_line(result, "cannot connect to the Ray cluster at ray://127.0.0.1:1 within 3 s: ",
                          "no Ray Client server answers on 127.0.0.1:1")
    assert seconds < 25, seconds
    assert not (tmp_path / "artifacts" / "runs").exists()


# ---- item 6: trials no node can hold --------------------------------------------------------------------------


@pytest.mark.parametrize("field, value, expected", [
    ("cpus_per_trial", 3, ("config field 'cpus_per_trial': each trial asks for 3 CPUs, but the largest node of the "
                           "Ray cluster has 2; lower --cpus-per-trial or add a bigger node")),
    ("gpus_per_trial", 0.5, ("config field 'gpus_per_trial': each trial asks for 0.5 of a GPU, but no node of the Ray "
                             "cluster has a GPU; use --gpus-per-trial 0")),
])
def test_a_trial_the_local_ray_cannot_hold_is_refused_at_once(ray_local, tmp_path, field, value, expected):
    """The session's local Ray has 2 CPUs and no GPU; it was started here, so no autoscaler can add a node."""
    import ray

    assert ray.cluster_resources().get("CPU") == 2 and not ray.cluster_resources().get("GPU")
    config = PipelineConfig(store=str(tmp_path), preset="quick", architectures=["baseline"], **{field: value})
    started = time.monotonic()
    with pytest.raises(PlacementError) as error:
        run_trials(config, open_store(str(tmp_path)), "unplaceable", "any-version", manifest={"unused": True})
    assert time.monotonic() - started < 5  # at once: no autoscaling wait on a Ray started here
    assert str(error.value).startswith(expected), str(error.value)
    assert isinstance(error.value, PipelineError)
    assert not (tmp_path / "runs").exists()  # nothing written: Tune never started


def test_fmnist_run_asking_more_cpus_per_trial_than_this_machine_has_exits_2(tmp_path):
    """As a user types it: the flow's local Ray has this machine's CPUs; one more per trial can never be placed."""
    from ray._private.utils import get_num_cpus

    cpus = get_num_cpus() + 1
    result, _ = run_cli(["run", "--preset", "quick", "--architectures", "baseline", "--cpus-per-trial", str(cpus)],
                        tmp_path)
    assert_one_error_line(result, f"config field 'cpus_per_trial': each trial asks for {cpus} CPUs, but the largest "
                                  f"node of the Ray cluster has {cpus - 1}")
    assert not (tmp_path / "artifacts" / "runs").exists()  # refused in join_ray, before the run is claimed
