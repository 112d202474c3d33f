"""`fmnist deploy --pool NAME` on a real Prefect server: the nightly deployment on a process work pool, with the
served deployment's schedule, limit and form, run by a real `prefect worker start --pool NAME`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect import get_client

from flows.deploy import (PROJECT_ROOT, WorkPoolError, ensure_process_pool, nightly_deployment, pool_deployment,
                          register_on_pool)
from tasks.config import PipelineConfig
from tasks.errors import ConfigError

VENV = Path(sys.executable).parent.parent


def read_deployment(deployment_id):
    with get_client(sync_client=True) as client:
        return client.read_deployment(deployment_id)


def test_the_pool_deployment_has_the_served_ones_schedule_limit_and_form(prefect_api, tmp_path):
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig(store=str(tmp_path), preset="quick")
    served = nightly_deployment(config, name="served-twin", timezone="Europe/Berlin", on_collision="cancel")
    deployment = pool_deployment(config, name="pooled", timezone="Europe/Berlin", on_collision="cancel")

    deployment_id, created = register_on_pool(deployment, pool)
    again_id, created_again = register_on_pool(deployment, pool)  # a second deploy updates it, the pool is kept
    stored, twin = read_deployment(deployment_id), read_deployment(served.apply())

    assert (created, created_again, again_id) == (True, False, deployment_id)
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).type == "process"
    assert stored.work_pool_name == pool
    schedule = stored.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "Europe/Berlin")
    assert stored.global_concurrency_limit.limit == 1
    assert stored.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert stored.parameters == twin.parameters and stored.parameters["config"]["max_epochs"] is None
    assert stored.parameter_openapi_schema == twin.parameter_openapi_schema  # the same UI form
    assert [s.schedule for s in stored.schedules] == [s.schedule for s in twin.schedules]
    assert stored.concurrency_options == twin.concurrency_options
    # Where the worker finds the code: this project's folder, the flow's file in it.
    assert stored.entrypoint == "flows/run.py:run_flow"
    assert stored.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]


def test_a_pool_of_another_type_is_refused_by_name(prefect_api):
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"k8s-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="kubernetes", base_job_template={}))
    with pytest.raises(WorkPoolError) as error:
        ensure_process_pool(pool)
    assert f"work pool {pool!r} is of type 'kubernetes'" in str(error.value) and "process" in str(error.value)


def test_an_unknown_flow_is_named():
    with pytest.raises(ConfigError) as error:
        pool_deployment(PipelineConfig(), flow="serch")
    assert "--flow 'serch': expected one of run" in str(error.value)


def user_env(prefect_api: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_API_URL=prefect_api, PYTHONUNBUFFERED="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def stop(process: subprocess.Popen, what: str, timeout: float = 60) -> str:
    """Ctrl-C to the process's group, as a terminal or a service manager sends it; SIGKILL after `timeout` s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
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
    env = user_env(prefect_api)
    deploy = subprocess.run(".venv/bin/fmnist deploy --pool fmnist --timezone Europe/Berlin "
                            "--store s3://my-bucket/fmnist", shell=True, cwd=folder, env=env, capture_output=True,
                            text=True, timeout=120)
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
    worker = subprocess.Popen(".venv/bin/prefect worker start --pool fmnist", shell=True, cwd=service_folder,
                              env=env | {"PREFECT_WORKER_QUERY_SECONDS": "2"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
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
