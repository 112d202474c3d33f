"""The main job, `fmnist run`: prepare (cached by dataset version) → fan out → collect → report."""

from __future__ import annotations

import os
import time
import uuid

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.prepare import fetch, shard_and_publish
from tasks.champion import Decision, promote
from tasks.config import PipelineConfig
from tasks.errors import ConfigError
from tasks.fanout import run_trials
from tasks.reporting import publish_report, run_record
from tasks.store import open_store

# Tune warns on every per-epoch checkpoint of short epochs; the checkpoints are intended.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


@task(cache_policy=NO_CACHE)
def claim_run_id(config: PipelineConfig) -> str:
    """A new run id, or the given one if that run is unfinished (resume); never a finished run's."""
    run_id = config.run_id or new_run_id()
    store = open_store(config.store, config.s3_endpoint)
    if store.exists(f"runs/{run_id}/run.json"):
        raise ConfigError(f"run id {run_id!r}: that run already finished in {store.uri} and runs are never "
                          "overwritten; leave --run-id empty for a new run")
    return run_id


@task(cache_policy=NO_CACHE)  # no Prefect retries: Ray's FailureConfig restarts trials from checkpoints
def train(config: PipelineConfig, run_id: str, dataset_version: str) -> dict[str, dict]:
    """One Ray Tune trial per architecture; returns each one's metrics."""
    store = open_store(config.store, config.s3_endpoint)
    return run_trials(config, store, run_id, dataset_version, progress=get_run_logger().info)


@task(retries=2, retry_delay_seconds=[2, 8], cache_policy=NO_CACHE)
def promote_champions(config: PipelineConfig, run_id: str, metrics: dict[str, dict]) -> list[Decision]:
    """Replace a champion only where this run beats it by the margin (compare-and-swap on the pointer)."""
    store = open_store(config.store, config.s3_endpoint)
    decisions = promote(store, run_id, metrics, config.promotion_margin)
    for decision in decisions:
        get_run_logger().info(f"champion {decision.slot}: {'promoted' if decision.promoted else 'kept'} ({decision.reason})")
    return decisions


@task(retries=2, retry_delay_seconds=[2, 8], cache_policy=NO_CACHE)
def report(config: PipelineConfig, run_id: str, dataset_version: str, metrics: dict[str, dict],
           decisions: list[Decision], started: float) -> dict:
    """Table 1 beside the report's, Figure 1, the champion decisions and the run record, into the store."""
    store = open_store(config.store, config.s3_endpoint)
    record = run_record(config, run_id, dataset_version, started, time.time(), status="completed")
    return publish_report(store, run_id, dataset_version, metrics, record, decisions)


@flow(name="fmnist-run", log_prints=True)
def run_flow(config: PipelineConfig = PipelineConfig()) -> dict:
    """Train the report's five Fashion-MNIST classifiers and publish Table 1 beside the report's."""
    started = time.time()
    run_id = claim_run_id(config)
    get_run_logger().info(f"run {run_id}: {', '.join(config.architectures)} on preset '{config.preset}', store {config.store}")
    raw = fetch(config.source, config.s3_endpoint)
    prepared = shard_and_publish(raw, config.store, config.s3_endpoint, config.rows_per_shard)
    del raw  # the trials read the shards; free the driver's copy
    metrics = train(config, run_id, prepared.version)
    decisions = promote_champions(config, run_id, metrics)
    result = report(config, run_id, prepared.version, metrics, decisions, started)

    create_table_artifact(table=result["rows"], key="fmnist-table1",
                          description=f"Run {run_id}: test accuracy beside the report's Table 1")
    create_markdown_artifact(markdown=result["markdown"], key="fmnist-summary", description=f"Run {run_id}")
    get_run_logger().info("\n" + result["markdown"])
    return {"run_id": run_id, "dataset_version": prepared.version, "table1": result["rows"],
            "markdown": result["markdown"], "store": config.store}
