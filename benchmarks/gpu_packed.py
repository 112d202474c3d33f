"""The five seed-protocol trainings packed onto one GPU as five processes, against the plain one-after-another run.

Called by benchmarks/gpu_check.sh on the lent GPU machine (H100; JAX, no TensorFlow, no Ray, no pydantic), also
runnable on the CPU with a tiny setting as a smoke test. Two measurements in the same call:

1. packed, the project's trainer: five processes at once, one architecture each, each with its share of the GPU
   (XLA_PYTHON_CLIENT_MEM_FRACTION=0.18 unless the caller sets the XLA memory variables itself). This is the
   fractional-GPU equivalent of `--gpus-per-trial 0.2` without Ray, which that machine lacks. Each process does
   what tasks.model.training.train_trial does around `model.fit`: seed, `build_model` +
   `compile_for_seed_protocol(steps_per_execution=<PipelineConfig default>)`, the LAST 20% (cnn2: 10%) of the
   training rows as validation data, one `fit(shuffle=False)` per epoch on the fit rows in that epoch's order
   (tasks.model.protocol.shuffled_for_epoch, from (seed, epoch)), batch 128, validation and test passes at the
   config's eval batch, EarlyStopping(val_accuracy, patience=10) carried across those calls, up to 100 epochs,
   and (CHECKPOINT=1, the default) a `model.keras` saved after every epoch as the trial's per-epoch checkpoint is.
2. sequential, the plain alternative: one process trains the five one after another with plain
   `model.compile(optimizer="adam", ...)` + `model.fit(validation_split=..., batch_size=128)`, the same
   EarlyStopping, then `model.evaluate` on the test set. Unseeded, as the report's script: with
   `keras.utils.set_random_seed`, `fit(shuffle=True)` repeats one batch order every epoch (design section 10).

Wall seconds are measured from starting the process(es) to the last one exiting: imports, backend start-up and
compilation are part of what a user waits for.

Imports: numpy, keras (in the worker processes only, so the parent never takes GPU memory), and the project's
`tasks.model.architectures`, `tasks.data.dataset` and `tasks.model.protocol` (numpy and the standard library only). NOT imported, and why:
`tasks.model.training` imports `tasks.data.shards` / `tasks.data.store` (pyarrow) at module level and its trainable needs Ray;
`tasks.config` needs pydantic, which the GPU image does not have. So the few lines of the trainer used here
(the validation split, the input scaling, the test evaluation, early stopping across one-epoch fits) are
repeated below, and the config's defaults are
read from tasks/config.py's source with `ast` (the same numbers, one source of truth).

    python benchmarks/gpu_packed.py --data DIR [--report FILE]       # what gpu_check.sh runs

Knobs (environment): MAX_EPOCHS, TRAIN_ROWS, TEST_ROWS (default: the full protocol), CHECKPOINT (1),
ARCHITECTURES (all five, comma-separated), RUN_SEQUENTIAL (1), GOAL_PACKED_S (45).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ALL = ("baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2")


# --- what the project's config says, without pydantic -------------------------------------------------------

def config_defaults(path: Path = REPO / "tasks" / "config.py") -> dict:
    """The literal defaults of PipelineConfig's fields (`name: type = Field(default, ...)` or `= default`)."""
    defaults: dict = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == "PipelineConfig":
            for stmt in node.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value):
                    continue
                value = stmt.value
                if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Field":
                    if not value.args:
                        continue
                    value = value.args[0]
                try:
                    defaults[stmt.target.id] = ast.literal_eval(value)
                except ValueError:
                    pass
    missing = {"batch_size", "max_epochs", "patience", "steps_per_execution", "eval_batch_size", "seed"} - set(defaults)
    if missing:
        raise SystemExit(f"{path}: could not read the defaults of {sorted(missing)} from PipelineConfig")
    return defaults


def env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# --- the parent: data once, then the two measurements ---------------------------------------------------------

def prepare_arrays(source: str, train_rows: int | None, test_rows: int | None, folder: Path) -> Path:
    """Read and verify the raw files once (tasks.data.dataset: IDX headers and SHA-256), keep the rows used."""
    from tasks.data.dataset import fetch_dataset

    import numpy as np

    raw = fetch_dataset(source)
    path = folder / "arrays.npz"
    np.savez(path, train_images=raw.train_images[:train_rows], train_labels=raw.train_labels[:train_rows],
             test_images=raw.test_images[:test_rows], test_labels=raw.test_labels[:test_rows])
    return path


