"""README, 'Nightly retraining', as typed: `.venv/bin/fmnist deploy --pool NAME` on a real Prefect server, then a
real `.venv/bin/prefect worker start --pool NAME` runs a run triggered on the deployment."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from prefect import get_client

from tests.cli_user import VENV_BIN, run_fmnist, start_fmnist, stop_group

VENV = VENV_BIN.parent


def stop(process: subprocess.Popen, what: str, timeout: float = 60) -> str:
    """Ctrl-C to the process's group, as a terminal or a service manager sends it; SIGKILL after `timeout` s."""
    if process.poll() is None:
        stop_group(process, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        output, _ = process.communicate(timeout=10)
        raise AssertionError(f"{what} ignored Ctrl-C for {timeout:.0f} s:\n{output[-3000:]}") from None
    return output


@pytest.mark.slow
def test_fmnist_deploy_pool_then_a_worker_runs_it_as_typed(prefect_api, tmp_path):
    """README, 'Nightly retraining': `.venv/bin/fmnist deploy --pool fmnist …` registers and returns; then
    `.venv/bin/prefect worker start --pool fmnist` (from another folder, as a service would) runs a run triggered
    on the deployment, to Completed, and stops on Ctrl-C."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / ".venv").symlink_to(VENV)
    store = tmp_path / "store"
    env = {"PREFECT_API_URL": prefect_api}
    deploy = run_fmnist(".venv/bin/fmnist deploy --pool fmnist --timezone Europe/Berlin --store s3://my-bucket/fmnist",
                        folder, env, timeout=120)
    assert deploy.returncode == 0, deploy.stderr[-3000:]
    assert "registered fmnist-run/nightly on work pool 'fmnist'" in deploy.stdout, deploy.stdout
    assert "prefect worker start --pool fmnist" in deploy.stdout

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("fmnist-run/nightly")
        assert deployment.work_pool_name == "fmnist"
        assert deployment.parameters["config"]["store"] == "s3://my-bucket/fmnist"
        # What the UI's Custom run form sends: every field, here a quick run of one model into a folder.
        config = deployment.parameters["config"] | {"preset": "quick", "architectures": ["baseline"],
                                                    "store": str(store)}
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})

    service_folder = tmp_path / "service"
    service_folder.mkdir()
    (service_folder / ".venv").symlink_to(VENV)
    worker = start_fmnist(".venv/bin/prefect worker start --pool fmnist", service_folder,
                          env | {"PREFECT_WORKER_QUERY_SECONDS": "2"}, merge_stderr=True)
    try:
        deadline, state = time.monotonic() + 600, None
        while time.monotonic() < deadline and worker.poll() is None:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final():
                break
            time.sleep(2)
        assert worker.poll() is None, f"the worker exited ({worker.returncode}) before the run ended"
        assert state is not None and state.is_final(), f"the run was not final within 600 s: {state}"
    finally:
        output = stop(worker, "`prefect worker start`")
    assert state.is_completed(), f"{state}\n{output[-4000:]}"
    assert "Traceback" not in output and "stopped!" in output, output[-4000:]  # a clean stop on Ctrl-C
    (metrics,) = store.glob("runs/*/baseline/metrics.json")
    assert json.loads(metrics.read_text())["epochs"] == 2
    assert list(store.glob("runs/*/run.json"))
