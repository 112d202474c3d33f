"""Train one architecture on one dataset version: the code that runs inside a Ray Tune trial.

No Prefect here. The trainable reads one TrialSpec (tasks.model.spec) from Tune's config, imports the
deep-learning backend inside, reports and checkpoints once per epoch, resumes from its last checkpoint, and
(unless it is a search's trial) tests the model once and leaves its artifacts under runs/<run_id>/<folder>/.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.model.architectures import ARCHITECTURES, build_model
from tasks.errors import NO_SPACE_ERRNOS, CheckpointError, DiskFullError, PipelineError
from tasks.model.protocol import augmented, shuffled_for_epoch
from tasks.model.recipes import compile_with_recipe
from tasks.model.spec import TrialSpec
from tasks.runs.paired import OUTCOMES_FIELD, outcomes_record, rows_sha256
from tasks.keys import RunPaths
from tasks.data.shards import CLASS_NAMES, load_split
from tasks.data.store import Store, open_store_when_it_answers

if TYPE_CHECKING:
    from tasks.runs.lease import LeaseFence

HISTORY_FIELDS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss", "seconds")


# --- data ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialData:
    x_fit: np.ndarray
    y_fit: np.ndarray  # one-hot float32
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    test_labels: np.ndarray  # class ids


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(10, dtype=np.float32)[labels]


def seed_protocol_split(n_rows: int, validation_split: float) -> int:
    """Rows before this index train, the rest validate: the LAST fraction, exactly as Keras'
    `validation_split` takes it (before any shuffling), so the numbers compare with the report."""
    return int(math.floor(n_rows * (1.0 - validation_split)))


def to_model_input(images: np.ndarray, input_shape: tuple) -> np.ndarray:
    """uint8 pixels → float32 in [0, 1], shaped as the model's Input ((28, 28) or (28, 28, 1))."""
    return (images.astype(np.float32) / 255.0).reshape((-1, *input_shape))


SplitArrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 images, labels)


def load_dataset_arrays(store: Store, version: str, train_rows: int | None, test_rows: int | None,
                        manifest: dict | None = None) -> SplitArrays:
    """The rows a run trains and tests on, decoded once (the driver shares them with every trial)."""
    return {split: load_split(store, version, split, rows, manifest)[:2]
            for split, rows in (("train", train_rows), ("test", test_rows))}


def trial_data(arrays: SplitArrays, validation_split: float, input_shape: tuple) -> TrialData:
    """Fit and validation rows from the train split; the test rows if `arrays` has them (a search's trials don't)."""
    train_images, train_labels = arrays["train"]
    test_images, test_labels = arrays.get("test", (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)))
    x, y = to_model_input(train_images, input_shape), one_hot(train_labels)
    split_at = seed_protocol_split(len(x), validation_split)
    return TrialData(x[:split_at], y[:split_at], x[split_at:], y[split_at:],
                     to_model_input(test_images, input_shape), test_labels)


# --- backend and callbacks -----------------------------------------------------------------------

