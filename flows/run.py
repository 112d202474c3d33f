"""The main job, `fmnist run`: claim the run → prepare (cached by dataset version) → fan out → collect → report."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal

from flows.prepare import fetch, shard_and_publish
from tasks.runs.champion import Decision, promote
from tasks.config import PipelineConfig
from tasks.errors import ChampionFileError, PipelineError, StoreError
from tasks.tune.cluster import check_store_reaches_every_node, check_trials_fit, connect_ray
from tasks.tune.fanout import run_trials
from tasks.tune.progress import live_progress_enabled
from tasks.runs.reporting import keep_unpromoted_summary, publish_report, run_record
from tasks.runs.run import resolve_recipes
from tasks.runs.run import Run, claim_run
from tasks.data.store import open_store

# Tune warns on every per-epoch checkpoint of short epochs; the checkpoints are intended.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@task(cache_policy=NO_CACHE)
def claim(config: PipelineConfig) -> Run:
    """A new run id with its config stored, or the unfinished run given (resumed as it began); never a finished run.
    A run with recipe 'best' stores the recipes it will train with."""
    store = open_store(config.store, config.s3_endpoint)
    return claim_run(resolve_recipes(config, store), store)


@task(cache_policy=NO_CACHE)
def join_ray(config: PipelineConfig) -> None:
    """Connect to Ray (or start a local one) and refuse a store the cluster's nodes cannot all reach."""
    connect_ray(config.ray_address)
    check_store_reaches_every_node(config.store)
    check_trials_fit(config, get_run_logger().info)  # before a run is claimed for trials no node can hold


@contextmanager
def signals_unwrapped_from_ray() -> Iterator[None]:
    """Let a cancel from the Prefect UI reach Prefect as the signal it is.

    On cancel the runner sends SIGTERM; Prefect's handler (kept through `ray.init`, tasks.tune.cluster.connect_ray)
    raises TerminationSignal, but the driver is inside `ray.wait`, whose Cython wrapper turns an exception raised
    by a signal handler into a SystemError. Re-raise the signal, and Prefect records the run as Cancelled.
    """
    try:
        yield
    except SystemError as exc:
        if isinstance(exc.__cause__, TerminationSignal):
            raise exc.__cause__ from None
        raise


@task(cache_policy=NO_CACHE)  # no Prefect retries: Ray's FailureConfig restarts trials from checkpoints
def train(run: Run) -> dict[str, dict]:
    """One Ray Tune trial per architecture; returns each one's metrics."""
    with signals_unwrapped_from_ray():
        return run_trials(run.config, run.store, run.run_id, run.dataset_version, progress=get_run_logger().info,
                          manifest=run.manifest, live=live_progress_enabled())


def _retry_only_store_faults(task, task_run, state) -> bool:
    """A store that did not answer may answer on the next try; an expected error about content (a damaged
    champion file) gives the same answer every time: fail at once with its one line."""
    return isinstance(state.data, StoreError) or not isinstance(state.data, PipelineError)


@task(retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=_retry_only_store_faults, cache_policy=NO_CACHE)
def promote_champions(run: Run, metrics: dict[str, dict]) -> list[Decision]:
    """Replace a champion only where this run beats it by the margin (compare-and-swap on the pointer)."""
    try:
        decisions = promote(run.store, run.run_id, metrics, run.config.promotion_margin)
    except ChampionFileError as exc:
        raise keep_unpromoted_summary(run, metrics, exc) from None  # Table 1 kept; the run stays resumable
    for decision in decisions:
        get_run_logger().info(f"champion {decision.slot}: {'promoted' if decision.promoted else 'kept'} ({decision.reason})")
    return decisions


@task(retries=2, retry_delay_seconds=[2, 8], cache_policy=NO_CACHE)
def report(run: Run, metrics: dict[str, dict], decisions: list[Decision]) -> dict:
    """Table 1 beside the report's, Figure 1, the champion decisions and the run record, into the store."""
    return publish_report(run, metrics, run_record(run, time.time(), status="completed"), decisions)


def table_artifact_key(config: PipelineConfig) -> str:
    """One table history per comparable protocol: the nightly full runs under `fmnist-table1`, quick (smoke) runs
    under `fmnist-table1-quick`, anything with changed protocol values under `fmnist-table1-custom`."""
    if config.recipe != "report":
        return f"fmnist-table1-{config.recipe}"
    if not config.comparable:
        return "fmnist-table1-custom"
    return "fmnist-table1" if config.preset == "full" else f"fmnist-table1-{config.preset}"


def with_prepared_dataset(run: Run) -> Run:
    """The run with its dataset version: fetched, verified and published (a no-op when already there). Called in a
    flow, so fetch and shard_and_publish run as its tasks; the raw arrays are dropped (the trials read the shards)."""
    raw = fetch(run.config.source, run.config.s3_endpoint)
    return run.with_dataset(shard_and_publish(raw, run.store, run.config.rows_per_shard))


@flow(name="fmnist-run", log_prints=True)
def run_flow(config: PipelineConfig = PipelineConfig()) -> dict:
    """Train the report's five Fashion-MNIST classifiers and publish Table 1 beside the report's."""
    join_ray(config)
    run = claim(config)
    try:
        logger = get_run_logger()
        logger.info(f"run {run.run_id} ({'resumed' if run.resumed else 'new'}): {', '.join(run.config.architectures)}; "
                    f"{run.config.protocol()}; store {run.store.uri}")
        run = with_prepared_dataset(run)
        metrics = train(run)
        decisions = promote_champions(run, metrics)
        result = report(run, metrics, decisions)

        create_table_artifact(table=result["rows"], key=table_artifact_key(run.config),
                              description=f"Run {run.run_id}: test accuracy beside the report's Table 1 "
                                          f"({run.config.protocol()})")
        create_markdown_artifact(markdown=result["markdown"], key="fmnist-summary", description=f"Run {run.run_id}")
        logger.info("\n" + result["markdown"])
    finally:
        run.release()  # a failed run may be resumed at once; a killed one is taken over once its pid is gone
    return {"run_id": run.run_id, "dataset_version": run.dataset_version, "table1": result["rows"],
            "markdown": result["markdown"], "store": run.store.uri}
