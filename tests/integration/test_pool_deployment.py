"""The pool deployment on a real Prefect server: the nightly deployment on a process work pool, with the served
deployment's schedule, limit and form (as typed, run by a real `prefect worker start --pool NAME`:
tests/cli/test_pool_deployment.py)."""

from __future__ import annotations

import uuid

import pytest
from prefect import get_client

from flows.deploy import (PROJECT_ROOT, WorkPoolError, ensure_process_pool, nightly_deployment, pool_deployment,
                          register_on_pool)
from tasks.config import PipelineConfig


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


