"""The main job, `fmnist run`: pre-flight → claim the run → prepare (cached by dataset version) → fan out →
promote → report."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.steps import (claim, finished_in_this_flow_run, preflight, promote_champions, report, summary_artifact_key,
                         table_artifact_key, train, unless_cancelled, with_prepared_dataset)
from tasks.config import PipelineConfig
from tasks.runs.tables import log_text, run_table


@flow(name="fmnist-run", log_prints=True)
def run_flow(config: PipelineConfig = PipelineConfig()) -> dict:
    """Train the report's five Fashion-MNIST classifiers and publish Table 1 beside the report's."""
    finished = finished_in_this_flow_run(config)
    if finished is not None:
        return finished  # a Retry of a flow run that finished its run: Completed again, nothing redone
    preflight(config)  # before a run is claimed for trials the cluster cannot run
    run = claim(config)
    try:
        logger = get_run_logger()
        logger.info(f"run {run.run_id} ({'resumed' if run.resumed else 'new'}): {', '.join(run.config.architectures)}; "
                    f"{run.config.protocol()}; store {run.store.uri}")
        run = with_prepared_dataset(run)
        metrics = unless_cancelled(train(run))
        decisions = promote_champions(run, metrics)
        result = report(run, metrics, decisions)

        create_table_artifact(table=run_table(result["rows"]), key=table_artifact_key(run.config),
                              description=f"Run {run.run_id}: test accuracy beside the report's Table 1 "
                                          f"({run.config.protocol()})")
        create_markdown_artifact(markdown=result["markdown"], key=summary_artifact_key(run.config),
                                 description=f"Run {run.run_id}")
        logger.info(log_text(result["markdown"]))
    finally:
        run.release()  # a failed run may be resumed at once; a killed one is taken over once its pid is gone
    return {"run_id": run.run_id, "dataset_version": run.dataset_version, "table1": result["rows"],
            "markdown": result["markdown"], "store": run.store.uri}
