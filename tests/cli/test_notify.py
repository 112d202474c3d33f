"""`fmnist deploy --notify URL` on a real Prefect server (prefect_test_harness: its triggers and actions services
run), with a real HTTP receiver on 127.0.0.1 counting what arrives: a failed run of the deployment and a promoted
champion each reach it within a minute; deploying again does not duplicate the automations; a missing
--notify-block is refused in one line before anything is registered."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from prefect import get_client

from tests.cli_user import interrupt_and_wait, run_fmnist, start_fmnist

WITHIN_S = 60  # "within a minute"


class Receiver:
    """An HTTP server on a free 127.0.0.1 port that keeps every JSON body POSTed to it, with when it came (epoch s)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        self.condition = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with owner.condition:
                    owner.received.append((time.time(), json.loads(body or b"{}")))
                    owner.condition.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/{uuid.uuid4().hex[:8]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, contains: str, timeout: float) -> tuple[float, dict]:
        """The first message whose text contains `contains`, waited for at most `timeout` s."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                for when, message in self.received:
                    if contains in message.get("text", ""):
                        return when, message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message with {contains!r} within {timeout:.0f} s; received: "
                                         f"{[m.get('subject') for _, m in self.received]}")
                self.condition.wait(left)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


def _automations(names: list[str]) -> dict[str, int]:
    with get_client(sync_client=True) as client:
        return {name: len(client.read_automations_by_name(name)) for name in names}


def _names(flow: str, deployment: str) -> list[str]:
    return [f"fmnist {flow}/{deployment}: {what}" for what in ("run failed", "champion promoted", "regression")]


def _run_id(flow_run) -> str:
    """The run id the flow derives from its flow run (flows.flow_run)."""
    return f"{flow_run.created.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{flow_run.id.hex[-8:]}"


def test_a_failed_run_and_a_promoted_champion_reach_the_webhook_within_a_minute(prefect_api, tmp_path, receiver):
    """`fmnist deploy --pool P --notify URL`, twice (three automations, not six). A flow run of the deployment
    that ends Failed reaches the receiver with its run id and the command that resumes it; a flow run of the
    deployment whose champion step promotes (flows.notify.announce_decisions, run inside that flow run) reaches it
    with the slot's figures, and so does a regression."""
    from prefect import flow
    from prefect.flow_engine import run_flow
    from prefect.states import Failed

    from flows.notify import announce_decisions
    from tasks.config import PipelineConfig
    from tasks.runs.champion import Decision
    from tasks.runs.history import Reference

    env = {"PREFECT_API_URL": prefect_api}
    name = f"notify-{uuid.uuid4().hex[:6]}"
    store = tmp_path / "store"
    command = ["fmnist", "deploy", "--pool", "notify", "--name", name, "--store", str(store), "--notify", receiver.url]
    for _ in range(2):  # deploying again updates the automations in place
        deploy = run_fmnist(command, tmp_path, env, timeout=120)
        assert deploy.returncode == 0, deploy.stderr[-3000:]
        assert "notifications to webhook block fmnist-notify-" in deploy.stdout, deploy.stdout
    assert _automations(_names("fmnist-run", name)) == {n: 1 for n in _names("fmnist-run", name)}

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"fmnist-run/{name}")
        failing = client.create_flow_run_from_deployment(deployment.id)
        client.set_flow_run_state(failing.id, Failed(message="the store did not answer"), force=True)
        failed_at = time.time()
        promoting = client.create_flow_run_from_deployment(deployment.id)
    run_id = _run_id(failing)
    when, message = receiver.wait(f"Run: {run_id}", WITHIN_S)
    failure_s = when - failed_at
    assert message["subject"] == f"fmnist: fmnist-run/{name} run {run_id} ended Failed"
    assert "ended Failed: the store did not answer" in message["text"]
    assert f"`fmnist run --resume {run_id} --store {store}`" in message["text"]

    promoted_id = _run_id(promoting)
    run = SimpleNamespace(run_id=promoted_id, store=SimpleNamespace(uri=str(store)),
                          config=PipelineConfig(store=str(store)))
    decisions = [Decision("cnn2/report", True, "better", 0.9123, 0.9080, "mcnemar", 40, 83, 0.0001),
                 Decision("baseline/report", False, "not shown better", 0.8310, 0.8420, "mcnemar", 250, 140, 0.99)]

    dropped = {"baseline/report": Reference(("n1", "n2", "n3"), -0.0104, 2e-9)}  # a point below its last three

    @flow(name="fmnist-run")
    def champion_step(config: dict | None = None) -> list[str]:  # the deployment's parameter, unused here
        return announce_decisions(run, decisions, None, dropped)

    # The deployment's flow run, run here (no worker serves the pool): its champion step emits the events.
    emitted_at = time.time()
    assert run_flow(champion_step, flow_run=promoting) == ["fmnist.champion.promoted", "fmnist.champion.regression"]
    # The promotion's own line: the regression's message names the run too, and either may arrive first.
    when, message = receiver.wait("- cnn2/report: 91.23% over 90.80%", WITHIN_S)
    promoted_s = when - emitted_at
    assert message["subject"] == f"fmnist: run {promoted_id} promoted 1 champion (cnn2/report)"
    assert "- cnn2/report: 91.23% over 90.80%; b = 40 rows only the champion got right, c = 83" in message["text"]
    assert f"`fmnist runs show {promoted_id} --store {store}`" in message["text"]
    _, message = receiver.wait("worse than the last models of their slot", WITHIN_S)
    assert "- baseline/report: -1.04 points against the mean of runs n1, n2, n3" in message["text"]
    assert len([m for _, m in receiver.received if "ended Failed" in m["text"]]) == 1  # one automation, one message
    print(f"failed run -> receiver: {failure_s:.1f} s; promoted champion -> receiver: {promoted_s:.1f} s")