def launch(mode: str, architectures: list[str], arrays: Path, results: Path, settings: dict, env: dict):
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--architectures", ",".join(architectures),
         "--arrays", str(arrays), "--results", str(results), "--settings", json.dumps(settings)],
        env=env, cwd=str(REPO))


def wait_all(processes: list) -> list[int]:
    return [p.wait() for p in processes]


XLA_MEMORY = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_ALLOCATOR")


def packed_env() -> dict:
    env = dict(os.environ)
    if not any(k in env for k in XLA_MEMORY):
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.18"  # five processes x 18% of the card, with room to spare
    return env


def run_packed(architectures, arrays, results, settings) -> float:
    env = packed_env()
    started = time.perf_counter()
    codes = wait_all([launch("project", [arch], arrays, results, settings, env) for arch in architectures])
    wall = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"packed run: a worker failed (exit codes {dict(zip(architectures, codes))})")
    return wall


def run_sequential(architectures, arrays, results, settings) -> float:
    started = time.perf_counter()
    code = launch("plain", architectures, arrays, results, settings, dict(os.environ)).wait()
    wall = time.perf_counter() - started
    if code:
        raise SystemExit(f"sequential run: the worker failed (exit code {code})")
    return wall


def read_results(folder: Path, mode: str) -> dict[str, dict]:
    return {json.loads(p.read_text())["architecture"]: json.loads(p.read_text())
            for p in sorted(folder.glob(f"{mode}-*.json"))}


def report(architectures, settings, packed_wall, packed, seq_wall, seq, goal_s, full_protocol) -> str:
    def cell(row, key, fmt):
        return format(row[key], fmt) if row and key in row else "-"

    lines = [
        f"# {len(architectures)} seed-protocol trainings on one GPU: packed ({len(architectures)} processes) "
        "vs one after another",
        "",
        f"Backend: {next(iter(packed.values()))['backend']} on {next(iter(packed.values()))['device']}; "
        f"keras {next(iter(packed.values()))['keras']}; Python {sys.version.split()[0]}",
        f"Settings: {settings['train_rows'] or 'all'} training rows, {settings['test_rows'] or 'all'} test rows, "
        f"batch {settings['batch_size']}, up to {settings['max_epochs']} epochs, EarlyStopping(val_accuracy, "
        f"patience={settings['patience']}); packed: steps_per_execution={settings['steps_per_execution']}, eval "
        f"batch {settings['eval_batch_size']}, per-epoch checkpoint {'on' if settings['checkpoint'] else 'off'}, "
        + ", ".join(f"{k}={v}" for k, v in packed_env().items() if k in XLA_MEMORY) + "; "
        "sequential: plain compile + fit(validation_split=...)",
        "",
        f"| | packed (project trainer, {len(architectures)} processes) | sequential (plain Keras, 1 process) "
        "| ratio seq/packed |",
        "|---|---:|---:|---:|",
        f"| wall s, process start to last exit | {packed_wall:.1f} | "
        + (f"{seq_wall:.1f} | {seq_wall / packed_wall:.2f} |" if seq_wall else "- | - |"),
        "",
        "| model | packed epochs | packed s/epoch | packed test acc % | packed process s "
        "| seq epochs | seq s/epoch | seq test acc % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arch in architectures:
        p, s = packed.get(arch), seq.get(arch)
        lines.append(f"| {arch} | {cell(p, 'epochs', 'd')} | {cell(p, 'seconds_per_epoch', '.2f')} "
                     f"| {cell(p, 'test_accuracy_pct', '.2f')} | {cell(p, 'process_seconds', '.1f')} "
                     f"| {cell(s, 'epochs', 'd')} | {cell(s, 'seconds_per_epoch', '.2f')} "
                     f"| {cell(s, 'test_accuracy_pct', '.2f')} |")
    verdict = "PASS" if packed_wall <= goal_s else "FAIL"
    scope = "" if full_protocol else " (reduced setting: the goal applies to the full protocol on the GPU only)"
    lines += ["", f"Goal: packed five <= {goal_s:.0f} s wall: {verdict}, {packed_wall:.1f} s{scope}. "
                  "Design section 9, H100: sequential plain 186 s; five processes 96 s, 64 s with "
                  "steps_per_execution=64."]
    return "\n".join(lines) + "\n"


def main_parent(args) -> None:
    defaults = config_defaults()
    architectures = [a for a in os.environ.get("ARCHITECTURES", ",".join(ALL)).split(",") if a]
    unknown = set(architectures) - set(ALL)
    if unknown:
        raise SystemExit(f"ARCHITECTURES: unknown {sorted(unknown)}; expected some of {list(ALL)}")
    settings = {
        "batch_size": defaults["batch_size"], "patience": defaults["patience"], "seed": defaults["seed"],
        "steps_per_execution": defaults["steps_per_execution"], "eval_batch_size": defaults["eval_batch_size"],
        # max_epochs' field default is empty (None): the 'full' preset fills it with the report's 100.
        "max_epochs": env_int("MAX_EPOCHS", defaults["max_epochs"] or 100),
        "train_rows": env_int("TRAIN_ROWS", None), "test_rows": env_int("TEST_ROWS", None),
        "checkpoint": env_int("CHECKPOINT", 1) == 1,
    }
    full_protocol = (settings["max_epochs"] == (defaults["max_epochs"] or 100) and not settings["train_rows"]
                     and not settings["test_rows"] and architectures == list(ALL))
    goal_s = float(os.environ.get("GOAL_PACKED_S", "45"))
    with tempfile.TemporaryDirectory(prefix="gpu-packed-") as work:
        work = Path(work)
        started = time.perf_counter()
        from tasks.errors import PipelineError

        try:
            arrays = prepare_arrays(args.data, settings["train_rows"], settings["test_rows"], work)
        except PipelineError as exc:
            raise SystemExit(f"gpu_packed: {exc}") from None
        print(f"data: {args.data} verified and loaded in {time.perf_counter() - started:.1f} s", flush=True)

        print(f"packed: {len(architectures)} processes at once ...", flush=True)
        packed_wall = run_packed(architectures, arrays, work, settings)
        print(f"packed: {packed_wall:.1f} s wall", flush=True)
        seq_wall = None
        if env_int("RUN_SEQUENTIAL", 1) == 1:
            print("sequential: one process, plain model.fit, one model after another ...", flush=True)
            seq_wall = run_sequential(architectures, arrays, work, settings)
            print(f"sequential: {seq_wall:.1f} s wall", flush=True)
        text = report(architectures, settings, packed_wall, read_results(work, "project"), seq_wall,
                      read_results(work, "plain"), goal_s, full_protocol)
    print()
    print(text)
    if args.report:
        Path(args.report).write_text(text)
        print("written to", args.report)


# --- the workers -----------------------------------------------------------------------------------------------

def model_input(images, input_shape):
    """As tasks.model.training.to_model_input: uint8 -> float32 in [0, 1], shaped as the model's Input."""
    import numpy as np

    return (images.astype(np.float32) / 255.0).reshape((-1, *input_shape))


def device_name() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}:{getattr(device, 'device_kind', device)}"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    return "unknown"


