"""The `prepare` flow: fetch → verify → shard → publish."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.config import PipelineConfig
from tasks.data.dataset import RawDataset, fetch_dataset
from tasks.errors import DatasetError
from tasks.data.shards import PrepareResult, publish_dataset
from tasks.data.store import Store, open_store


def _retry_unless_bad_content(task, task_run, state) -> bool:
    """A bad source or content (missing folder, HTML page, truncated .gz, wrong header or checksum, HTTP 4xx)
    never gets better, and network faults were already retried with backoff inside the download: no Prefect
    retry for a DatasetError. Other faults (an S3 source going away: StoreError) get another try."""
    return not isinstance(state.data, DatasetError)


@task(retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=_retry_unless_bad_content, cache_policy=NO_CACHE)
def fetch(source: str | None, s3_endpoint: str | None = None) -> RawDataset:
    """Read the four raw files and verify their content."""
    return fetch_dataset(source, progress=get_run_logger().info, s3_endpoint=s3_endpoint)


@task(retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=_retry_unless_bad_content, cache_policy=NO_CACHE)
def shard_and_publish(raw: RawDataset, store: Store, rows_per_shard: int) -> PrepareResult:
    """Write Parquet shards, then the manifest (a no-op if this version is published)."""
    return publish_dataset(raw, store, rows_per_shard, progress=get_run_logger().info)


def describe(result: PrepareResult, store_uri: str) -> str:
    rows = ", ".join(f"{split} {n:,} rows" for split, n in result.rows.items())
    state = "published" if result.created else "already published, nothing written"
    return (f"dataset version {result.version} ({state}): {rows}, {result.shard_count} shards, "
            f"{result.bytes / 1e6:.1f} MB in {store_uri}")


@flow(name="fmnist-prepare", log_prints=True)
def prepare_flow(config: PipelineConfig = PipelineConfig()) -> PrepareResult:
    """Fetch Fashion-MNIST, verify it, and publish it as Parquet shards in the store."""
    store = open_store(config.store, config.s3_endpoint)  # fails fast on a wrong URI, endpoint, bucket or credentials
    raw = fetch(config.source, config.s3_endpoint)
    result = shard_and_publish(raw, store, config.rows_per_shard)
    get_run_logger().info(describe(result, store.uri))
    return result
