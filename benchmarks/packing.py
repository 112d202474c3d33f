"""On a CPU-only node: trials side by side (1 CPU each) or one after another (all CPUs each)?

Both run the five architectures through the project's run_trials on all 60,000 rows for a
fixed number of epochs (no early stopping), in one run, and print the wall-time ratio. The
faster one is the default of `cpus_per_trial`.

    .venv/bin/python benchmarks/packing.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    from tasks.config import PipelineConfig
    from tasks.data.dataset import fetch_dataset
    from tasks.tune.cluster import connect_ray
    from tasks.runs.run import Run
    from tasks.tune.fanout import run_trials
    from tasks.data.shards import publish_dataset
    from tasks.data.store import open_store

    store = open_store(tempfile.mkdtemp(prefix="bench-packing-"))
    version = publish_dataset(fetch_dataset(), store).version
    connect_ray(None)
    cores = os.cpu_count() or 1
    walls = {}
    for label, cpus in (("side by side (1 CPU per trial)", 1), (f"one after another ({cores} CPUs per trial)", cores)):
        config = PipelineConfig(store=store.uri, max_epochs=args.epochs, patience=args.epochs, cpus_per_trial=cpus)
        started = time.perf_counter()
        run_trials(Run.on_published_dataset(config, store, f"packing-{cpus}-{uuid.uuid4().hex[:6]}", version))
        walls[label] = time.perf_counter() - started
        print(f"{label}: {walls[label]:.1f} s", flush=True)
    (side, side_s), (seq, seq_s) = walls.items()
    text = "\n".join([
        "# Trials on a CPU-only node: side by side or one after another",
        "",
        f"Machine: {machine()}",
        f"Five architectures, all rows, {args.epochs} epochs each (no early stopping), one run of each.",
        "",
        "| packing | wall s |", "|---|---:|",
        f"| {side} | {side_s:.1f} |", f"| {seq} | {seq_s:.1f} |", "",
        f"Ratio side-by-side / one-after-another: **{side_s / seq_s:.2f}**.",
    ]) + "\n"
    print(text)
    print("written to", write_result("packing.md", text))


if __name__ == "__main__":
    main()