def epoch_timer(seconds: list[float], checkpoint_dir: Path | None, timed_by_caller: bool = False):
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Times each epoch; with a folder, saves the model there after it as the trial's checkpoint does.
        `timed_by_caller`: the caller sets `started` before it shuffles, as tasks.model.training does."""

        started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            if not timed_by_caller:
                self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if checkpoint_dir is not None:
                self.model.save(checkpoint_dir / "model.keras")
            seconds.append(time.perf_counter() - self.started)

    return EpochTimer()


def early_stopping_across_fits(patience: int):
    """EarlyStopping(val_accuracy) whose counters survive the one-epoch `fit` calls (Keras' own resets them
    at every `fit`), as tasks.model.training's ResumableEarlyStopping does."""
    import keras

    class EarlyStoppingAcrossFits(keras.callbacks.EarlyStopping):
        begun = False

        def on_train_begin(self, logs=None):
            if not self.begun:
                super().on_train_begin(logs)
                self.begun = True

    return EarlyStoppingAcrossFits(monitor="val_accuracy", patience=patience)


def train_project(arch: str, data, settings: dict, checkpoint_dir: Path | None) -> dict:
    """What tasks.model.training.train_trial does around model.fit, without Ray and the store."""
    import keras
    import numpy as np

    from tasks.model.architectures import ARCHITECTURES, build_model, compile_for_seed_protocol
    from tasks.model.protocol import shuffled_for_epoch

    keras.utils.set_random_seed(settings["seed"])
    model = build_model(arch)
    compile_for_seed_protocol(model, steps_per_execution=settings["steps_per_execution"])
    x = model_input(data["train_images"], model.input_shape[1:])
    y = np.eye(10, dtype=np.float32)[data["train_labels"]]
    split_at = int(math.floor(len(x) * (1.0 - ARCHITECTURES[arch].validation_split)))  # the LAST fraction validates
    seconds: list[float] = []
    val_accuracy: list[float] = []
    early_stopping, timer = early_stopping_across_fits(settings["patience"]), epoch_timer(seconds, checkpoint_dir, True)
    for epoch in range(settings["max_epochs"]):  # one fit per epoch: its own batch order (tasks.model.training.fit_epochs)
        timer.started = time.perf_counter()
        x_fit, y_fit = shuffled_for_epoch(settings["seed"], epoch, x[:split_at], y[:split_at])
        history = model.fit(
            x_fit, y_fit, validation_data=(x[split_at:], y[split_at:]), shuffle=False,
            batch_size=settings["batch_size"], validation_batch_size=settings["eval_batch_size"],
            initial_epoch=epoch, epochs=epoch + 1, verbose=0, callbacks=[early_stopping, timer])
        val_accuracy += history.history["val_accuracy"]
        if model.stop_training:
            break
    x_test = model_input(data["test_images"], model.input_shape[1:])
    predicted = model.predict(x_test, batch_size=settings["eval_batch_size"], verbose=0).argmax(axis=1)
    accuracy = float((predicted == data["test_labels"]).mean())
    return {"epochs": len(val_accuracy), "seconds": seconds, "test_accuracy_pct": 100 * accuracy,
            "best_val_accuracy_pct": 100 * max(val_accuracy)}


