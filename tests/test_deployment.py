"""The nightly deployment on a real Prefect server: schedule, limit, UI form, and a run that completes."""

import asyncio
import uuid

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.runner import Runner

from flows.deploy import nightly_deployment
from tasks.config import PipelineConfig
from tasks.errors import ConfigError


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


@pytest.mark.parametrize("kwargs, message", [({"timezone": "Mars/Base"}, "time zone"), ({"cron": "61 * * *"}, "cron"),
                                             ({"on_collision": "ignore"}, "on-collision")])
def test_bad_schedule_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError) as error:
        nightly_deployment(PipelineConfig(), **kwargs)
    assert message in str(error.value)


def test_a_run_triggered_like_from_the_ui_completes_with_its_artifacts(prefect_api, tmp_path, monkeypatch):
    # The runner starts the flow run in a subprocess, as `fmnist deploy` does; it must find this server.
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    # The quick preset, on one architecture to keep the suite fast; the whole quick run is tested elsewhere.
    config = PipelineConfig(preset="quick", store=str(tmp_path / "store"), architectures=["baseline"])
    deployment = nightly_deployment(config, name=name)

    async def trigger_and_serve_once():
        runner = Runner(name=name)
        await runner.aadd_deployment(deployment)
        flow_run = await run_deployment(f"fmnist-run/{name}", timeout=0)  # what the UI's "Run" button does
        await runner.start(run_once=True)
        async with get_client() as client:
            finished = await client.read_flow_run(flow_run.id)
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fmnist-table1", "fmnist-summary"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
        return finished, artifacts

    finished, artifacts = asyncio.run(trigger_and_serve_once())
    assert finished.state.is_completed(), finished.state
    assert {a.key for a in artifacts} == {"fmnist-table1", "fmnist-summary"}
    table = next(a for a in artifacts if a.key == "fmnist-table1")
    assert "Baseline" in str(table.data)
