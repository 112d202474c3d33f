"""`fmnist search`: claim a run → prepare → search each architecture's recipe → retrain the winners with several
seeds → promote champions → Table 1, the leaderboard and the stored best recipes. Prefect only at this edge."""

from __future__ import annotations

import json
import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.run import claim, join_ray, promote_champions, signals_unwrapped_from_ray, with_prepared_dataset
from tasks.runs.champion import Decision, decisions_json, decisions_markdown
from tasks.config import SearchConfig
from tasks.runs.reporting import code_version, run_record
from tasks.runs.run import Run
from tasks.tune.search import (leaderboard_key, leaderboard_table, publish_leaderboard, recipes_comparable, retrain_winners, search_all,
                          search_table_markdown, search_table_rows, store_recipes, winners_of)


@task(cache_policy=NO_CACHE)  # no Prefect retries: Ray's FailureConfig restarts trials from checkpoints
def search(run: Run) -> list[dict]:
    """Every architecture's recipe search (train and validation rows only); the leaderboard, published."""
    with signals_unwrapped_from_ray():
        rows = search_all(run.config, run.store, run.run_id, run.dataset_version, run.manifest,
                          progress=get_run_logger().info)
    publish_leaderboard(run.store, run.run_id, rows)
    return rows


@task(cache_policy=NO_CACHE)
def retrain(run: Run, rows: list[dict]) -> dict[str, dict]:
    """The winners (best validation accuracy) retrained with several seeds, each tested once."""
    with signals_unwrapped_from_ray():
        return retrain_winners(run.config, run.store, run.run_id, run.dataset_version, run.manifest, winners_of(rows),
                               progress=get_run_logger().info)


@task(retries=2, retry_delay_seconds=[2, 8], cache_policy=NO_CACHE)
def report_search(run: Run, rows: list[dict], winners: dict[str, dict], decisions: list[Decision]) -> dict:
    """Table 1 (mean ± std over seeds) beside the report's, the recipes kept, then run.json last."""
    stored = store_recipes(run.store, run.config, run.run_id, winners)
    table = search_table_rows(winners)
    recipes_note = (", ".join(f"{arch} {'stored' if kept else 'kept the stored one (better validation accuracy)'}"
                              for arch, kept in stored.items()) if recipes_comparable(run.config)
                    else f"none stored: the search ran on other rows than preset '{run.config.preset}'s")
    note = (f"Protocol: {run.config.protocol()}; {len(rows)} trials, {sum(r['stopped_early'] for r in rows)} stopped "
            f"early by ASHA; leaderboard {run.store.url_for(leaderboard_key(run.run_id))}. Recipes: {recipes_note}. "
            f"Dataset version {run.dataset_version}; code {code_version()}.")
    markdown = search_table_markdown(run.run_id, table, note) + "\n" + decisions_markdown(decisions)
    summary = {"run_id": run.run_id, "kind": "search", "dataset_version": run.dataset_version,
               "protocol": run.config.protocol(), "table1": table, "metrics": winners, "recipes_stored": stored,
               "trials": len(rows), "champion_decisions": decisions_json(decisions)}
    run.store.put_bytes(run.paths.summary_json, json.dumps(summary, indent=2).encode())
    run.store.put_bytes(run.paths.summary_md, markdown.encode())
    run.store.put_bytes(run.paths.record, json.dumps(run_record(run, time.time(), status="completed"), indent=2).encode())
    return {"rows": table, "markdown": markdown}


@flow(name="fmnist-search", log_prints=True)
def search_flow(config: SearchConfig = SearchConfig()) -> dict:
    """Search each architecture's training recipe (Optuna TPE + ASHA), retrain the winners with several seeds,
    and publish the leaderboard, Table 1 (mean ± std) and the best recipes."""
    join_ray(config)
    run = claim(config)
    try:
        logger = get_run_logger()
        logger.info(f"search {run.run_id}: {', '.join(run.config.architectures)}; {run.config.num_samples} recipes "
                    f"each, {run.config.scheduler.upper()}; {run.config.protocol()}; store {run.store.uri}")
        run = with_prepared_dataset(run)
        rows = search(run)
        create_table_artifact(table=leaderboard_table(rows), key="fmnist-search-leaderboard",
                              description=f"Search {run.run_id}: every trial, best validation accuracy first")
        winners = retrain(run, rows)
        decisions = promote_champions(run, winners)
        result = report_search(run, rows, winners, decisions)
        create_table_artifact(table=result["rows"], key="fmnist-search-table1",
                              description=f"Search {run.run_id}: winners' test accuracy, mean ± std over seeds")
        create_markdown_artifact(markdown=result["markdown"], key="fmnist-search-summary", description=f"Search {run.run_id}")
        logger.info("\n" + result["markdown"])
    finally:
        run.release()
    return {"run_id": run.run_id, "table1": result["rows"], "markdown": result["markdown"], "store": run.store.uri,
            "leaderboard": rows}
