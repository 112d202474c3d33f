"""The nightly deployment of a flow: a cron schedule, one run at a time; served from a terminal (`fmnist deploy`) or
registered on a process work pool whose worker runs it (`fmnist deploy --pool NAME`)."""

from __future__ import annotations

import inspect
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim  # a strict cron parser: a bad --cron is refused before Prefect sees it

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from flows.run import run_flow
from flows.search import search_flow
from tasks.config import PipelineConfig
from tasks.errors import ConfigError
from tasks.runs.deadline import in_words

DEFAULT_CRON = "0 2 * * *"  # 02:00 every night

# A deployment's runs get a time limit unless --timeout is given (config.timeout): past it the run ends TimedOut,
# its trials stopped and its checkpoints kept, and the next queued run starts. A search takes longer.
DEFAULT_TIMEOUT_S = {"run": 6 * 3600.0, "search": 24 * 3600.0}


# The flows `fmnist deploy --flow NAME` deploys, by the name the option takes. Each takes one parameter, `config`,
# whose form_parameters() are the deployment's defaults.
DEPLOYABLE_FLOWS: dict[str, Flow] = {
    "run": run_flow,
    "search": search_flow,
}

# The folder that holds `flows/` and `tasks/`: where a worker of a process pool finds the code (flow.from_source).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


DESCRIPTIONS = {
    "run": "Retrain the report's five Fashion-MNIST classifiers and promote champions.",
    "search": "Search each classifier's training recipe (Optuna + ASHA), retrain the winners with several seeds, "
              "keep the best recipes and promote champions.",
}


def _deployment_settings(config: PipelineConfig, name: str, cron: str, timezone: str, on_collision: str,
                         flow: str = "run") -> dict:
    """What a nightly deployment is, however it runs: the schedule, one run at a time, the UI form's defaults.

    A run started while another is going (a manual one during the nightly, say) is
    queued until the first finishes ('enqueue'), or cancelled at once ('cancel').
    """
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"time zone {timezone!r}: unknown; expected an IANA name like 'UTC' or 'Europe/Berlin'") from None
    try:
        CronSim(cron, datetime.now())
    except Exception as exc:
        raise ConfigError(f"cron {cron!r}: not a valid cron expression ({exc}); e.g. '0 2 * * *' for 02:00 nightly") from None
    config = with_time_limit(config, flow)
    strategies = {"enqueue": ConcurrencyLimitStrategy.ENQUEUE, "cancel": ConcurrencyLimitStrategy.CANCEL_NEW}
    if on_collision not in strategies:
        raise ConfigError(f"on-collision {on_collision!r}: expected 'enqueue' or 'cancel'")
    return dict(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategies[on_collision]),
        # The preset's fields stay empty unless given, so a preset chosen in the UI's form applies.
        parameters={"config": config.form_parameters()},
        description=DESCRIPTIONS[flow],
        tags=["fmnist"],
    )


def with_time_limit(config: PipelineConfig, flow: str = "run") -> PipelineConfig:
    """The config with the deployment's time limit: the one given, else the flow's default; a search's must leave
    time after its time budget for the winners' retraining."""
    timeout = config.timeout or DEFAULT_TIMEOUT_S.get(flow, DEFAULT_TIMEOUT_S["run"])
    budget = getattr(config, "time_budget", None)
    if budget is not None and timeout <= budget:
        raise ConfigError(f"--timeout {in_words(timeout)} is not longer than the search's --time-budget "
                          f"{in_words(budget)}: the "
                          f"search would time out before its winners are retrained; give --timeout more")
    return config.model_copy(update={"timeout": timeout})


def deployable_flow(name: str) -> Flow:
    if name not in DEPLOYABLE_FLOWS:
        raise ConfigError(f"--flow {name!r}: expected one of {', '.join(sorted(DEPLOYABLE_FLOWS))}")
    return DEPLOYABLE_FLOWS[name]


