"""`fmnist deploy` serving on a real Prefect server, a run cancelled as the UI's button does, then
`fmnist run --resume` from the same folder."""

import asyncio
import json
import subprocess
import uuid

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.states import Cancelling

from tests.cli_user import interrupt_and_wait, live_processes, run_fmnist, start_fmnist
from tests.trial_processes import wait_for


@pytest.mark.slow
def test_a_run_cancelled_from_the_ui_ends_cancelled_stops_its_trials_and_resumes(prefect_api, tmp_path):
    """`fmnist deploy` serving; a run triggered; once a trial has checkpointed, Cancel as the UI's button does
    (the flow run set to Cancelling). The run and its train task end Cancelled, never Crashed (the only ERROR
    line is Prefect's "Finished in state Cancelled"); its trial processes are gone; then `fmnist run --resume ID`
    from the same folder finishes it from the checkpoints."""
    env = {"PREFECT_API_URL": prefect_api}
    name = f"cancel-{uuid.uuid4().hex[:6]}"
    serve = _serve(tmp_path, name, ["--preset", "quick", "--architectures", "cnn2", "--max-epochs", "6",
                                    "--train-rows", "6000", "--test-rows", "500"], env)

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
        # Its train task ends Cancelled too (Prefect's task engine would record it Crashed, with ERROR lines).
        of_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
        tasks = asyncio.run(call("read_task_runs", flow_run_filter=of_this_run))
        (train,) = [task for task in tasks if task.name.startswith("train")]
        assert train.state.type.value == "CANCELLED", train.state
        logs = asyncio.run(call("read_logs", log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id]))))
        errors = [log.message for log in logs if log.level >= 40]  # Prefect logs any end but Completed at ERROR
        assert errors and all(m.startswith("Finished in state Cancelled(") for m in errors), errors  # no "Crash"
        wait_for(lambda: not trials_of(serve.pid), 60, "the cancelled run's trials to end")
    finally:
        _stop(serve)

    (run_folder,) = (tmp_path / "artifacts" / "runs").iterdir()
    assert not (run_folder / "run.json").exists()
    resumed = run_fmnist(["fmnist", "run", "--resume", run_folder.name], tmp_path, env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # It says which of the deployment's flow runs it continues.
    assert f"continues flow run {flow_run.name!r} ({flow_run.id}) of deployment fmnist-run/{name}" in (
        resumed.stdout + resumed.stderr), resumed.stderr[-3000:]
    metrics = json.loads((run_folder / "cnn2" / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] >= 1 and metrics["epochs"] == 6


def _serve(tmp_path, name: str, options: list[str], env: dict):
    return start_fmnist(["fmnist", "deploy", "--name", name, *options], tmp_path, env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(serve) -> None:
    interrupt_and_wait(serve)


async def _call(method, *args, **kwargs):
    async with get_client() as client:
        return await getattr(client, method)(*args, **kwargs)


def _deployment(name: str, flow: str = "fmnist-run"):
    found: list = []

    async def read():
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(f"{flow}/{name}")
            except Exception:
                return None

    wait_for(lambda: found.append(asyncio.run(read())) or found[-1] is not None, 120, "the deployment")
    return found[-1]


def _newest_logs(flow_run_id) -> list:
    """The flow run's last 50 log lines (the server answers 200 at most, oldest first, unless asked otherwise)."""
    from prefect.client.schemas.sorting import LogSort

    return asyncio.run(_call("read_logs", log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                             sort=LogSort.TIMESTAMP_DESC, limit=50))


def _published(run_folder) -> dict:
    """Each file the run published (Tune's own state under tune/ aside) with its modification time."""
    return {p: p.stat().st_mtime_ns for p in run_folder.rglob("*")
            if p.is_file() and "tune" not in p.relative_to(run_folder).parts}


def _final_state(flow_run_id, timeout: float, what: str):
    wait_for(lambda: asyncio.run(_call("read_flow_run", flow_run_id)).state.is_final(), timeout, what, interval=1)
    return asyncio.run(_call("read_flow_run", flow_run_id))


@pytest.mark.slow
def test_a_run_past_its_time_limit_ends_timed_out_resumable_and_the_queued_run_starts(prefect_api, tmp_path):
    """`fmnist deploy --timeout 40s`: a run that trains longer ends TimedOut (its trials stopped, its checkpoints
    kept, its run unfinished and resumable); the run queued behind it (concurrency limit 1) then starts and
    completes."""
    env = {"PREFECT_API_URL": prefect_api}
    name = f"limit-{uuid.uuid4().hex[:6]}"
    serve = _serve(tmp_path, name, ["--preset", "quick", "--architectures", "cnn2", "--max-epochs", "500",
                                    "--patience", "500", "--train-rows", "6000", "--test-rows", "500",
                                    "--timeout", "40s"], env)
    try:
        deployment = _deployment(name)
        assert deployment.parameters["config"]["timeout"] == 40
        long_run = asyncio.run(_call("create_flow_run_from_deployment", deployment.id))
        # The second run is created once the first holds the deployment's one slot: created together, either may
        # take it first on a loaded machine (the runner starts both, the slot goes to whichever asks first).
        wait_for(lambda: asyncio.run(_call("read_flow_run", long_run.id)).state.is_running(), 120,
                 "the long run to be running")
        short = {**deployment.parameters["config"], "architectures": ["baseline"], "max_epochs": 1, "timeout": None}
        queued = asyncio.run(_call("create_flow_run_from_deployment", deployment.id, parameters={"config": short}))
        ended = _final_state(long_run.id, 240, "the long run to end")
        assert (ended.state.type.value, ended.state.name) == ("FAILED", "TimedOut"), ended.state
        assert ended.total_run_time.total_seconds() < 40 + 60, ended.total_run_time  # the limit, then the stop
        logs = asyncio.run(_call("read_logs", log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[long_run.id]))))
        assert any("time limit of 40s was reached" in log.message and "--resume" in log.message for log in logs)
        after = _final_state(queued.id, 300, "the queued run to finish")
        assert after.state.is_completed(), after.state
        assert after.start_time >= ended.end_time  # it waited for the slot, then started
    finally:
        _stop(serve)
    runs = {p.name: p for p in (tmp_path / "artifacts" / "runs").iterdir()}
    (timed_out,) = [p for p in runs.values() if not (p / "run.json").exists()]
    assert list(timed_out.glob("tune/*/checkpoint_*"))  # what it trained is kept
    assert json.loads((timed_out / "config.json").read_text())["prefect"]["flow_run_id"] == str(long_run.id)
    listed = run_fmnist(["fmnist", "runs"], tmp_path, env, timeout=120)
    (line,) = [line for line in listed.stdout.splitlines() if timed_out.name in line]
    assert "resumable" in line, listed.stdout[-2000:]


@pytest.mark.slow
def test_retry_of_a_cancelled_deployment_run_finishes_the_same_run_from_its_checkpoints(prefect_api, tmp_path):
    """A deployment's run cancelled after a checkpoint, then retried as the UI's Retry button does (the same flow
    run set to AwaitingRetry): it claims the same run id (derived from the flow run) and finishes it from its
    checkpoints, no finished epoch trained again."""
    from prefect.states import AwaitingRetry

    env = {"PREFECT_API_URL": prefect_api}
    name = f"retry-{uuid.uuid4().hex[:6]}"
    serve = _serve(tmp_path, name, ["--preset", "quick", "--architectures", "cnn2", "--max-epochs", "12",
                                    "--patience", "12", "--train-rows", "6000", "--test-rows", "500"], env)
    runs = tmp_path / "artifacts" / "runs"
    try:
        deployment = _deployment(name)
        flow_run = asyncio.run(_call("create_flow_run_from_deployment", deployment.id))
        wait_for(lambda: list(runs.glob("*/tune/*/checkpoint_*")), 240, "a cnn2 checkpoint")
        asyncio.run(_call("set_flow_run_state", flow_run.id, Cancelling()))
        cancelled = _final_state(flow_run.id, 90, "the cancel")
        assert cancelled.state.is_cancelled(), cancelled.state
        (run_folder,) = runs.iterdir()
        checkpointed = max(int(p.name.split("_")[-1]) for p in run_folder.glob("tune/*/checkpoint_*")) + 1
        assert not (run_folder / "run.json").exists()
        # The UI's Retry: the same flow run, force-set to AwaitingRetry (Scheduled); the runner runs it again.
        asyncio.run(_call("set_flow_run_state", flow_run.id, AwaitingRetry(message="Retry from the UI"), force=True))
        retried = _final_state(flow_run.id, 400, "the retried run to finish")
        assert retried.state.is_completed(), retried.state
        assert retried.run_count >= 2
        # Retry once more, now that the run finished (issue 27 §2): Completed again with "nothing to do", never
        # Failed (the deployment's "ended Failed" automation has nothing to fire on), nothing trained or written.
        finished_at = _published(run_folder)
        states_before = len(asyncio.run(_call("read_flow_run_states", flow_run.id)))
        asyncio.run(_call("set_flow_run_state", flow_run.id, AwaitingRetry(message="Retry from the UI"), force=True))
        wait_for(lambda: asyncio.run(_call("read_flow_run", flow_run.id)).run_count > retried.run_count, 120,
                 "the second Retry to start")
        again = _final_state(flow_run.id, 120, "the second Retry to end")
        assert again.state.is_completed(), again.state
        states = [s.type.value for s in asyncio.run(_call("read_flow_run_states", flow_run.id))][states_before:]
        assert states[-1] == "COMPLETED" and "FAILED" not in states and "CRASHED" not in states, states
        said = f"run {run_folder.name} already finished in this flow run"
        wait_for(lambda: any(said in log.message and "nothing to do" in log.message for log in _newest_logs(flow_run.id)),
                 30, "the 'nothing to do' line in the flow run's logs", interval=1)
        assert _published(run_folder) == finished_at
    finally:
        _stop(serve)
    assert [p.name for p in runs.iterdir()] == [run_folder.name]  # the same run id, no other run
    metrics = json.loads((run_folder / "cnn2" / "metrics.json").read_text())
    assert metrics["epochs"] == 12 and metrics["resumed_from_epoch"] >= checkpointed, (metrics, checkpointed)
    history = (run_folder / "cnn2" / "history.csv").read_text().splitlines()[1:]
    assert len(history) == 12  # one line per epoch: none trained twice into the history