def test_a_missing_notify_block_is_refused_in_one_line_before_anything_is_registered(prefect_api, tmp_path):
    name = f"noblock-{uuid.uuid4().hex[:6]}"
    result = run_fmnist(["fmnist", "deploy", "--pool", "notify", "--name", name, "--notify-block", "no-such-block"],
                        tmp_path, {"PREFECT_API_URL": prefect_api}, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("fmnist deploy: error: --notify-block 'no-such-block': no notification block of that "
                                "name on the Prefect server"), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    with get_client(sync_client=True) as client:
        assert not [d for d in client.read_deployments() if d.name == name]
    assert _automations(_names("fmnist-run", name)) == {n: 0 for n in _names("fmnist-run", name)}


def test_a_served_deployment_notifies_a_run_that_fails(prefect_api, tmp_path, receiver):
    """`fmnist deploy --notify URL` serving: a run of the deployment whose config the flow refuses (an architecture
    twice: the UI's form lets it through) fails at once, and the receiver hears of it within a minute."""
    env = {"PREFECT_API_URL": prefect_api}
    name = f"served-{uuid.uuid4().hex[:6]}"
    serve = start_fmnist(["fmnist", "deploy", "--name", name, "--store", str(tmp_path / "store"),
                          "--notify", receiver.url], tmp_path, env, merge_stderr=True)
    try:
        deadline = time.monotonic() + 120
        while _automations(_names("fmnist-run", name)) != {n: 1 for n in _names("fmnist-run", name)}:
            assert serve.poll() is None and time.monotonic() < deadline, "no automations from the served deploy"
            time.sleep(1)
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(f"fmnist-run/{name}")
            config = deployment.parameters["config"] | {"architectures": ["cnn2", "cnn2"]}
            flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})
            deadline = time.monotonic() + 180
            while not (state := client.read_flow_run(flow_run.id).state).is_final():
                assert time.monotonic() < deadline, f"the run did not end within 180 s: {state}"
                time.sleep(0.5)
        assert state.is_failed(), state
        when, message = receiver.wait(f"Run: {_run_id(flow_run)}", WITHIN_S)
        assert "ended Failed" in message["subject"] and "architectures" in message["text"], message
        print(f"served run failed -> receiver: {when - state.timestamp.timestamp():.1f} s\n{message['text']}")
    finally:
        interrupt_and_wait(serve)
