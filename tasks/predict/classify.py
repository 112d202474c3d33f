"""`fmnist predict`'s model side: which published model (choose_model), loaded only through
tasks.model.artifacts (.keras, SHA-256 checked against its record, safe_mode); an array → class probabilities
(classify); probabilities → lines or one JSON document (prediction_lines, prediction_json).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.data.shards import CLASS_NAMES
from tasks.errors import PipelineError
from tasks.keys import CHAMPION_KEY

DEFAULT_BATCH = 1024


class ModelChoiceError(PipelineError):
    """--model names no published model (no champion yet, no such run or architecture, a malformed choice)."""


# --- the model -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRef:
    """A published model: where it is, the hash its record gives, and how the user named it."""

    run_id: str
    architecture: str
    model_key: str
    sha256: str
    test_accuracy: float | None
    chosen_as: str
    recipe: str = ""  # a champion's recipe family (tasks.runs.champion.recipe_of); '' for a run's model

    def describe(self) -> str:
        accuracy = f", test accuracy {100 * self.test_accuracy:.2f}%" if self.test_accuracy is not None else ""
        recipe = f" (recipe {self.recipe})" if self.recipe else ""
        return f"{self.architecture}{recipe} of run {self.run_id} ({self.chosen_as}{accuracy})"


MODEL_CHOICES = ("'champion' (the overall champion, the default), 'champion:ARCH' (an architecture's champion, of "
                 "either recipe family), 'champion:ARCH/FAMILY' (FAMILY report or searched) or RUN_ID/ARCH")


def _from_entry(store, entry: dict, chosen_as: str) -> ModelRef:
    from tasks.runs.champion import recipe_of

    if not entry.get("model_sha256"):
        raise ModelChoiceError(f"{store.url_for(CHAMPION_KEY)}: the {chosen_as} entry records no model_sha256; "
                               "a model is loaded only when its hash can be checked: choose it as RUN_ID/ARCH")
    return ModelRef(entry["run_id"], entry["architecture"], entry["model_key"], entry["model_sha256"],
                    entry.get("test_accuracy"), chosen_as, recipe_of(entry))


def _champion(store, architecture: str | None) -> ModelRef:
    from tasks.runs.champion import read_champions

    pointer = read_champions(store)
    hint = "pick a run's model with --model RUN_ID/ARCH (`fmnist runs` lists them)"
    if not pointer or not pointer.get("overall"):
        raise ModelChoiceError(f"no champion yet in {store.uri} (no models/champion.json): only models evaluated on "
                               f"all 10,000 test rows are promoted, so a quick run never is; {hint}")
    if architecture is None:
        return _from_entry(store, pointer["overall"], "overall champion")
    slots = pointer.get("architectures", {})
    slot = _slot_for(slots, architecture)
    if slot is None:
        raise ModelChoiceError(f"--model champion:{architecture}: no champion for {architecture!r} in {store.uri}; "
                               f"champions exist for {sorted(slots)}; or {hint}")
    return _from_entry(store, slots[slot], f"champion of {slot}")


def _slot_for(slots: dict[str, dict], choice: str) -> str | None:
    """'cnn2/searched' names a slot; 'cnn2' the architecture's champion of either recipe family: the one with the
    better validation accuracy (each champion's test accuracy is the lucky best of many looks at the test rows, so
    it does not choose), the report's recipe on a tie or where an entry predates recording it."""
    if "/" in choice:
        return choice if choice in slots else None
    mine = [slot for slot, entry in slots.items() if entry["architecture"] == choice]
    return max(mine, key=lambda slot: (slots[slot].get("val_accuracy") or 0.0, slots[slot].get("family") == "report"),
               default=None)


def _run_model(store, run_id: str, architecture: str) -> ModelRef:
    from tasks.keys import RunPaths

    paths = RunPaths(run_id)
    data, _ = store.read_versioned(paths.metrics(architecture))
    if data is None:
        if not store.exists(paths.config):
            raise ModelChoiceError(f"--model {run_id}/{architecture}: no run {run_id!r} in {store.uri} (no "
                                   f"{paths.config}); `fmnist runs --store {store.uri}` lists the runs")
        raise ModelChoiceError(f"--model {run_id}/{architecture}: run {run_id} has no finished {architecture!r} model "
                               f"(expected {store.url_for(paths.metrics(architecture))}, found none); "
                               f"`fmnist runs show {run_id}` says which models finished")
    metrics = json.loads(data)
    return ModelRef(run_id, architecture, paths.model(architecture), metrics.get("model_sha256") or "",
                    metrics.get("test_accuracy"), f"run {run_id}")


