"""Recipes on the GPU: each (architecture, recipe) trained with several seeds, all at once on one GPU.

For the lent GPU machine (JAX, no TensorFlow, no Ray, no pyarrow; pydantic and Keras carried as wheels in .whl/),
also runnable on the CPU with a tiny setting as a smoke test. Each job is one process doing what the project's
trainer does for a recipe (tasks.model.training.train_trial around `model.fit`): seed, `build_model(arch, dropout)`,
`tasks.model.recipes.compile_with_recipe` (optimizer, schedule, label smoothing), the LAST 20% (10% for cnn2 and
resnet_bn) of the training rows validating, one `fit(shuffle=False)` per epoch on that epoch's order and
augmentation (tasks.model.protocol), EarlyStopping(val_accuracy, patience) across those calls, then the test set once.
The recipe code is the project's own (tasks.model.recipes, tasks.model.protocol, tasks.model.architectures: no pyarrow, no Ray);
the few trainer lines around `fit` come from gpu_packed.py, which explains why they are repeated there.

    python benchmarks/gpu_recipes.py --recipes FILE [--seeds 0,1,2] [--data DIR] [--report FILE]

FILE: JSON {"<architecture>": {<recipe fields>}, ...}, e.g. the `recipe` of each recipes/<preset>/<arch>.json that
`fmnist search` stored. Knobs (environment): TRAIN_ROWS, TEST_ROWS, PATIENCE (10), MAX_EPOCHS (caps every
recipe's epochs), XLA_PYTHON_CLIENT_MEM_FRACTION (default 1/(jobs+1)), MAX_PARALLEL (default: every job at once).
On this 2-core CPU: KERAS_BACKEND=tensorflow MAX_PARALLEL=2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_packed import REPO, device_name, early_stopping_across_fits, env_int, model_input, prepare_arrays  # noqa: E402

# issue 11's goals, test accuracy %, mean of the seeds
GOALS = {"baseline": 85.5, "mlp1": 90.0, "mlp3_dropout": 90.0, "cnn1_mlp": 92.5, "cnn2": 93.5, "resnet_bn": 95.0}


def train_recipe(arch: str, recipe_values: dict, seed: int, data: dict, patience: int) -> dict:
    import keras
    import numpy as np

    from tasks.model.architectures import ARCHITECTURES, build_model
    from tasks.model.protocol import augmented, shuffled_for_epoch
    from tasks.model.recipes import compile_with_recipe, parse_recipe

    recipe = parse_recipe(recipe_values, f"the recipe of {arch}")
    keras.utils.set_random_seed(seed)
    model = build_model(arch, dropout=recipe.dropout)
    x = model_input(data["train_images"], model.input_shape[1:])
    y = np.eye(10, dtype=np.float32)[data["train_labels"]]
    split_at = int(math.floor(len(x) * (1.0 - ARCHITECTURES[arch].validation_split)))
    compile_with_recipe(model, recipe, split_at, steps_per_execution=32)
    early_stopping = early_stopping_across_fits(patience)
    seconds, val_accuracy = [], []
    for epoch in range(recipe.epochs):
        started = time.perf_counter()
        x_fit, y_fit = shuffled_for_epoch(seed, epoch, x[:split_at], y[:split_at])
        x_fit = augmented(x_fit, seed, epoch, recipe.augmentation)
        history = model.fit(x_fit, y_fit, validation_data=(x[split_at:], y[split_at:]), shuffle=False,
                            batch_size=recipe.batch_size, validation_batch_size=1024, initial_epoch=epoch,
                            epochs=epoch + 1, verbose=0, callbacks=[early_stopping])
        seconds.append(time.perf_counter() - started)
        val_accuracy += history.history["val_accuracy"]
        if model.stop_training:
            break
    x_test = model_input(data["test_images"], model.input_shape[1:])
    predicted = model.predict(x_test, batch_size=1024, verbose=0).argmax(axis=1)
    return {"architecture": arch, "seed": seed, "recipe": recipe.model_dump(), "recipe_text": recipe.describe(),
            "params": model.count_params(), "epochs": len(val_accuracy),
            "best_val_accuracy_pct": 100 * max(val_accuracy),
            "test_accuracy_pct": 100 * float((predicted == data["test_labels"]).mean()),
            "seconds_per_epoch": statistics.median(seconds[1:] if len(seconds) > 1 else seconds),
            "train_seconds": sum(seconds)}


def main_worker(args) -> None:
    started = time.perf_counter()
    import keras
    import numpy as np

    with np.load(args.arrays) as npz:
        data = {k: npz[k] for k in npz.files}
    row = train_recipe(args.arch, json.loads(args.recipe), args.seed, data, env_int("PATIENCE", 10))
    row.update(device=device_name(), backend=keras.backend.backend(), keras=keras.__version__,
               process_seconds=time.perf_counter() - started)
    (Path(args.results) / f"{args.arch}-seed{args.seed}.json").write_text(json.dumps(row))
    print(f"  {args.arch} seed {args.seed}: {row['epochs']} epochs, {row['seconds_per_epoch']:.2f} s/epoch, val "
          f"{row['best_val_accuracy_pct']:.2f}%, test {row['test_accuracy_pct']:.2f}% ({row['process_seconds']:.0f} s)",
          flush=True)


def report(rows: list[dict], wall: float) -> str:
    from tasks.model.architectures import ARCHITECTURES

    first = rows[0]
    lines = [f"Backend: {first['backend']} on {first['device']}; keras {first['keras']}; Python {sys.version.split()[0]}; "
             f"{len(rows)} jobs, at most {os.environ.get('MAX_PARALLEL', len(rows))} at once, {wall:.0f} s wall", "",
             "| model | params | test acc % mean ± std (seeds) | report | goal | met | val acc % mean | epochs | "
             "s/epoch | recipe |", "|---|---:|---:|---:|---:|---|---:|---|---:|---|"]
    for arch in ARCHITECTURES:
        mine = [r for r in rows if r["architecture"] == arch]
        if not mine:
            continue
        test = [r["test_accuracy_pct"] for r in mine]
        mean, std = statistics.mean(test), statistics.stdev(test) if len(test) > 1 else 0.0
        spec = ARCHITECTURES[arch]
        report_acc = f"{spec.report.test_accuracy:.2f}" if spec.report else "—"
        goal = GOALS.get(arch)
        lines.append(f"| {arch} | {mine[0]['params']:,} | {mean:.2f} ± {std:.2f} ({len(mine)}) | {report_acc} | "
                     f"{goal:.1f} | {'yes' if goal and mean >= goal else 'NO'} | "
                     f"{statistics.mean(r['best_val_accuracy_pct'] for r in mine):.2f} | "
                     f"{'/'.join(str(r['epochs']) for r in mine)} | {statistics.median(r['seconds_per_epoch'] for r in mine):.2f} | "
                     f"{mine[0]['recipe_text']} |")
    return "\n".join(lines) + "\n"


def run_jobs(commands: list[list[str]], env: dict, parallel: int) -> list[int]:
    """Run the commands, at most `parallel` at once (all at once on a GPU; the CPU's cores on a CPU)."""
    codes: list[int | None] = [None] * len(commands)
    running: dict[int, subprocess.Popen] = {}
    waiting = list(range(len(commands)))
    while waiting or running:
        while waiting and len(running) < parallel:
            index = waiting.pop(0)
            running[index] = subprocess.Popen(commands[index], env=env, cwd=str(REPO))
        for index, process in list(running.items()):
            if process.poll() is not None:
                codes[index] = process.returncode
                del running[index]
        time.sleep(0.5)
    return [code or 0 for code in codes]


def main_parent(args) -> None:
    recipes = json.loads(Path(args.recipes).read_text())
    cap = env_int("MAX_EPOCHS", None)
    if cap:
        recipes = {arch: {**recipe, "epochs": min(recipe.get("epochs", 100), cap)} for arch, recipe in recipes.items()}
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(arch, seed) for arch in recipes for seed in seeds]
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / (len(jobs) + 1):.3f}")
    with tempfile.TemporaryDirectory(prefix="gpu-recipes-") as work:
        work = Path(work)
        # Each job's row is written as it finishes, beside the report when there is one: a call cut short by its
        # time limit still brings back the jobs that finished.
        results = Path(args.report).parent / "gpu_recipes_rows" if args.report else work
        results.mkdir(parents=True, exist_ok=True)
        arrays = prepare_arrays(args.data, env_int("TRAIN_ROWS", None), env_int("TEST_ROWS", None), work)
        started = time.perf_counter()
        codes = run_jobs([[sys.executable, __file__, "--worker", "--arch", arch, "--seed", str(seed), "--recipe",
                           json.dumps(recipes[arch]), "--arrays", str(arrays), "--results", str(results)]
                          for arch, seed in jobs], env, env_int("MAX_PARALLEL", len(jobs)))
        wall = time.perf_counter() - started
        rows = [json.loads(p.read_text()) for p in sorted(results.glob("*-seed*.json"))]
    failed = [f"{a} seed {s}" for (a, s), code in zip(jobs, codes) if code]
    text = report(rows, wall) + (f"\nFailed: {', '.join(failed)}\n" if failed else "")
    print("\n" + text)
    if args.report:
        Path(args.report).write_text(text)
        Path(args.report).with_suffix(".json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", help="JSON file: architecture -> recipe")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=".data/fashion-mnist")
    parser.add_argument("--report")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arch", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    parser.add_argument("--arrays", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    args = parser.parse_args()
    main_worker(args) if args.worker else main_parent(args)


if __name__ == "__main__":
    main()