def configure_backend(cpus: float) -> None:
    """Before any TensorFlow op: GPU memory growth (ray-project/ray#6500) and as many
    threads as the trial's CPU share, so trials side by side don't oversubscribe cores.

    JAX (KERAS_BACKEND=jax, the GPU machine's backend): no preallocation, JAX's default being 75 % of the card at
    its first op, which trials sharing a GPU (gpus_per_trial 0.2) cannot all take. Read when JAX makes its device
    client, so set before the trial's first op; a caller's own setting wins."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if backend != "tensorflow":
        return
    import tensorflow as tf

    try:
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
        threads = max(1, int(cpus))
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already initialised in this process (a reused worker): keep its settings


def _callbacks(patience: int, early_stopping_state: dict | None, on_epoch: Any) -> tuple[Any, Any]:
    """(early stopping, epoch report), made once and passed to every one-epoch `fit` call."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose counters survive a restart from a checkpoint and the one-epoch `fit` calls
        (Keras' own resets them in on_train_begin, i.e. at every `fit`)."""

        def __init__(self, carried: dict | None):
            super().__init__(monitor="val_accuracy", patience=patience)
            self.carried = carried

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.carried:
                self.wait = self.carried["wait"]
                self.best = self.carried["best"]
                self.best_epoch = self.carried["best_epoch"]

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            self.carried = self.state()

        def state(self) -> dict:
            return {"wait": int(self.wait), "best": None if self.best is None else float(self.best),
                    "best_epoch": int(self.best_epoch),
                    "stopped": bool(self.model.stop_training)}

    class EpochReport(keras.callbacks.Callback):
        """Hands each epoch's row to `on_epoch` (report + checkpoint). The trainer sets `started` before it
        shuffles, so an epoch's seconds include its shuffle and its `fit` call's set-up."""

        started = 0.0

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in HISTORY_FIELDS[1:5]},
                   "seconds": time.perf_counter() - self.started}
            on_epoch(row, early_stopping.state())

    early_stopping = ResumableEarlyStopping(early_stopping_state)
    return early_stopping, EpochReport()


def fit_epochs(model, data: TrialData, spec: TrialSpec, first_epoch: int,
               early_stopping_state: dict | None, on_epoch: Any) -> None:
    """Epochs `first_epoch` .. recipe.epochs-1 (or until early stopping), each one `fit` call on the fit rows in
    that epoch's own order (tasks.model.protocol), augmented if the recipe says so, with `shuffle=False` so Keras keeps
    that order.

    Why one `fit` per epoch: Keras draws its shuffle inside `fit`, the same order every epoch once seeded. A
    keras.utils.PyDataset reshuffling in on_epoch_end was measured slower (Python per batch): mlp1, 48,000 fit
    rows, one CPU thread: 0.90 s/epoch, against 0.84 s here and 0.73 s for one seeded `fit`. The ~0.1 s is the
    copy of the rows (~35 ms) and `fit`'s set-up; on cnn2 it is within noise (1.81 vs 1.75 s, 10,800 rows).
    """
    recipe = spec.recipe
    early_stopping, report = _callbacks(spec.patience, early_stopping_state, on_epoch)
    for epoch in range(first_epoch, recipe.epochs):
        report.started = time.perf_counter()
        x_fit, y_fit = shuffled_for_epoch(spec.seed, epoch, data.x_fit, data.y_fit)
        x_fit = augmented(x_fit, spec.seed, epoch, recipe.augmentation)
        model.fit(x_fit, y_fit, validation_data=(data.x_val, data.y_val), shuffle=False,
                  batch_size=recipe.batch_size, validation_batch_size=spec.eval_batch_size,
                  initial_epoch=epoch, epochs=epoch + 1, verbose=0,
                  callbacks=[early_stopping, report])  # early stopping first: the report saves its updated state
        if model.stop_training:  # set by early stopping; the next `fit` would clear it
            return


# --- random-number state the .keras file leaves out ------------------------------------------------------

def rng_state(model) -> dict[str, Any]:
    """The random state a resumed trial needs and `model.save` does not keep (design §10): each layer's
    SeedGenerator, and Keras' global SeedGenerator if anything made one (seed=None random ops)."""
    from tasks.model.keras_compat import global_seed_generator_if_made, layers_random_generators

    global_generator = global_seed_generator_if_made()
    return {"layers": {key: np.asarray(g.state.value).tolist() for key, g in layers_random_generators(model).items()},
            "global": None if global_generator is None else np.asarray(global_generator.state.value).tolist()}


def restore_rng_state(model, state: dict[str, Any]) -> None:
    """Put back what rng_state saved, onto a model loaded from the same checkpoint; ValueError if the checkpoint's
    generators are not the model's."""
    from tasks.model.keras_compat import global_seed_generator, layers_random_generators

    generators = layers_random_generators(model)
    if set(generators) != set(state["layers"]):
        raise ValueError(f"its seed generators {sorted(state['layers'])} are not the model's {sorted(generators)}")
    for key, generator in generators.items():
        generator.state.assign(np.asarray(state["layers"][key], dtype=generator.state.dtype))
    if state["global"] is not None:
        generator = global_seed_generator()
        generator.state.assign(np.asarray(state["global"], dtype=generator.state.dtype))