def nightly_deployment(config: PipelineConfig, name: str = "nightly", cron: str = DEFAULT_CRON,
                       timezone: str = "UTC", on_collision: str = "enqueue", flow: str = "run") -> RunnerDeployment:
    """The flow with a cron schedule and a concurrency limit of one run, to serve from this process."""
    return defaults_as_runs_get(deployable_flow(flow).to_deployment(
        **_deployment_settings(config, name, cron, timezone, on_collision, flow),
        entrypoint_type=EntrypointType.MODULE_PATH))


def defaults_as_runs_get(deployment: RunnerDeployment) -> RunnerDeployment:
    """The deployment with its parameter schema's default of `config` set to what its runs get.

    The UI's Parameters tab shows that default beside the deployment's values; from the flow's signature it would be
    `PipelineConfig()` as this process built it (max_epochs 100 filled from the full preset, the store resolved
    against this process's folder), which no run of the deployment gets. Its values instead: the preset's fields
    empty (the preset's), the store and time limit as given."""
    from flows.prefect_compat import set_parameter_default  # Prefect keeps the schema only in a private attribute

    set_parameter_default(deployment, "config", deployment.parameters["config"])
    return deployment


def serve_nightly(deployment: RunnerDeployment) -> None:
    """Register the deployment and run its scheduled and UI-triggered runs until stopped (Ctrl-C)."""
    from prefect import serve

    serve(deployment)


# --- on a work pool: the deployment outlives the terminal --------------------------------------------------------

class WorkPoolError(ConfigError):
    """The work pool named by --pool cannot run this deployment."""


def entrypoint_of(flow: Flow) -> str:
    """`flows/run.py:run_flow`: the flow's file, relative to PROJECT_ROOT, and its function."""
    source = Path(inspect.getsourcefile(flow.fn) or "").resolve()
    return f"{source.relative_to(PROJECT_ROOT).as_posix()}:{flow.fn.__name__}"


def pool_deployment(config: PipelineConfig, name: str = "nightly", cron: str = DEFAULT_CRON, timezone: str = "UTC",
                    on_collision: str = "enqueue", flow: str = "run") -> RunnerDeployment:
    """The same nightly deployment as `nightly_deployment`, for a worker of a process pool to run.

    A process pool has no image: the worker runs each flow run in a subprocess of its own, in the folder the
    deployment names. `flow.from_source(<this project's folder>, "flows/run.py:run_flow")` records that folder
    as the deployment's pull step (set_working_directory), as Prefect documents for code on the worker's disk;
    the worker's Python must have the project's dependencies (the project's venv: `.venv/bin/prefect worker`)."""
    chosen = deployable_flow(flow)
    from_folder = chosen.from_source(source=str(PROJECT_ROOT), entrypoint=entrypoint_of(chosen))
    return defaults_as_runs_get(from_folder.to_deployment(
        **_deployment_settings(config, name, cron, timezone, on_collision, flow)))


def ensure_process_pool(pool: str) -> bool:
    """The work pool `pool`, of type process, created if missing (True then); one of another type is refused:
    its workers would start containers or pods without this project's code."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(pool)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(
                    name=pool, type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="fmnist-pipeline: `prefect worker start --pool NAME` runs its flow runs as processes"))
                return True
            except ObjectAlreadyExists:  # created by another deploy at the same moment
                found = client.read_work_pool(pool)
    if found.type != ProcessWorker.type:
        raise WorkPoolError(f"work pool {pool!r} is of type {found.type!r}; `fmnist deploy --pool` needs a process "
                            f"pool (a worker that runs this project's code from its folder): choose another name, "
                            f"and a new process pool of that name is created")
    return False


def register_on_pool(deployment: RunnerDeployment, pool: str) -> tuple[Any, bool]:
    """Create the pool if missing, register (or update) the deployment on it; (deployment id, pool created)."""
    created = ensure_process_pool(pool)
    return deployment.apply(work_pool_name=pool), created