def choose_model(store, choice: str) -> ModelRef:
    """What --model names: 'champion' / 'overall', 'champion:ARCH', or 'RUN_ID/ARCH'."""
    if choice in ("champion", "overall"):
        return _champion(store, None)
    if choice.startswith("champion:") and len(choice) > len("champion:"):
        return _champion(store, choice.split(":", 1)[1])
    parts = choice.split("/")
    if len(parts) == 2 and all(parts) and all(p not in (".", "..") for p in parts):
        return _run_model(store, *parts)
    raise ModelChoiceError(f"--model {choice!r}: expected {MODEL_CHOICES}")


def load_model(store, ref: ModelRef):
    """The model, only through the project's safe loader: .keras, SHA-256 against the record, safe_mode."""
    from tasks.model.artifacts import load_published_model
    from tasks.data.store import MissingKey

    try:
        return load_published_model(store, ref.model_key, ref.sha256)
    except MissingKey:
        raise ModelChoiceError(f"{store.url_for(ref.model_key)}: no such object, though the {ref.chosen_as} record "
                               "names it (deleted, or the store was copied without it); restore it, or choose another "
                               "--model (`fmnist runs` lists the runs)") from None


# --- classifying --------------------------------------------------------------------------------------------

def classify(model, pixels: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """(N, 10) class probabilities, in batches of `batch_size` rows through the model's compiled predict step
    (model.predict's default is 32 rows: for small models most of its time is per-batch overhead)."""
    shaped = pixels.reshape((-1, *model.input_shape[1:]))
    if len(shaped) == 0:
        return np.zeros((0, len(CLASS_NAMES)), np.float32)
    return model.predict(shaped, batch_size=batch_size, verbose=0)


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    source: str

    @property
    def value(self) -> float:
        return self.correct / self.total

    @property
    def standard_error(self) -> float:
        """The accuracy's standard error on this many images: sqrt(p (1 - p) / n)."""
        return math.sqrt(self.value * (1 - self.value) / self.total)

    def line(self) -> str:
        return (f"accuracy: {100 * self.value:.2f}% ({self.correct:,} of {self.total:,} correct, standard error "
                f"{100 * self.standard_error:.2f} points) against {self.source}")


def accuracy(probabilities: np.ndarray, labels: np.ndarray | None, source: str) -> Accuracy | None:
    if labels is None or len(labels) == 0:
        return None
    return Accuracy(int((probabilities.argmax(axis=1) == labels).sum()), len(labels), source)


def _top(row: np.ndarray, k: int) -> list[tuple[str, float]]:
    order = np.argsort(-row, kind="stable")[:k]
    return [(CLASS_NAMES[i], float(row[i])) for i in order]


def prediction_lines(names: list[str], probabilities: np.ndarray, top: int = 1,
                     labels: np.ndarray | None = None) -> list[str]:
    """One tab-separated line per image: name, then `top` pairs of class and probability, then the label if known."""
    lines = []
    for i, (name, row) in enumerate(zip(names, probabilities)):
        fields = [name] + [f"{cls}\t{p:.4f}" for cls, p in _top(row, top)]
        if labels is not None:
            right = "right" if int(row.argmax()) == int(labels[i]) else "wrong"
            fields.append(f"label {CLASS_NAMES[int(labels[i])]} ({right})")
        lines.append("\t".join(fields))
    return lines


def prediction_json(names: list[str], probabilities: np.ndarray, ref: ModelRef, top: int = 1,
                    labels: np.ndarray | None = None, score: Accuracy | None = None) -> dict[str, Any]:
    """One JSON document: the model, a record per image, and the accuracy when labels were given."""
    predictions = []
    for i, (name, row) in enumerate(zip(names, probabilities)):
        best = int(row.argmax())
        record: dict[str, Any] = {"input": name, "class": CLASS_NAMES[best], "class_index": best,
                                  "probability": float(row[best]),
                                  "top": [{"class": c, "probability": p} for c, p in _top(row, top)]}
        if labels is not None:
            record["label"] = CLASS_NAMES[int(labels[i])]
            record["label_index"] = int(labels[i])
        predictions.append(record)
    return {
        "model": {"run_id": ref.run_id, "architecture": ref.architecture, "model_key": ref.model_key,
                  "sha256": ref.sha256, "test_accuracy": ref.test_accuracy, "chosen_as": ref.chosen_as,
                  "recipe": ref.recipe or None},
        "classes": list(CLASS_NAMES),
        "predictions": predictions,
        "accuracy": None if score is None else {"value": score.value, "correct": score.correct, "total": score.total,
                                                "standard_error": score.standard_error, "labels": score.source},
    }