def train_plain(arch: str, data, settings: dict) -> dict:
    """The plain script a user would write: default compile, fit(validation_split=...), evaluate. Unseeded like
    the report's: a global seed would give fit(shuffle=True) the same batch order every epoch."""
    import keras

    from tasks.model.architectures import ARCHITECTURES, build_model

    model = build_model(arch)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = model_input(data["train_images"], model.input_shape[1:])
    y = keras.utils.to_categorical(data["train_labels"], 10)
    seconds: list[float] = []
    history = model.fit(
        x, y, validation_split=ARCHITECTURES[arch].validation_split, batch_size=settings["batch_size"],
        epochs=settings["max_epochs"], verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=settings["patience"]),
                   epoch_timer(seconds, None)])
    x_test = model_input(data["test_images"], model.input_shape[1:])
    _, accuracy = model.evaluate(x_test, keras.utils.to_categorical(data["test_labels"], 10), verbose=0)
    return {"epochs": len(history.history["loss"]), "seconds": seconds, "test_accuracy_pct": 100 * float(accuracy),
            "best_val_accuracy_pct": 100 * max(history.history["val_accuracy"])}


def main_worker(args) -> None:
    process_started = time.perf_counter()
    import keras
    import numpy as np

    settings = json.loads(args.settings)
    with np.load(args.arrays) as npz:
        data = {k: npz[k] for k in npz.files}
    device = device_name()
    for arch in args.architectures.split(","):
        if args.worker == "project":
            with tempfile.TemporaryDirectory(prefix=f"ckpt-{arch}-") as folder:
                row = train_project(arch, data, settings, Path(folder) if settings["checkpoint"] else None)
        else:
            row = train_plain(arch, data, settings)
        seconds = row.pop("seconds")
        row.update({
            "architecture": arch, "mode": args.worker, "backend": keras.backend.backend(), "device": device,
            "keras": keras.__version__,
            # median without the first epoch (tracing/compilation), when there is more than one
            "seconds_per_epoch": statistics.median(seconds[1:] if len(seconds) > 1 else seconds),
            "process_seconds": time.perf_counter() - process_started,
        })
        (Path(args.results) / f"{args.worker}-{arch}.json").write_text(json.dumps(row))
        print(f"  {args.worker} {arch}: {row['epochs']} epochs, {row['seconds_per_epoch']:.2f} s/epoch, "
              f"test accuracy {row['test_accuracy_pct']:.2f}% ({row['process_seconds']:.1f} s since process start)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=".data/fashion-mnist", help="folder with the four Fashion-MNIST .gz files")
    parser.add_argument("--report", help="also write the table to this file")
    parser.add_argument("--worker", choices=("project", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--architectures", help=argparse.SUPPRESS)
    parser.add_argument("--arrays", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        main_worker(args)
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
