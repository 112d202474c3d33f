"""Ray limits a user meets before any trial runs: a cluster address where nothing answers, and trials no node can hold.

Ray alone would wait forever in both cases: its GCS client retries "Failed to connect to GCS" and ignores Ctrl-C, and
Tune keeps an unplaceable trial pending ("Ignore this message if the cluster is autoscaling"). Here, with the real
`fmnist` command as a user types it (tests/cli_user.py) and its own local Ray, each ends in one line and exit 2.
The checks alone: tests/unit/test_ray_limits.py (addresses), tests/integration/test_ray_limits.py (placement).
The multi-node cases (a request that fits the cluster's sum but no single node; the autoscaling wait) are in
tests/integration/test_cluster.py, on its ray.cluster_utils.Cluster.
"""

from __future__ import annotations

import subprocess

from tests.cli_user import run_fmnist

CLI_TIMEOUT_S = 300


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("fmnist run: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    return errors[0]


# ---- item 5: an address where nothing answers -----------------------------------------------------------------


def test_fmnist_run_with_an_unreachable_gcs_address_exits_2_within_the_default_30_s(tmp_path):
    """Before this check, `fmnist run --ray-address 127.0.0.1:1` hung forever and ignored Ctrl-C."""
    result = run_fmnist(["fmnist", "run", "--preset", "quick", "--architectures", "baseline", "--ray-address",
                         "127.0.0.1:1"], tmp_path, timeout=CLI_TIMEOUT_S)
    seconds = result.seconds
    assert_one_error_line(result, "cannot connect to the Ray cluster at 127.0.0.1:1 within 30 s: ",
                          "Connection refused", "check --ray-address / RAY_ADDRESS")
    assert seconds < 45, seconds  # the 30 s deadline plus start-up, not forever
    assert not (tmp_path / "artifacts" / "runs").exists()


def test_fmnist_run_with_an_unreachable_ray_client_address_exits_2_within_the_configured_wait(tmp_path):
    result = run_fmnist(["fmnist", "run", "--preset", "quick", "--architectures", "baseline", "--ray-address",
                         "ray://127.0.0.1:1"], tmp_path, {"FMNIST_RAY_CONNECT_TIMEOUT_S": "3"}, timeout=CLI_TIMEOUT_S)
    seconds = result.seconds
    assert_one_error_line(result, "cannot connect to the Ray cluster at ray://127.0.0.1:1 within 3 s: ",
                          "no Ray Client server answers on 127.0.0.1:1")
    assert seconds < 25, seconds
    assert not (tmp_path / "artifacts" / "runs").exists()


def test_fmnist_run_with_the_s3_port_as_ray_address_exits_2_at_once_instead_of_hanging(tmp_path, s3_server):
    """Issue 21 X2: the open port of a real SeaweedFS passed the TCP check, and ray.init hung there (killed at
    300 s; Ctrl-C took 38 s). Now one call of Ray's protocol refuses it."""
    port = s3_server.ports["s3.port"]
    result = run_fmnist(["fmnist", "run", "--preset", "quick", "--architectures", "baseline", "--ray-address",
                         f"127.0.0.1:{port}"], tmp_path, timeout=CLI_TIMEOUT_S)
    seconds = result.seconds
    assert_one_error_line(result, f"cannot use the Ray cluster at 127.0.0.1:{port}: something that is not a Ray GCS "
                                  f"answers on 127.0.0.1:{port}", "check --ray-address / RAY_ADDRESS")
    assert seconds < 30, seconds  # start-up and one call, well inside the 30 s connect timeout
    assert not (tmp_path / "artifacts" / "runs").exists()


# ---- item 6: trials no node can hold --------------------------------------------------------------------------


def test_fmnist_run_asking_more_cpus_per_trial_than_this_machine_has_exits_2(tmp_path):
    """As a user types it: the flow's local Ray has this machine's CPUs; one more per trial can never be placed."""
    from ray._private.utils import get_num_cpus

    cpus = get_num_cpus() + 1
    result = run_fmnist(["fmnist", "run", "--preset", "quick", "--architectures", "baseline", "--cpus-per-trial",
                         str(cpus)], tmp_path, timeout=CLI_TIMEOUT_S)
    assert_one_error_line(result, f"config field 'cpus_per_trial': each trial asks for {cpus} CPUs, but the largest "
                                  f"node of the Ray cluster has {cpus - 1}")
    assert not (tmp_path / "artifacts" / "runs").exists()  # refused in preflight, before the run is claimed
