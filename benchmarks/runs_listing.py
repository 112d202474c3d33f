"""`fmnist runs` against S3 (SeaweedFS on 127.0.0.1): what the listing costs in requests and seconds.

A store of 200 finished runs, each as a run leaves it (config.json, run.json, summary files, five models with
metrics.json, history, plots and model.keras, and 30 files of Tune state): 12,400 objects. Project: `list_runs`
(one delimiter listing of runs/, then the 20 newest runs' metadata, 8 reads in flight). Plain alternative: list
every key under runs/ (what list_keys does), then read the same metadata one request after another.

    PYTHONPATH=. .venv/bin/python benchmarks/runs_listing.py     # about a minute
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/seaweed_server.py: the same server start as the test fixture

from benchmarks.common import machine, median, write_result  # noqa: E402
from seaweed_server import SeaweedServer, temporary_root  # noqa: E402

RUNS, TUNE_FILES, SHOWN, TRIES = 200, 30, 20, 3
ARCHS = ("baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2")


def run_objects(day: int, index: int) -> dict[str, bytes]:
    run_id = f"2026{1 + day // 28:02d}{1 + day % 28:02d}-{index // 60:02d}{index % 60:02d}00-{index:06x}"
    root = f"runs/{run_id}"
    objects = {f"{root}/config.json": json.dumps({"preset": "full", "architectures": list(ARCHS), "run_id": run_id,
                                                 "max_epochs": 100, "train_rows": None, "test_rows": None}).encode(),
               f"{root}/run.json": b"{}", f"{root}/summary.md": b"# summary", f"{root}/summary.json": b"{}"}
    for arch in ARCHS:
        metrics = {"architecture": arch, "test_accuracy": 0.9, "rows": {"test": 10_000}, "epochs": 40,
                   "confusion_matrix": [[100] * 10] * 10, "per_class_accuracy": {str(i): 0.9 for i in range(10)}}
        objects.update({f"{root}/{arch}/metrics.json": json.dumps(metrics).encode(),
                        f"{root}/{arch}/model.keras": b"PK" + b"\0" * 1000, f"{root}/{arch}/history.csv": b"epoch\n",
                        f"{root}/{arch}/curves.png": b"png", f"{root}/{arch}/confusion.png": b"png"})
    objects.update({f"{root}/tune/{arch}/checkpoint_{i:06d}/state.json": b"{}" for arch in ARCHS[:3]
                    for i in range(TUNE_FILES // 3)})
    return objects


def counted(store) -> list[str]:
    """Every S3 API call the store's client makes, by operation name."""
    calls: list[str] = []
    store.client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    return calls


def plain_listing(store) -> str:
    """What a listing without delimiters does: every key under runs/, then the newest runs' files in a row."""
    keys = store.list_keys("runs/")
    run_ids = sorted({key.split("/")[1] for key in keys}, reverse=True)[:SHOWN]
    rows = []
    for run_id in run_ids:
        files = [f"runs/{run_id}/config.json"] + [f"runs/{run_id}/{a}/metrics.json" for a in ARCHS]
        rows.append([store.read_versioned(key)[0] for key in files] + [store.exists(f"runs/{run_id}/run.json")])
    return str(len(rows))


def main() -> None:
    import tasks.runs.runlist as runlist
    from tasks.data.store import S3Store

    server = SeaweedServer(temporary_root("weed-bench-"))
    os.environ.update(server.credentials_env())
    with server:
        store = S3Store(server.bucket, f"bench-{uuid.uuid4().hex[:8]}", endpoint=server.endpoint)
        objects = {k: v for i in range(RUNS) for k, v in run_objects(i % 300, i).items()}
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda item: store.put_bytes(*item), objects.items()))
        print(f"{len(objects):,} objects written in {time.perf_counter() - started:.1f} s")
        calls = counted(store)
        results = {}
        for name, action in (("project: list_runs (delimiter listing, 8 reads in flight)",
                              lambda: runlist.list_runs(store, SHOWN)),
                             ("project, one read at a time", lambda: _sequential(runlist, store)),
                             ("plain: list every key under runs/, then read", lambda: plain_listing(store))):
            seconds = []
            for _ in range(TRIES):
                calls.clear()
                begin = time.perf_counter()
                action()
                seconds.append(time.perf_counter() - begin)
            results[name] = (median(seconds), len(calls), calls.count("ListObjectsV2"))
            print(f"{name}: {median(seconds):.3f} s, {len(calls)} requests ({calls.count('ListObjectsV2')} list pages)")
    shutil.rmtree(server.root, ignore_errors=True)

    plain_s = results["plain: list every key under runs/, then read"][0]
    table = "\n".join(f"| {name} | {s:.3f} | {n} | {pages} | {s / plain_s:.2f} |" for name, (s, n, pages) in results.items())
    write_result("runs_listing.md", f"""# fmnist runs: listing a store on S3

Machine: {machine()}
Load average (1 min) at the end: {os.getloadavg()[0]:.1f} (2 cores, shared with other work).
SeaweedFS on 127.0.0.1 (a request costs about a millisecond here; on AWS S3 tens of milliseconds, so the request
count matters more than these seconds). {RUNS} finished runs, {len(objects):,} objects; the {SHOWN} newest shown.
Median of {TRIES}. `benchmarks/runs_listing.py`.

| how | seconds | requests | of which list pages | ratio to plain |
|---|---:|---:|---:|---:|
{table}
""")


def _sequential(runlist, store) -> str:
    saved = runlist.READ_WORKERS
    runlist.READ_WORKERS = 1
    try:
        return runlist.list_runs(store, SHOWN)
    finally:
        runlist.READ_WORKERS = saved


if __name__ == "__main__":
    main()
