"""Seconds per epoch: the project's Ray Tune trial vs a plain Keras script, per architecture, in one run.

The plain script is what a user would write: `model.fit` on in-memory numpy with
`validation_split`, batch 128, the same model. The trial is the project's own
(`tasks.tune.fanout.run_trials`): data from the Parquet shards, per-epoch report and
checkpoint. Both get the whole machine (the trial asks for every core), both
train on all 60,000 rows; the first epoch (graph tracing) is left out of the
median. Ratio = trial / plain: below 1.0 the trial is faster.

    .venv/bin/python benchmarks/train_speed.py [--epochs 4] [--architectures baseline,cnn2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, median, write_result  # noqa: E402


def plain_keras_seconds(arch: str, epochs: int, raw) -> list[float]:
    """The plain alternative: one process, model.fit(validation_split=…) on numpy arrays."""
    import keras

    from tasks.model.architectures import ARCHITECTURES, build_model

    model = build_model(arch)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = (raw.train_images.astype("float32") / 255).reshape((-1, *model.input_shape[1:]))
    y = keras.utils.to_categorical(raw.train_labels, 10)
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    model.fit(x, y, validation_split=ARCHITECTURES[arch].validation_split, batch_size=128, epochs=epochs,
              verbose=0, callbacks=[Timer()])
    return seconds


def trial_seconds(arch: str, epochs: int, store, version: str) -> list[float]:
    import csv
    import io

    from tasks.config import PipelineConfig
    from tasks.runs.run import Run
    from tasks.tune.fanout import run_trials

    config = PipelineConfig(store=store.uri, architectures=[arch], max_epochs=epochs, patience=epochs,
                            cpus_per_trial=os.cpu_count() or 1, max_failures=0)
    run_id = f"bench-{arch}-{uuid.uuid4().hex[:6]}"
    run_trials(Run.on_published_dataset(config, store, run_id, version))
    rows = csv.DictReader(io.StringIO(store.get_bytes(f"runs/{run_id}/{arch}/history.csv").decode()))
    return [float(row["seconds"]) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--architectures", default="baseline,mlp1,mlp3_dropout,cnn1_mlp,cnn2")
    parser.add_argument("--output", default="train_speed.md")
    args = parser.parse_args()

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from tasks.data.dataset import fetch_dataset
    from tasks.data.shards import publish_dataset
    from tasks.data.store import open_store

    raw = fetch_dataset()
    store = open_store(tempfile.mkdtemp(prefix="bench-store-"))
    version = publish_dataset(raw, store).version

    lines = [
        "# Seconds per epoch: project trial vs plain Keras script",
        "",
        f"Machine: {machine()}",
        f"Full training set (48,000/54,000 fit rows), batch 128, {args.epochs} epochs each, median of epochs 2..{args.epochs}.",
        "",
        "| architecture | plain Keras s/epoch | trial s/epoch | ratio trial/plain |",
        "|---|---:|---:|---:|",
    ]
    for arch in args.architectures.split(","):
        plain = median(plain_keras_seconds(arch, args.epochs, raw)[1:])
        trial = median(trial_seconds(arch, args.epochs, store, version)[1:])
        lines.append(f"| {arch} | {plain:.2f} | {trial:.2f} | {trial / plain:.2f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    print("written to", write_result(args.output, text))


if __name__ == "__main__":
    main()
