"""Data in a trial: one decode of a dataset version per run, shared through Ray's object store.

In one run, median of N tries each:
  plain      a plain script decoding the four .gz files with gzip + numpy;
  version    tasks.model.training.load_dataset_arrays: every shard of the version read from the local store,
             its SHA-256 checked against the manifest, Parquet decoded (goal: <= 1 s);
  in trial   what each trial pays for it instead: ray.get of the shared arrays inside a Ray task on
             the same node (zero-copy from the object store).
Then the cost for five trials: five loads of the version vs one load + five shared reads.

    .venv/bin/python benchmarks/data_loading.py [--tries 5]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, median, write_result  # noqa: E402

DEBIAN = "/usr/share/datasets/fashion-mnist"


def plain_decode() -> None:
    for name, offset in (("train-images-idx3-ubyte", 16), ("train-labels-idx1-ubyte", 8),
                         ("t10k-images-idx3-ubyte", 16), ("t10k-labels-idx1-ubyte", 8)):
        with gzip.open(f"{DEBIAN}/{name}.gz") as handle:
            np.frombuffer(handle.read(), dtype=np.uint8, offset=offset)


def timed(function, tries: int) -> float:
    seconds = []
    for _ in range(tries):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()

    import ray

    from tasks.data.dataset import fetch_dataset
    from tasks.data.shards import publish_dataset
    from tasks.data.store import open_store
    from tasks.model.training import load_dataset_arrays

    store = open_store(tempfile.mkdtemp(prefix="bench-data-"))
    version = publish_dataset(fetch_dataset(), store).version
    plain = timed(plain_decode, args.tries)
    load = timed(lambda: load_dataset_arrays(store, version, None, None), args.tries)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    shared = ray.put(load_dataset_arrays(store, version, None, None))

    @ray.remote
    def read_shared(arrays) -> float:  # Ray resolves the reference before the call: time it from inside
        started = time.perf_counter()
        ray.get(shared)
        return time.perf_counter() - started

    ray.get(read_shared.remote(None))  # warm a worker
    in_trial = median([ray.get(read_shared.remote(None)) for _ in range(args.tries)])
    ray.shutdown()

    lines = [
        "# Loading a dataset version into a trial",
        "",
        f"Machine: {machine()}",
        f"Median of {args.tries} tries each; all 60,000 + 10,000 rows.",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| plain: gzip + numpy of the four .gz files | {plain:.3f} |",
        f"| load_dataset_arrays: 7 shards, SHA-256 checked, Parquet decoded (goal <= 1 s) | {load:.3f} |",
        f"| in a trial: ray.get of the shared arrays (same node) | {in_trial:.4f} |",
        "",
        f"- version load / plain decode: **{load / plain:.2f}**",
        f"- five trials: five loads {5 * load:.2f} s vs one load + five shared reads {load + 5 * in_trial:.2f} s "
        f"(**{(load + 5 * in_trial) / (5 * load):.2f}x**)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print("written to", write_result("data_loading.md", text))


if __name__ == "__main__":
    main()
