"""The nightly deployment of the run flow: a cron schedule, one run at a time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim  # what Prefect itself parses cron schedules with

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from flows.run import run_flow
from tasks.config import PipelineConfig
from tasks.errors import ConfigError

DEFAULT_CRON = "0 2 * * *"  # 02:00 every night


def nightly_deployment(config: PipelineConfig, name: str = "nightly", cron: str = DEFAULT_CRON,
                       timezone: str = "UTC", on_collision: str = "enqueue") -> RunnerDeployment:
    """The run flow with a cron schedule and a concurrency limit of one run.

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
    strategies = {"enqueue": ConcurrencyLimitStrategy.ENQUEUE, "cancel": ConcurrencyLimitStrategy.CANCEL_NEW}
    if on_collision not in strategies:
        raise ConfigError(f"on-collision {on_collision!r}: expected 'enqueue' or 'cancel'")
    return run_flow.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategies[on_collision]),
        # The preset's fields stay empty unless given, so a preset chosen in the UI's form applies.
        parameters={"config": config.form_parameters()},
        description="Retrain the report's five Fashion-MNIST classifiers and promote champions.",
        tags=["fmnist"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_nightly(deployment: RunnerDeployment) -> None:
    """Register the deployment and run its scheduled and UI-triggered runs until stopped (Ctrl-C)."""
    from prefect import serve

    serve(deployment)
