"""The `prepare` flow: fetch → verify → shard → publish."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.steps import describe, fetch, shard_and_publish
from tasks.config import PipelineConfig
from tasks.data.shards import PrepareResult
from tasks.data.store import open_store


@flow(name="fmnist-prepare", log_prints=True)
def prepare_flow(config: PipelineConfig = PipelineConfig()) -> PrepareResult:
    """Fetch Fashion-MNIST, verify it, and publish it as Parquet shards in the store."""
    store = open_store(config.store, config.s3_endpoint)  # fails fast on a wrong URI, endpoint, bucket or credentials
    raw = fetch(config.source, config.s3_endpoint)
    result = shard_and_publish(raw, store, config.rows_per_shard)
    get_run_logger().info(describe(result, store.uri))
    return result
