"""Trials no node of the Ray cluster can hold, refused at once on the session's real local Ray (2 CPUs, no GPU).
The same through the real `fmnist` command: tests/cli/test_ray_limits.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.config import PipelineConfig
from tasks.errors import PipelineError
from tasks.tune.cluster import PlacementError, RayConnectError, check_ray_reachable, preflight
from tests.seaweed_server import free_ports, temporary_root


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
        preflight(config)
    assert time.monotonic() - started < 5  # at once: no autoscaling wait on a Ray started here
    assert str(error.value).startswith(expected), str(error.value)
    assert isinstance(error.value, PipelineError)
    assert not (tmp_path / "runs").exists()  # nothing written: Tune never started


# ---- what answers at the address: Ray, Ray behind a token, or not Ray (issue 21, X2 and X12) ---------------------


def test_the_sessions_real_ray_passes_the_protocol_check(ray_local):
    """The GCS probe is one call of Ray's wire protocol: a real GCS must answer it (else every cluster is refused)."""
    import ray

    check_ray_reachable(ray.get_runtime_context().gcs_address, timeout_s=10)


@pytest.fixture(scope="module")
def token_auth_head() -> Iterator[dict[str, str]]:
    """A real Ray head with token auth (`ray start --head --block` under RAY_AUTH_MODE=token), in its own process
    group, ended by its group id (never `ray stop`, which would end every Ray on this machine)."""
    gcs_port, client_port, agent_port = free_ports(3)
    token = uuid.uuid4().hex + uuid.uuid4().hex
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    # A short folder of its own: Ray's unix sockets go in it, and pytest's tmp_path (pytest-of-USER/pytest-NNN/…)
    # grows past the 107 bytes a socket path may have once NNN reaches 100.
    temp = temporary_root("ray-token-")
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
         f"--ray-client-server-port={client_port}", f"--dashboard-agent-listen-port={agent_port}", "--num-cpus=0",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(gcs_port) or not _listening(client_port):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"a token-auth Ray head did not start within 60 s: {head.stderr.read()[-2000:]}")
            time.sleep(0.5)
        yield {"gcs": f"127.0.0.1:{gcs_port}", "client": f"ray://127.0.0.1:{client_port}", "token": token}
    finally:
        try:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=30)
        except ProcessLookupError:  # it ended already (a failed start): nothing to stop
            pass
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _check_in_a_fresh_process(address: str, **auth: str) -> subprocess.CompletedProcess:
    """check_ray_reachable in a new process with these auth variables, as a user's command would run it: Ray's
    token loader reads the environment once per process and caches it."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")} | auth
    code = "import sys; from tasks.tune.cluster import check_ray_reachable; check_ray_reachable(sys.argv[1], 30)"
    return subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("endpoint", ["gcs", "client"])
def test_a_token_auth_cluster_without_the_token_says_so_at_once(token_auth_head, endpoint):
    """Before: 20 InvalidAuthToken warnings, 42 s, then 'cannot connect (Failed to connect to Ray cluster …)'."""
    started = time.monotonic()
    result = _check_in_a_fresh_process(token_auth_head[endpoint])
    assert time.monotonic() - started < 20  # a fresh interpreter importing Ray, then one call
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert f"cannot use the Ray cluster at {token_auth_head[endpoint]}: the cluster requires an auth token and none " \
           "is set here" in message, message
    assert "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token" in message


@pytest.mark.parametrize("endpoint", ["gcs", "client"])
def test_a_token_auth_cluster_passes_with_its_token_and_names_a_wrong_one(token_auth_head, endpoint):
    right = _check_in_a_fresh_process(token_auth_head[endpoint], RAY_AUTH_MODE="token",
                                      RAY_AUTH_TOKEN=token_auth_head["token"])
    assert right.returncode == 0, right.stderr[-2000:]
    wrong = _check_in_a_fresh_process(token_auth_head[endpoint], RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="f" * 64)
    assert wrong.returncode != 0
    assert "the cluster refused this machine's Ray auth token" in wrong.stderr.strip().splitlines()[-1]


def test_the_ray_client_port_given_as_a_gcs_address_is_refused_as_not_a_gcs(token_auth_head):
    client_port = token_auth_head["client"].rpartition(":")[2]
    result = _check_in_a_fresh_process(f"127.0.0.1:{client_port}", RAY_AUTH_MODE="token",
                                       RAY_AUTH_TOKEN=token_auth_head["token"])
    assert f"a gRPC server that is not a Ray GCS answers on 127.0.0.1:{client_port}" in result.stderr, result.stderr
