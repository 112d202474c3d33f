"""The dataset: fetch and verify the four IDX files (dataset), write them as Parquet shards with a manifest
(shards), and the object store they live in, a local folder or S3 (store)."""
