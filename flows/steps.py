"""Every Prefect `@task` of the flows, each a thin wrapper of a plain stage in `tasks/`, and the helpers the flows
share. The flows (prepare, run, search) import from here only, never from one another.

Retries: a step that reads or writes the store (or fetches the source) gets Prefect's retries, ONE preset
(`touches_store`), each with its own condition of what is worth another try. A step that runs trials gets none:
Ray's FailureConfig restarts trials from their checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled, State

from flows.flow_run import continues, current_flow_run, run_id_of_flow_run
from flows.notify import announce_decisions
from flows.prefect_compat import cancel_intended
from tasks.config import PipelineConfig, SearchConfig
from tasks.data.dataset import RawDataset, fetch_dataset
from tasks.data.shards import PrepareResult, publish_dataset
from tasks.data.store import Store, open_store
from tasks.errors import ChampionFileError, DatasetError, PipelineError, StoreError
from tasks.model.recipes import KEPT_WORDS
from tasks.runs.champion import OVERALL, Decision, decisions_json, decisions_markdown, nightly_models, promote
from tasks.runs.reporting import code_version, keep_unpromoted_summary, publish_report, run_record
from tasks.runs.lease import check_held
from tasks.runs.hints import store_options
from tasks.runs.history import compare_and_record
from tasks.runs.run import Run, claim_run, finished_by, finished_summary, resolve_recipes, stored_origin
from tasks.runs.deadline import start_time_limit
from tasks.tune.search import (publish_leaderboard, recipes_comparable, retrain_winners,
                               search as search_recipes, search_table_markdown, search_table_rows, store_recipes,
                               winners_of)
from tasks.tune.cluster import cluster_summary, preflight as cluster_preflight
from tasks.tune.fanout import run_trials
from tasks.tune.progress import live_progress_enabled

# Tune warns on every per-epoch checkpoint of short epochs; the checkpoints are intended.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

STORE_RETRIES = 2
STORE_RETRY_DELAYS_S = [2, 8]

RetryCondition = Callable[[Any, Any, Any], bool]
T = TypeVar("T")


def touches_store(retry_if: RetryCondition | None = None) -> Callable:
    """The one retry preset: a step that touches the store or the network, tried again twice (after 2 s, then
    8 s) when `retry_if(task, task_run, state)` says the failure may pass (always, when not given)."""
    return task(retries=STORE_RETRIES, retry_delay_seconds=STORE_RETRY_DELAYS_S, retry_condition_fn=retry_if,
                cache_policy=NO_CACHE)


once = task(cache_policy=NO_CACHE)  # no Prefect retries (trials: Ray restarts them from checkpoints)


def unless_bad_content(task, task_run, state) -> bool:
    """A bad source or content (missing folder, HTML page, truncated .gz, wrong header or checksum, HTTP 4xx)
    never gets better, and network faults were already retried with backoff inside the download: no Prefect
    retry for a DatasetError. Other faults (an S3 source going away: StoreError) get another try."""
    return not isinstance(state.data, DatasetError)


def only_store_faults(task, task_run, state) -> bool:
    """A store that did not answer may answer on the next try; an expected error about content (a damaged
    champion file) gives the same answer every time: fail at once with its one line."""
    return isinstance(state.data, StoreError) or not isinstance(state.data, PipelineError)


def trials_step(body: Callable[[], T]) -> T | State:
    """Run a step's trials; a cancel from Prefect ends the step Cancelled, and then the flow run Cancelled.

    On cancel the runner sends SIGTERM; Prefect's handler (kept through `ray.init`, tasks.tune.cluster.connect_ray)
    raises TerminationSignal, but the driver is inside `ray.wait`, whose Cython wrapper turns an exception raised
    by a signal handler into a SystemError: the signal is unwrapped here. Prefect's task engine records a task that
    a TerminationSignal passes through as Crashed (two ERROR lines, for a cancel); so when the signal is the
    runner's cancel, the step returns a Cancelled state instead (its trials were stopped as the signal unwound
    them) and the flow raises the signal again (`unless_cancelled`), where Prefect records the flow run Cancelled.
    Any other SIGTERM (`fmnist run` terminated; a runner that could not commit its intent) passes through as
    before. Under the `fmnist` command a SIGTERM is also announced and given a deadline at once
    (flows.cli.interrupts).
    """
    from flows.cli.interrupts import deadline_under_prefects_sigterm_bridge

    deadline_under_prefects_sigterm_bridge()
    try:
        try:
            return body()
        except SystemError as exc:
            if isinstance(exc.__cause__, TerminationSignal):
                raise exc.__cause__ from None
            raise
    except TerminationSignal:
        if not cancel_intended():  # the runner's cancel of this flow run, as Prefect's flow engine tells it
            raise
        return Cancelled(message="the flow run was cancelled: its trials were stopped, their checkpoints kept")


def unless_cancelled(result: T | State) -> T:
    """A trials step's result; for a step that ended Cancelled, the flow run ends as Prefect ends a cancelled one
    (the termination signal raised again in the flow, where Prefect's flow engine records the cancel)."""
    if isinstance(result, State) and result.is_cancelled():
        raise TerminationSignal(signal.SIGTERM)
    return result


# --- the dataset ---------------------------------------------------------------------------------------------

@touches_store(unless_bad_content)
def fetch(source: str | None, s3_endpoint: str | None = None) -> RawDataset:
    """Read the four raw files and verify their content."""
    return fetch_dataset(source, progress=get_run_logger().info, s3_endpoint=s3_endpoint)


@touches_store(unless_bad_content)
def shard_and_publish(raw: RawDataset, store: Store, rows_per_shard: int) -> PrepareResult:
    """Write Parquet shards, then the manifest (a no-op if this version is published)."""
    return publish_dataset(raw, store, rows_per_shard, progress=get_run_logger().info)


def describe(result: PrepareResult, store_uri: str) -> str:
    rows = ", ".join(f"{split} {n:,} rows" for split, n in result.rows.items())
    state = "published" if result.created else "already published, nothing written"
    return (f"dataset version {result.version} ({state}): {rows}, {result.shard_count} shards, "
            f"{result.bytes / 1e6:.1f} MB in {store_uri}")


def with_prepared_dataset(run: Run) -> Run:
    """The run with its dataset version: fetched, verified and published (a no-op when already there). Called in a
    flow, so fetch and shard_and_publish run as its tasks. The raw arrays are dropped here: the driver decodes the
    published shards' rows once and hands them to the trials through Ray's object store."""
    raw = fetch(run.config.source, run.config.s3_endpoint)
    return run.with_dataset(shard_and_publish(raw, run.store, run.config.rows_per_shard))


# --- a run: before and after its trials ----------------------------------------------------------------------

@once
def preflight(config: PipelineConfig) -> None:
    """Everything about the Ray cluster that can refuse a run, once, before the run is claimed: Ray answers, every
    node reaches the store, some node holds one trial."""
    cluster_preflight(config, get_run_logger().info)


@touches_store()
def finished_in_this_flow_run(config: PipelineConfig) -> dict | None:
    """What a Retry of a flow run that already finished its run returns instead of failing: the run's summary, with
    one log line saying there is nothing to do (the flow run ends Completed again; no "ended Failed" alert, nothing
    promoted or announced twice). None in every other case, which then claims as usual."""
    origin = current_flow_run()
    run_id = config.run_id or run_id_of_flow_run(origin)
    if origin is None or not run_id:
        return None
    store = open_store(config.store, config.s3_endpoint)
    if not finished_by(store, run_id, origin["flow_run_id"]):
        return None
    get_run_logger().info(f"run {run_id} already finished in this flow run (attempt {origin['attempt']}): nothing "
                          f"to do; its results: `fmnist runs show {run_id}{store_options(config.store, config.s3_endpoint)}`")
    return finished_summary(store, run_id)


@once
def claim(config: PipelineConfig) -> Run:
    """A new run id with its config stored, or the unfinished run given (resumed as it began); never a finished run.
    A run with recipe 'best' stores the recipes it will train with.

    With no run id given, the id is the flow run's (flows.flow_run): a Retry of the flow run (the UI's button, a
    Prefect retry) claims the same run and finishes it from its checkpoints. The run's time limit counts from here."""
    origin = current_flow_run()
    if not config.run_id:
        config = config.model_copy(update={"run_id": run_id_of_flow_run(origin)})
    store = open_store(config.store, config.s3_endpoint)
    began = stored_origin(store, config.run_id) if config.run_id else None
    run = claim_run(resolve_recipes(config, store), store, origin)
    start_time_limit(run.run_id, run.config.timeout)
    said = continues(began, origin) if run.resumed else None
    if said:
        get_run_logger().info(f"run {run.run_id} {said}")
    return run


@touches_store(only_store_faults)
def promote_champions(run: Run, metrics: dict[str, dict]) -> list[Decision]:
    """Replace a champion only where this run's model is better on the same test rows by McNemar's test, or the
    slot's recent models are (the window; the margin for a champion recorded without per-image outcomes);
    compare-and-swap on the pointer. A full nightly run is then compared with its slots' recent models (the
    regression alert's reference) and recorded as their newest (tasks.runs.history)."""
    check_held(run.lease)  # taken over meanwhile: LeaseLost, and the pointer is left alone
    config = run.config
    try:
        decisions = promote(run.store, run.run_id, metrics, config.promotion_margin, alpha=config.promotion_alpha,
                            full_protocol=config.full_protocol)
    except ChampionFileError as exc:
        raise keep_unpromoted_summary(run, metrics, exc) from None  # Table 1 kept; the run stays resumable
    for decision in decisions:
        get_run_logger().info(f"champion {decision.slot}: {decision.outcome} ({decision.reason})")
    nightly = config.comparable and config.preset == "full" and not isinstance(config, SearchConfig)
    models = nightly_models(metrics) if nightly else {}
    references = compare_and_record(run.store, run.run_id, models, alerting=set(models) - {OVERALL})
    for slot, ref in references.items():
        get_run_logger().info(f"{slot}: {100 * ref.delta:+.2f} points against its last {len(ref.runs)} models "
                              f"({', '.join(ref.runs)}); p (worse) = {ref.p_worse:.3g}")
    announce_decisions(run, decisions, get_run_logger().warning, references)  # what `fmnist deploy --notify` automates on
    return decisions


def table_artifact_key(config: PipelineConfig) -> str:
    """One table history per comparable protocol: the nightly full runs under `fmnist-table1`, quick (smoke) runs
    under `fmnist-table1-quick`, anything with changed protocol values under `fmnist-table1-custom`."""
    if config.recipe != "report":
        return f"fmnist-table1-{config.recipe}"
    if not config.comparable:
        return "fmnist-table1-custom"
    return "fmnist-table1" if config.preset == "full" else f"fmnist-table1-{config.preset}"


def summary_artifact_key(config: PipelineConfig) -> str:
    """The summary's history beside its table's: `fmnist-summary` for the nightly full runs, `fmnist-summary-quick`,
    `fmnist-summary-custom`, … as table_artifact_key names the tables."""
    return table_artifact_key(config).replace("fmnist-table1", "fmnist-summary", 1)


def search_artifact_key(config: PipelineConfig, artifact: str) -> str:
    """A search's artifact ('leaderboard', 'table1', 'summary') with one history per protocol, as
    table_artifact_key names a run's: `fmnist-search-leaderboard` for full searches, `fmnist-search-leaderboard-quick`,
    `fmnist-search-leaderboard-custom`, …"""
    return table_artifact_key(config).replace("fmnist-table1", f"fmnist-search-{artifact}", 1)


# --- `fmnist run` --------------------------------------------------------------------------------------------

@once
def train(run: Run) -> dict[str, dict] | State:
    """One Ray Tune trial per architecture; returns each one's metrics (a Cancelled state when cancelled)."""
    return trials_step(lambda: run_trials(run, progress=get_run_logger().info, live=live_progress_enabled()))


@touches_store()
def report(run: Run, metrics: dict[str, dict], decisions: list[Decision]) -> dict:
    """Table 1 beside the report's, Figure 1, the champion decisions and the run record, into the store."""
    check_held(run.lease)  # summary and run.json only while the run is still this process's
    return publish_report(run, metrics, run_record(run, time.time(), cluster_summary()), decisions)


# --- `fmnist search` -----------------------------------------------------------------------------------------

@once
def search(run: Run) -> list[dict] | State:
    """Every architecture's recipe search (train and validation rows only); the leaderboard, published (a Cancelled
    state when cancelled)."""
    rows = trials_step(lambda: search_recipes(run, progress=get_run_logger().info))
    if isinstance(rows, State):
        return rows
    publish_leaderboard(run.store, run.run_id, rows)
    return rows


@once
def retrain(run: Run, rows: list[dict]) -> dict[str, dict] | State:
    """The winners (best final-epoch validation accuracy) retrained with seeds other than the search's, each tested
    once."""
    return trials_step(lambda: retrain_winners(run, winners_of(rows), progress=get_run_logger().info))


@touches_store()
def report_search(run: Run, rows: list[dict], winners: dict[str, dict], decisions: list[Decision]) -> dict:
    """Table 1 (mean ± std over seeds) beside the report's, the recipes kept, then run.json last."""
    config: SearchConfig = run.config  # type: ignore[assignment]
    check_held(run.lease)  # recipes, summary and run.json only while the run is still this process's
    stored = store_recipes(run.store, config, run.run_id, winners)
    table = search_table_rows(winners)
    recipes_note = (", ".join(f"{arch} {KEPT_WORDS[kept]}" for arch, kept in stored.items())
                    if recipes_comparable(config)
                    else f"none stored: the search ran on other rows than preset '{config.preset}'s")
    new = [row for row in rows if row.get("new", True)]  # the others: earlier searches' trials it started from
    warm = f", started from {len(rows) - len(new)} trials of earlier searches" if len(new) < len(rows) else ""
    note = (f"Protocol: {config.protocol()}; {len(new)} trials, {sum(r['stopped_early'] for r in new)} stopped "
            f"early by ASHA{warm}; leaderboard {run.store.url_for(run.paths.leaderboard_json)}. "
            f"Recipes: {recipes_note}. Dataset version {run.dataset_version}; code {code_version()}.")
    markdown = search_table_markdown(run.run_id, table, note) + "\n" + decisions_markdown(decisions)
    summary = {"run_id": run.run_id, "kind": "search", "dataset_version": run.dataset_version,
               "protocol": config.protocol(), "table1": table, "metrics": winners,
               "recipes_stored": {arch: kept != "kept the stored one" for arch, kept in stored.items()},
               "trials": len(new), "warm_start_trials": len(rows) - len(new),
               "champion_decisions": decisions_json(decisions)}
    run.store.put_bytes(run.paths.summary_json, json.dumps(summary, indent=2).encode())
    run.store.put_bytes(run.paths.summary_md, markdown.encode())
    run.store.put_bytes(run.paths.record, json.dumps(run_record(run, time.time(), cluster_summary()), indent=2).encode())
    return {"rows": table, "markdown": markdown}
