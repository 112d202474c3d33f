"""`fmnist search`: pre-flight → claim a run → prepare → search each architecture's recipe → retrain the winners
with several seeds → promote champions → Table 1, the leaderboard and the stored best recipes."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.steps import (claim, finished_in_this_flow_run, preflight, promote_champions, report_search, retrain,
                         search, search_artifact_key, unless_cancelled, with_prepared_dataset)
from tasks.config import SearchConfig
from tasks.runs.tables import leaderboard_table, log_text, search_table


@flow(name="fmnist-search", log_prints=True)
def search_flow(config: SearchConfig = SearchConfig()) -> dict:
    """Search each architecture's training recipe (Optuna TPE + ASHA), retrain the winners with several seeds,
    and publish the leaderboard, Table 1 (mean ± std) and the best recipes."""
    finished = finished_in_this_flow_run(config)
    if finished is not None:
        return finished  # a Retry of a flow run that finished its run: Completed again, nothing redone
    preflight(config)  # before a run is claimed for trials the cluster cannot run
    run = claim(config)
    try:
        logger = get_run_logger()
        logger.info(f"search {run.run_id} ({'resumed' if run.resumed else 'new'}): "
                    f"{', '.join(run.config.architectures)}; {run.config.num_samples} recipes "
                    f"each, {run.config.scheduler.upper()}; {run.config.protocol()}; store {run.store.uri}")
        run = with_prepared_dataset(run)
        rows = unless_cancelled(search(run))
        create_table_artifact(table=leaderboard_table(rows), key=search_artifact_key(run.config, "leaderboard"),
                              description=f"Search {run.run_id}: every trial, best final-epoch validation accuracy first")
        winners = unless_cancelled(retrain(run, rows))
        decisions = promote_champions(run, winners)
        result = report_search(run, rows, winners, decisions)
        create_table_artifact(table=search_table(result["rows"]), key=search_artifact_key(run.config, "table1"),
                              description=f"Search {run.run_id}: winners' test accuracy, mean ± std over seeds")
        create_markdown_artifact(markdown=result["markdown"], key=search_artifact_key(run.config, "summary"),
                                 description=f"Search {run.run_id}")
        logger.info(log_text(result["markdown"]))
    finally:
        run.release()
    return {"run_id": run.run_id, "table1": result["rows"], "markdown": result["markdown"], "store": run.store.uri,
            "leaderboard": rows}