# --- evaluation and artifacts ----------------------------------------------------------------------

def tested_rows_sha256(data: TrialData) -> str:
    """The identity of the rows a model was tested on (tasks.runs.paired.rows_sha256), from the model's input: the
    pixels were divided by 255 in float32, and rint(x * 255) gives the same uint8 back, exactly."""
    pixels = np.rint(data.x_test.reshape(len(data.x_test), -1) * 255).astype(np.uint8)
    return rows_sha256(pixels, data.test_labels)


def evaluate(model, data: TrialData, batch_size: int = 1024, label_smoothing: float = 0.0) -> dict[str, Any]:
    """Test accuracy and loss from the model's predictions, per-class accuracy, confusion matrix, and which test
    rows it got right (so two models on the same rows can be compared as pairs: tasks.runs.paired).

    Both losses: `test_loss` is plain cross-entropy; `test_loss_smoothed` is the loss the model trained on (with
    the recipe's `label_smoothing`, as Keras computes it), the one history.csv's loss and val_loss are."""
    probabilities = model.predict(data.x_test, batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    labels = data.test_labels.astype(np.int64)
    matrix = np.bincount(labels * 10 + predicted, minlength=100).reshape(10, 10)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    spread = np.log(np.clip(probabilities, 1e-7, 1.0)).mean(axis=1)  # the smoothed targets' uniform part
    return {
        "test_accuracy": float((predicted == labels).mean()),
        "test_loss": float(-np.log(picked).mean()),
        "label_smoothing": label_smoothing,  # of the training loss: history.csv's loss and val_loss
        "test_loss_smoothed": float(-((1 - label_smoothing) * np.log(picked) + label_smoothing * spread).mean()),
        "per_class_accuracy": dict(zip(CLASS_NAMES, (np.diag(matrix) / np.maximum(matrix.sum(1), 1)).round(4).tolist())),
        "confusion_matrix": matrix.tolist(),
        OUTCOMES_FIELD: outcomes_record(predicted == labels, tested_rows_sha256(data)),
    }


def model_bytes(model) -> bytes:
    """The .keras file's bytes: Keras saves to a path, so through a temporary folder (TMPDIR)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / MODEL_FILE
        with space_checked("to write the model before publishing it", folder, TEMP_HINT):
            model.save(path)
        return path.read_bytes()


def history_csv(history: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue().encode()


def publish_artifacts(store: Store, prefix: str, model, history: list[dict], metrics: dict, title: str) -> None:
    """Model, history and plots first, metrics.json last: its presence means the set is complete."""
    from tasks.runs.plots import confusion_png, curves_png

    blob = model_bytes(model)
    metrics["model_sha256"] = hashlib.sha256(blob).hexdigest()
    store.put_bytes(f"{prefix}/model.keras", blob)
    store.put_bytes(f"{prefix}/history.csv", history_csv(history))
    store.put_bytes(f"{prefix}/curves.png", curves_png(history, title))
    store.put_bytes(f"{prefix}/confusion.png", confusion_png(np.array(metrics["confusion_matrix"]), CLASS_NAMES, title))
    store.put_bytes(f"{prefix}/metrics.json", json.dumps(metrics, indent=2).encode())


# --- the trainable ---------------------------------------------------------------------------------

MODEL_FILE, STATE_FILE = "model.keras", "state.json"
TEMP_HINT = "free space there, or point TMPDIR at a disk with room (trials write each checkpoint there first)"


@contextmanager
def space_checked(action: str, where: Path | str, hint: str) -> Iterator[None]:
    """An out-of-space OSError inside the block becomes one DiskFullError line saying where and what to do (Keras
    and pyarrow give a bare "[Errno 28]" with no path, deep in a trial's traceback); other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE_ERRNOS:
            raise
        raise DiskFullError(f"no space left {action} at {where} ({exc.strerror or exc}: the disk is full, or a quota "
                            f"or file-size limit); {hint}") from None


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_checkpoint(folder: Path, model, history: list[dict], early_stopping: dict) -> None:
    """model.keras holds the weights and Adam's state (iterations included); state.json the rest.

    state.json is written last and records model.keras's size and sha256: a checkpoint is complete exactly when
    its state.json parses and matches its model.keras, so a save (or Tune's copy) cut short is detected on load
    instead of surfacing as a Keras "File not found" or a zip error. Out of space: DiskFullError naming the folder.
    """
    with space_checked("to write a checkpoint", folder, TEMP_HINT):
        model.save(folder / MODEL_FILE)
        manifest = {"bytes": (folder / MODEL_FILE).stat().st_size, "sha256": _sha256(folder / MODEL_FILE)}
        state = {"history": history, "early_stopping": early_stopping, "rng": rng_state(model),
                 "model_file": manifest}
        (folder / STATE_FILE).write_text(json.dumps(state))


def _damaged(folder: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {folder} is incomplete or damaged: {problem} (a save or copy cut short, e.g. "
                           f"by a full disk); it cannot be resumed from: delete it to train that trial again from "
                           f"its first epoch")


def read_checkpoint_state(folder: Path) -> dict:
    """state.json, checked against model.keras; CheckpointError naming the folder and the fault otherwise."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        raise _damaged(folder, f"{STATE_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(folder, f"{STATE_FILE} is not readable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get("history"), list) or "early_stopping" not in state:
        raise _damaged(folder, f"{STATE_FILE} lacks its 'history' and 'early_stopping' fields")
    model_path, expected = folder / MODEL_FILE, state.get("model_file")
    if not model_path.is_file():
        raise _damaged(folder, f"{MODEL_FILE} is missing")
    if expected is not None:  # checkpoints written before the manifest resume unchecked (and load or fail below)
        size = model_path.stat().st_size
        if size != expected["bytes"]:
            raise _damaged(folder, f"{MODEL_FILE} has {size:,} bytes, {STATE_FILE} recorded {expected['bytes']:,}")
        if _sha256(model_path) != expected["sha256"]:
            raise _damaged(folder, f"{MODEL_FILE}'s sha256 differs from the one {STATE_FILE} recorded")
    return state


def load_checkpoint(folder: Path) -> tuple[Any, list[dict], dict | None]:
    """The model as it was after the checkpoint's last epoch, down to its dropout masks' random state."""
    import keras

    state = read_checkpoint_state(folder)
    try:
        model = keras.saving.load_model(folder / MODEL_FILE, safe_mode=True)
    except (OSError, EOFError, ValueError) as exc:  # a legacy checkpoint's torn file: Keras says "File not found"
        raise _damaged(folder, f"{MODEL_FILE} does not load ({type(exc).__name__}: "
                               f"{(str(exc).splitlines() or [''])[0][:200]})") from None
    if "rng" in state:  # checkpoints written before it was saved resume too, just not bit-identically
        try:
            restore_rng_state(model, state["rng"])
        except (ValueError, KeyError, TypeError) as exc:  # a state.json from another model, or edited
            raise _damaged(folder, f"{STATE_FILE}'s random state does not fit {MODEL_FILE} ({exc})") from None
    return model, state["history"], state["early_stopping"]


def _restore_checkpoint(checkpoint) -> tuple[Any, list[dict], dict | None]:
    with checkpoint.as_directory() as folder:
        return load_checkpoint(Path(folder))


def starting_state(spec: TrialSpec, checkpoint, fit_rows: int = 0) -> tuple[Any, list[dict], dict | None]:
    """(model, history, early-stopping state) from Tune's checkpoint, else a fresh model.

    A damaged checkpoint is not the end of the trial: Tune keeps one checkpoint (num_to_keep=1), so there is no
    earlier one, and the seed protocol makes a fresh start end in the same model; it costs time only. The reason
    goes to the trial's log (Ray's worker logs), and the run's metrics show resumed_from_epoch 0."""
    import keras

    keras.utils.set_random_seed(spec.seed)
    if checkpoint:
        try:
            return _restore_checkpoint(checkpoint)
        except CheckpointError as exc:
            print(f"{spec.label}: {exc}; training again from the first epoch instead", file=sys.stderr, flush=True)
            keras.utils.set_random_seed(spec.seed)  # loading may have drawn from the seeded generators
    model = build_model(spec.architecture, dropout=spec.recipe.dropout)
    compile_with_recipe(model, spec.recipe, fit_rows, steps_per_execution=spec.steps_per_execution)
    return model, [], None


def summarize(spec: TrialSpec, model, history: list[dict], data: TrialData, resumed_from: int,
              attempt_seconds: float) -> dict[str, Any]:
    """Everything metrics.json records about one trained architecture."""
    import keras

    best = max(history, key=lambda row: row["val_accuracy"])
    return {
        "architecture": spec.architecture,
        "report_name": ARCHITECTURES[spec.architecture].report_name,
        "params": model.count_params(),
        "epochs": len(history),
        "resumed_from_epoch": resumed_from,
        "train_accuracy": history[-1]["accuracy"],  # the last epoch's, as the report gives it
        "best_val_accuracy": best["val_accuracy"],
        "best_epoch": best["epoch"],
        "final_val_accuracy": history[-1]["val_accuracy"],  # the model tested is this epoch's (no best-weight restore)
        **evaluate(model, data, spec.eval_batch_size, spec.recipe.label_smoothing),
        "seconds_per_epoch": float(np.median([row["seconds"] for row in history])),
        "train_seconds": float(sum(row["seconds"] for row in history)),  # all attempts, epochs only
        "attempt_seconds": attempt_seconds,  # this attempt: epochs and evaluation
        "rows": {"fit": len(data.x_fit), "validation": len(data.x_val), "test": len(data.x_test)},
        "dataset_version": spec.dataset_version,
        "backend": keras.backend.backend(),
    }


def report_with_checkpoint(model, history: list[dict], early_stopping: dict, result: dict, store: Store,
                           trial_prefix: str) -> None:
    """Save a checkpoint of the epoch just trained and hand it to Tune with the epoch's result. A copy into the
    store cut short (a full disk, the store gone) leaves no torn checkpoint behind for Tune or a resume to read."""
    from ray import tune

    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(Path(folder), model, history, early_stopping)
        # Tune copies the folder into the run's storage inside report, in this thread.
        try:
            with space_checked("to copy a checkpoint into the run's storage", store.url_for(trial_prefix),
                               "free space there, or choose another --store"):
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
        except Exception:
            remove_torn_checkpoints(store, trial_prefix)
            raise


def remove_torn_checkpoints(store: Store, trial_prefix: str) -> list[str]:
    """Delete every checkpoint folder of the trial that a copy left incomplete (state.json or model.keras missing,
    or model.keras not the size state.json records); the folders removed. Best effort: a store that does not answer
    keeps them, and a resume still refuses them (read_checkpoint_state) and trains that trial from its first epoch.
    Deleting also frees the space Tune needs to record the trial's error (else its error.pkl is written empty)."""
    try:
        folders: dict[str, dict[str, str]] = {}
        for key in store.list_keys(f"{trial_prefix}/"):
            folder, _, name = key[len(trial_prefix) + 1:].partition("/")
            if folder.startswith("checkpoint_") and name:
                folders.setdefault(folder, {})[name] = key
        torn = [folder for folder, files in sorted(folders.items()) if not _checkpoint_complete(store, files)]
        for folder in torn:
            for key in folders[folder].values():
                store.delete(key)
    except PipelineError:
        return []
    return torn


def _checkpoint_complete(store: Store, files: dict[str, str]) -> bool:
    if STATE_FILE not in files or MODEL_FILE not in files:
        return False
    try:
        state = json.loads(store.get_bytes(files[STATE_FILE]))
    except ValueError:
        return False
    expected = (state.get("model_file") or {}).get("bytes") if isinstance(state, dict) else None
    return expected is None or len(store.get_bytes(files[MODEL_FILE])) == expected


def train_trial(config: dict, arrays: SplitArrays | None = None, fence: LeaseFence | None = None) -> None:
    """Ray Tune function trainable: one TrialSpec (tasks.model.spec), one report and checkpoint per epoch; then,
    for a run's trial, the test rows once and the artifacts, published under runs/<run_id>/<folder>/.

    `arrays` are the decoded rows, shared through Ray's object store (tune.with_parameters): read-only and
    zero-copy for every trial on a node; without them the trial reads the shards. A search's trial (publish=False)
    gets the training rows only and never reads the test rows: its winner is chosen on validation accuracy, and
    tested once when it is retrained. Its last epoch's report says `finished`, so a trial that ends without it was
    stopped by the scheduler (ASHA) or the time budget.
    """
    from ray import tune

    spec = TrialSpec.from_tune(config)
    configure_backend(spec.cpus_per_trial)
    store = open_store_when_it_answers(spec.store, spec.s3_endpoint, spec.store_wait_s)  # a restart in an outage
    prefix = RunPaths(spec.run_id).model_prefix(spec.folder)
    if spec.publish and store.exists(f"{prefix}/metrics.json"):  # finished in an earlier attempt: nothing to redo
        tune.report({**json.loads(store.get_bytes(f"{prefix}/metrics.json")), "finished": True})
        return

    if arrays is None:
        arrays = {"train": load_split(store, spec.dataset_version, "train", spec.train_rows)[:2]}
        if spec.publish:
            arrays["test"] = load_split(store, spec.dataset_version, "test", spec.test_rows)[:2]
    if not spec.publish:
        arrays = {"train": arrays["train"]}  # the test rows play no part in a search
    import keras

    keras.backend.clear_session()  # Tune may reuse a trial's process for the next: drop the last trial's graphs
    fit_rows = seed_protocol_split(len(arrays["train"][0]), ARCHITECTURES[spec.architecture].validation_split)
    model, history, early_stopping_state = starting_state(spec, tune.get_checkpoint(), fit_rows)
    data = trial_data(arrays, ARCHITECTURES[spec.architecture].validation_split, model.input_shape[1:])
    trial_folder = spec.tune_dirname(tune.get_context().get_trial_id())  # as make_tuner names it
    trial_prefix = f"{RunPaths(spec.run_id).experiment(spec.experiment)}/{trial_folder}"

    def on_epoch(row: dict, early_stopping: dict) -> None:
        history.append(row)
        last = early_stopping["stopped"] or row["epoch"] >= spec.recipe.epochs
        best = max(r["val_accuracy"] for r in history)
        if fence is not None:
            fence.check(store)  # no checkpoint into a run another process took over
        report_with_checkpoint(model, history, early_stopping,
                               {**row, "best_val_accuracy": best, "finished": last and not spec.publish}, store,
                               trial_prefix)

    started = time.perf_counter()
    resumed_from = len(history)
    if not (early_stopping_state or {}).get("stopped"):  # a trial that stopped early resumes to publish only
        fit_epochs(model, data, spec, len(history), early_stopping_state, on_epoch)
    if not spec.publish:
        if history and len(history) == resumed_from:  # resumed after its last epoch (killed before Tune saved it)
            tune.report({**history[-1], "best_val_accuracy": max(r["val_accuracy"] for r in history),
                         "finished": True})  # its last result, as a finish: else Tune keeps the one before it
        return

    metrics = summarize(spec, model, history, data, resumed_from, time.perf_counter() - started)
    metrics.update(seed=spec.seed, recipe_name=spec.recipe_name, recipe=spec.recipe.model_dump())
    architecture = ARCHITECTURES[spec.architecture]
    if fence is not None:
        fence.check(store)  # the run is still its holder's (no takeover): else LeaseLost, and nothing is written
    publish_artifacts(store, prefix, model, history, metrics, f"{architecture.report_name} ({architecture.key})")
    tune.report({**metrics, "epoch": len(history), "finished": True})
