"""`fmnist deploy` serving on a real Prefect server, a run cancelled as the UI's button does, then
`fmnist run --resume` from the same folder."""

import asyncio
import json
import signal
import subprocess
import uuid

import pytest
from prefect import get_client
from prefect.states import Cancelling

from tests.cli_user import live_processes, run_fmnist, start_fmnist, stop_group
from tests.trial_processes import wait_for


@pytest.mark.slow
def test_a_run_cancelled_from_the_ui_ends_cancelled_stops_its_trials_and_resumes(prefect_api, tmp_path):
    """`fmnist deploy` serving; a run triggered; once a trial has checkpointed, Cancel as the UI's button does
    (the flow run set to Cancelling). The run ends Cancelled, never Crashed; its trial processes are gone; then
    `fmnist run --resume ID` from the same folder finishes it from the checkpoints."""
    env = {"PREFECT_API_URL": prefect_api}
    name = f"cancel-{uuid.uuid4().hex[:6]}"
    serve = start_fmnist(["fmnist", "deploy", "--name", name, "--preset", "quick", "--architectures", "cnn2",
                          "--max-epochs", "6", "--train-rows", "6000", "--test-rows", "500"], tmp_path, env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def trials_of(pid: int) -> list[str]:
        return [line for line in live_processes(pid) if "ImplicitFunc" in line]  # the session `fmnist deploy` leads

    async def deployment_id():
        async with get_client() as client:
            try:
                return (await client.read_deployment_by_name(f"fmnist-run/{name}")).id
            except Exception:
                return None

    async def call(method, *args, **kwargs):
        async with get_client() as client:
            return await getattr(client, method)(*args, **kwargs)

    try:
        found: list = []
        wait_for(lambda: found.append(asyncio.run(deployment_id())) or found[-1] is not None, 120, "the deployment")
        flow_run = asyncio.run(call("create_flow_run_from_deployment", found[-1]))
        wait_for(lambda: list(tmp_path.glob("artifacts/runs/*/tune/*/checkpoint_*")), 240, "a cnn2 checkpoint")
        asyncio.run(call("set_flow_run_state", flow_run.id, Cancelling()))
        wait_for(lambda: asyncio.run(call("read_flow_run", flow_run.id)).state.is_final(), 90, "a final state")
        states = [s.type.value for s in asyncio.run(call("read_flow_run_states", flow_run.id))]
        assert states[-1] == "CANCELLED" and "CRASHED" not in states, states
        wait_for(lambda: not trials_of(serve.pid), 60, "the cancelled run's trials to end")
    finally:
        stop_group(serve, signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_group(serve)
            serve.wait(timeout=10)

    (run_folder,) = (tmp_path / "artifacts" / "runs").iterdir()
    assert not (run_folder / "run.json").exists()
    resumed = run_fmnist(["fmnist", "run", "--resume", run_folder.name], tmp_path, env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_folder / "cnn2" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and metrics["epochs"] == 6
