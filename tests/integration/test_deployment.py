"""The nightly deployment on a real Prefect server: schedule, limit, UI form, and a run that completes (bad
settings: tests/unit/test_deployment.py; a run cancelled from the UI: tests/cli/test_deployment.py)."""

import asyncio
import json
import uuid
from datetime import timezone

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterId,
                                           LogFilter, LogFilterFlowRunId)
from prefect.runner import Runner

from flows.deploy import nightly_deployment
from tasks.config import PipelineConfig


def test_deployment_has_the_cron_schedule_the_limit_and_the_config_form(prefect_api, tmp_path):
    deployment = nightly_deployment(PipelineConfig(store=str(tmp_path)), name="nightly-form", timezone="Europe/Berlin")
    deployment_id = deployment.apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    stored = asyncio.run(read())
    schedule = stored.schedules[0].schedule
    assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "Europe/Berlin")
    assert stored.global_concurrency_limit.limit == 1
    assert stored.concurrency_options.collision_strategy.value == "ENQUEUE"
    # The UI form is built from the typed config: presets, bounds and all.
    config_schema = stored.parameter_openapi_schema["definitions"]["PipelineConfig"]["properties"]
    assert config_schema["preset"]["enum"] == ["full", "quick"]
    assert config_schema["gpus_per_trial"]["maximum"] == 1
    assert stored.parameters["config"]["store"] == str(tmp_path)
    # The Parameters tab shows the schema's default beside the deployment's values: what a run gets, the preset's
    # fields empty (the preset's), never PipelineConfig() as the deploying process built it (max_epochs 100).
    default = stored.parameter_openapi_schema["properties"]["config"]["default"]
    assert default == stored.parameters["config"] and default["max_epochs"] is None and default["timeout"] == 6 * 3600


def ui_form_payload(deployment) -> dict:
    """What the Prefect UI's Custom run form sends for the `config` parameter when the user changes nothing:
    every field of the schema, at the deployment's value, else at the schema's default (null where that is None)."""
    fields = deployment.parameter_openapi_schema["definitions"]["PipelineConfig"]["properties"]
    given = deployment.parameters["config"]
    return {name: given.get(name, field.get("default")) for name, field in fields.items()}


@pytest.mark.slow
@pytest.mark.parametrize("deployed, chosen, changed, expected, table_key", [
    # choosing quick on a full deployment trains the quick protocol
    ("full", "quick", {}, {"max_epochs": 2, "train_rows": 3000, "test_rows": 1000}, "fmnist-table1-quick"),
    # choosing full on a quick deployment trains the full protocol (a patience of 1, changed by the user, wins)
    ("quick", "full", {"patience": 1}, {"max_epochs": 100, "train_rows": None, "test_rows": None, "patience": 1},
     "fmnist-table1-custom"),
    # a field the user changes wins over the preset
    ("quick", "quick", {"max_epochs": 1}, {"max_epochs": 1, "train_rows": 3000, "test_rows": 1000},
     "fmnist-table1-custom"),
], ids=["quick-on-full", "full-on-quick", "user-value-wins"])
def test_the_ui_forms_payload_trains_what_the_chosen_preset_says(prefect_api, tmp_path, monkeypatch, deployed, chosen,
                                                                 changed, expected, table_key):
    # The runner starts the flow run in a subprocess, as `fmnist deploy` does; it must find this server.
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    store = tmp_path / "store"
    deployment = nightly_deployment(PipelineConfig(preset=deployed, store=str(store)), name=name)

    async def submit_form_and_serve_once():
        runner = Runner(name=name)
        deployment_id = await runner.aadd_deployment(deployment)
        async with get_client() as client:
            stored = await client.read_deployment(deployment_id)
            payload = ui_form_payload(stored) | {"preset": chosen, "architectures": ["baseline"]} | changed
            flow_run = await client.create_flow_run_from_deployment(deployment_id, parameters={"config": payload})
        await runner.start(run_once=True)
        async with get_client() as client:
            finished = await client.read_flow_run(flow_run.id)
            artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
        return payload, finished, artifacts, [log.message for log in logs if log.flow_run_id == flow_run.id]

    payload, finished, artifacts, logs = asyncio.run(submit_form_and_serve_once())
    assert set(payload) == set(PipelineConfig.model_fields) and payload["max_epochs"] == changed.get("max_epochs")
    assert finished.state.is_completed(), finished.state
    (record_path,) = store.glob("runs/*/run.json")
    record = json.loads(record_path.read_text())
    assert {k: record["config"][k] for k in expected} == expected and record["config"]["preset"] == chosen
    history = (record_path.parent / "baseline" / "history.csv").read_text().splitlines()
    metrics = json.loads((record_path.parent / "baseline" / "metrics.json").read_text())
    assert metrics["rows"]["fit"] + metrics["rows"]["validation"] == (expected["train_rows"] or 60_000)
    assert len(history) - 1 <= expected["max_epochs"]
    # What the run says it did is what it did: the resolved protocol, never a preset that did not apply.
    protocol = PipelineConfig(**record["config"]).protocol()
    summary = (record_path.parent / "summary.md").read_text()
    assert record["protocol"] == protocol and f"Protocol: {protocol}." in summary
    assert any(protocol in message for message in logs)
    assert {a.key for a in artifacts} == {table_key, table_key.replace("fmnist-table1", "fmnist-summary")}




def test_a_batch_of_scheduled_nights_and_two_clicks_in_one_second_are_distinct_runs(prefect_api, tmp_path):
    """Issue 27 §1: the server's scheduler inserts a cron's next nights in one statement (the endpoint its scheduler
    service calls, min_runs 3), and two UI "Run" clicks land in the same second. Their flow-run ids are UUIDv7s that
    share their first 8 hex digits; each flow run still derives its own run id, and each claims a new run."""
    import httpx

    from flows.flow_run import CREATED_FORMAT, run_id_of_flow_run
    from tasks.runs.run import claim_run

    store = tmp_path / "store"
    store.mkdir()
    config = PipelineConfig(store=str(store))
    deployment_id = nightly_deployment(config, name=f"nightly-batch-{uuid.uuid4().hex[:6]}").apply()
    answer = httpx.post(f"{prefect_api}/deployments/{deployment_id}/schedule", json={"min_runs": 3}, timeout=60)
    assert answer.status_code < 300, answer.text

    async def runs_of_the_deployment():
        async with get_client() as client:
            for _ in range(2):  # two clicks of the UI's Run button, one after the other
                await client.create_flow_run_from_deployment(deployment_id)
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))

    flow_runs = asyncio.run(runs_of_the_deployment())
    scheduled = [r for r in flow_runs if r.auto_scheduled]
    assert len(scheduled) >= 3 and len(flow_runs) >= 5, [(r.name, r.auto_scheduled) for r in flow_runs]
    assert len({r.id.hex[:8] for r in scheduled}) < len(scheduled)  # the batch shares the ids' clock digits
    run_ids = [run_id_of_flow_run({"flow_run_id": str(r.id), "created": r.created.astimezone(timezone.utc).strftime(CREATED_FORMAT)})
               for r in flow_runs]
    assert len(set(run_ids)) == len(flow_runs), run_ids
    for run_id in run_ids:  # each night claims a new run, none resumes another's
        run = claim_run(config.model_copy(update={"run_id": run_id}))
        run.release()
        assert not run.resumed
    assert sorted(p.name for p in (store / "runs").iterdir()) == sorted(run_ids)
