"""Where an epoch's time goes with Keras on JAX (issue 19 section 3), measured on the CPU, for the five models.

For each model, the trainer's epoch (tasks.model.training.fit_epochs: the epoch's order, one `fit` call with
validation data, steps_per_execution from the config) is timed, then taken apart:
  - shuffle: the epoch's order and copy of the fit rows (tasks.model.protocol), numpy;
  - fit on R rows and on 2R rows, no validation: time = overhead + steps x per-step, solved for both terms (the
    fixed cost of a `fit` call against what each step costs);
  - validation pass: `evaluate` on the validation rows at the eval batch.
Then the cheap cuts that keep the protocol's numbers, each timed over the same epochs and its weights compared with
the trainer's way (identical = the numbers are kept): a larger steps_per_execution (a whole epoch per call), and the
rows placed on the device once (jax arrays given to `fit` instead of numpy).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/jax_epoch_profile.py [--rows 12000] [--epochs 3]
Writes benchmarks/results/jax_epoch_profile.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import machine, median, write_result  # noqa: E402

FIVE = ("baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--architectures", default=",".join(FIVE))
    args = parser.parse_args()

    import jax
    import keras
    import numpy as np

    from tasks.config import PipelineConfig
    from tasks.data.dataset import fetch_dataset
    from tasks.model.architectures import ARCHITECTURES, build_model
    from tasks.model.protocol import epoch_permutation, shuffled_for_epoch
    from tasks.model.recipes import Recipe, compile_with_recipe
    from tasks.model.training import trial_data

    assert keras.backend.backend() == "jax", "run with KERAS_BACKEND=jax"
    defaults = PipelineConfig()
    spe, eval_batch, batch = defaults.steps_per_execution, defaults.eval_batch_size, defaults.batch_size
    raw = fetch_dataset()
    arrays = {"train": (raw.train_images[:args.rows], raw.train_labels[:args.rows])}
    rows_out = []

    def fresh(arch: str, steps_per_execution: int):
        keras.utils.set_random_seed(0)
        model = build_model(arch)
        data = trial_data(arrays, ARCHITECTURES[arch].validation_split, model.input_shape[1:])
        compile_with_recipe(model, Recipe(), len(data.x_fit), steps_per_execution=steps_per_execution)
        return model, data

    def timed_epochs(model, data, on_device: bool) -> list[float]:
        x_val, y_val = (jax.device_put(data.x_val), jax.device_put(data.y_val)) if on_device else (data.x_val, data.y_val)
        x_all, y_all = (jax.device_put(data.x_fit), jax.device_put(data.y_fit)) if on_device else (None, None)
        seconds = []
        for epoch in range(args.epochs):
            started = time.perf_counter()
            if on_device:  # the rows copied to the device once; each epoch's order gathered there
                order = jax.device_put(epoch_permutation(0, epoch, len(data.x_fit)))
                x, y = x_all[order], y_all[order]
            else:
                x, y = shuffled_for_epoch(0, epoch, data.x_fit, data.y_fit)
            model.fit(x, y, validation_data=(x_val, y_val), shuffle=False, batch_size=batch,
                      validation_batch_size=eval_batch, initial_epoch=epoch, epochs=epoch + 1, verbose=0)
            seconds.append(time.perf_counter() - started)
        return seconds

    def weights(model) -> list:
        return [np.asarray(w) for w in model.get_weights()]

    for arch in args.architectures.split(","):
        model, data = fresh(arch, spe)
        trainer = timed_epochs(model, data, on_device=False)  # epoch 1 compiles
        reference = weights(model)
        steps = math.ceil(len(data.x_fit) / batch)
        started = time.perf_counter()
        shuffled_for_epoch(0, 99, data.x_fit, data.y_fit)
        shuffle_s = time.perf_counter() - started

        def fit_s(n: int) -> float:
            x, y = data.x_fit[:n], data.y_fit[:n]
            model.fit(x, y, shuffle=False, batch_size=batch, epochs=1, verbose=0)  # compiled for this shape
            started = time.perf_counter()
            model.fit(x, y, shuffle=False, batch_size=batch, epochs=1, verbose=0)
            return time.perf_counter() - started

        half = (len(data.x_fit) // 2 // (batch * spe)) * batch * spe or len(data.x_fit) // 2
        t_half, t_full = fit_s(half), fit_s(2 * half)
        per_step = (t_full - t_half) / (half / batch)
        overhead = max(0.0, t_half - per_step * half / batch)
        started = time.perf_counter()
        model.evaluate(data.x_val, data.y_val, batch_size=eval_batch, verbose=0)
        model.evaluate(data.x_val, data.y_val, batch_size=eval_batch, verbose=0)
        validation_s = (time.perf_counter() - started) / 2

        cuts = {}
        for label, steps_per_execution, on_device in (("steps_per_execution = a whole epoch", steps, False),
                                                      ("rows on the device once", spe, True),
                                                      ("both", steps, True)):
            cut_model, cut_data = fresh(arch, steps_per_execution)
            seconds = timed_epochs(cut_model, cut_data, on_device)
            same = all(np.array_equal(a, b) for a, b in zip(weights(cut_model), reference))
            cuts[label] = (median(seconds[1:]) if len(seconds) > 1 else seconds[0], same)
        rows_out.append((arch, steps, median(trainer[1:]) if len(trainer) > 1 else trainer[0], trainer[0], shuffle_s,
                         overhead, per_step, validation_s, cuts))
        print(arch, rows_out[-1], flush=True)

    cut_names = list(rows_out[0][8]) if rows_out else []
    lines = ["# Where a Keras-on-JAX epoch's time goes (CPU)", "", f"Machine: {machine()}; jax {jax.__version__}",
             f"{args.rows:,} training rows (the architecture's last fraction validating), batch {batch}, "
             f"steps_per_execution {spe} (the config's), eval batch {eval_batch}; {args.epochs} epochs each, "
             "the first (compiling) left out of the medians.", "",
             "| model | steps/epoch | epoch s (trainer) | first epoch s | shuffle s | fit overhead s | s/step | "
             "validation s | " + " | ".join(f"{c}: epoch s (same weights?)" for c in cut_names) + " |",
             "|---|---:|---:|---:|---:|---:|---:|---:|" + "---|" * len(cut_names)]
    for arch, steps, epoch_s, first_s, shuffle_s, overhead, per_step, validation_s, cuts in rows_out:
        lines.append(f"| {arch} | {steps} | {epoch_s:.3f} | {first_s:.2f} | {shuffle_s:.3f} | {overhead:.3f} | "
                     f"{per_step * 1000:.2f} ms | {validation_s:.3f} | "
                     + " | ".join(f"{s:.3f} ({'yes' if same else 'NO'})" for s, same in cuts.values()) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    print("written to", write_result("jax_epoch_profile.md", text))


if __name__ == "__main__":
    main()
