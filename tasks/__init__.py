"""The pipeline's stages as plain, typed functions (no Prefect in here).

One module per stage: config, dataset (fetch + verify), shards (Parquet),
store (object storage), architectures, training (runs inside a Ray trial),
fanout (Ray Tune), reporting.
"""
