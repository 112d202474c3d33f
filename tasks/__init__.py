"""The pipeline's stages as plain, typed functions (no Prefect in here), one room per subsystem.

- `data/`    the dataset: fetch + verify (dataset), Parquet shards + manifest (shards), the store (store)
- `model/`   what a trial trains: the architectures, training recipes, the per-epoch order (protocol), the
             trial itself (training), safe loading of published models (artifacts), Keras internals (keras_compat)
- `tune/`    Ray and Ray Tune: joining and checking the cluster (cluster), the trials of a run (fanout), the
             recipe search (search), the live table (progress), Ray internals (ray_compat)
- `runs/`    what a run leaves and decides: its claim and lease (run, lease), the champion, the report and
             plots, the listing of runs (runlist)
- `predict/` images in, classes out (`fmnist predict`)

Beside them: `config` (the one typed config), `settings` (environment variables), `keys` (every store key),
`errors`, `records` (stored JSON records and the one formatter of validation errors), `processes`, `progress` (the
Progress callback type of the stages).
"""
