"""`fmnist predict`: images in, Fashion-MNIST classes out, from a published model loaded only through
tasks.artifacts (.keras, SHA-256 checked against its record, safe_mode).

Three steps, each a plain function: inputs → one (N, 28, 28) float32 array in [0, 1] (load_inputs); array →
class probabilities (classify); probabilities → lines or one JSON document (prediction_lines, prediction_json).

How a picture becomes a Fashion-MNIST image (fashion_mnist_pixels), after Zalando's recipe for the dataset
(github.com/zalandoresearch/fashion-mnist, "Get the data"): grayscale; the product made bright on a dark
background (Fashion-MNIST is white-on-black: Zalando negated their white-background photos); the edges that
are within 5% of the background's colour trimmed; the longest side resized to 28 and the product centred on a
black 28 x 28 canvas. An image that is already 28 x 28 is taken pixel for pixel (only the inversion rule
applies): it is in the dataset's form, and trimming would move the product off the dataset's centring.
Not copied from the recipe: its sharpening step (a Gaussian unsharp mask); the resize is Pillow's Lanczos,
which filters before subsampling where the recipe skips rows and columns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tasks.errors import DatasetError, PipelineError
from tasks.shards import CLASS_NAMES

SIDE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIX = ".npy"
Invert = Literal["auto", "yes", "no"]
# --invert auto: invert when the outermost ring of pixels is brighter than mid-gray. Fashion-MNIST's own images
# never are (the brightest ring mean among all 70,000 is 108 of 255); a product photographed on white is.
# Comparing the ring with the centre instead would invert 10 of the 10,000 test images (wide products).
MID_GRAY = 127.5
TRIM_TOLERANCE = 0.05 * 255  # the recipe's 5% distance from the background colour
DEFAULT_BATCH = 1024


class PredictInputError(PipelineError):
    """A file or folder given to `fmnist predict` that is not something it can classify."""


class ModelChoiceError(PipelineError):
    """--model names no published model (no champion yet, no such run or architecture, a malformed choice)."""


WHAT_IS_READ = "a PNG or JPEG image, a folder of them, a .npy array (N x 28 x 28 or 28 x 28) or an IDX images file (.gz)"


# --- inputs ----------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """Everything to classify, in the order given (a folder's images sorted by name), with a name per image."""

    names: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)  # float32 (n, 28, 28) in [0, 1], one per source
    labels: list[np.ndarray | None] = field(default_factory=list)  # per source: labels that came with it, if any
    label_sources: list[str] = field(default_factory=list)

    def add(self, names: list[str], pixels: np.ndarray, labels: np.ndarray | None = None, label_source: str = "") -> None:
        self.names.extend(names)
        self.arrays.append(pixels)
        self.labels.append(labels)
        if label_source:
            self.label_sources.append(label_source)

    def pixels(self) -> np.ndarray:
        return np.concatenate(self.arrays) if self.arrays else np.zeros((0, SIDE, SIDE), np.float32)

    def own_labels(self) -> np.ndarray | None:
        """The labels every source brought (IDX files with their labels file beside them), else None."""
        if not self.labels or any(labels is None for labels in self.labels):
            return None
        return np.concatenate(self.labels)  # type: ignore[arg-type]


def _unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as the models were trained on them: float32 / 255 (the same operation as training's input)."""
    return pixels.astype(np.float32) / 255.0


def should_invert(gray: np.ndarray, invert: Invert) -> bool:
    if invert != "auto":
        return invert == "yes"
    ring = np.concatenate([gray[0, :], gray[-1, :], gray[1:-1, 0], gray[1:-1, -1]])
    return float(ring.mean()) > MID_GRAY


def _trim_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels farther than 5% from the background (the ring's median colour);
    the whole image when nothing is."""
    ring = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    background = float(np.median(ring))
    rows, cols = np.nonzero(np.abs(gray.astype(np.float32) - background) > TRIM_TOLERANCE)
    if rows.size == 0:
        return 0, gray.shape[0], 0, gray.shape[1]
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def fashion_mnist_pixels(gray: np.ndarray, invert: Invert = "auto") -> np.ndarray:
    """A uint8 grayscale picture of any size as a 28 x 28 Fashion-MNIST image (the rule in the module docstring)."""
    from PIL import Image

    if should_invert(gray, invert):
        gray = 255 - gray
    if gray.shape == (SIDE, SIDE):
        return gray
    top, bottom, left, right = _trim_box(gray)
    product = gray[top:bottom, left:right]
    height, width = product.shape
    scale = SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(product).resize(size, Image.Resampling.LANCZOS))
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    y, x = (SIDE - resized.shape[0]) // 2, (SIDE - resized.shape[1]) // 2
    canvas[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return canvas


def _grayscale(image) -> np.ndarray:
    """A Pillow image as uint8 grayscale: EXIF rotation applied, transparency laid on white (a cut-out product
    then reads as one on a white background), 16-bit and float images scaled, not clipped."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return (np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).round().astype(np.uint8)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        return (values * scale).clip(0, 255).round().astype(np.uint8)
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image.convert("L"))


def load_image(path: Path, invert: Invert) -> np.ndarray:
    """One image file as a uint8 28 x 28 Fashion-MNIST image; PredictInputError when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            gray = _grayscale(image)
    except Image.DecompressionBombError as exc:  # Pillow's guard: far more pixels than any photo of a product
        raise PredictInputError(f"{path}: refused by Pillow as a decompression bomb ({exc}); expected a photo of at "
                                "most about 89 megapixels: scale it down first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        with open(path, "rb") as handle:
            head = handle.read(16)
        raise PredictInputError(f"{path}: not an image Pillow can read ({type(exc).__name__}); expected {WHAT_IS_READ}, "
                                f"found {path.stat().st_size:,} bytes starting {head!r}; give a PNG or JPEG file") from None
    if min(gray.shape) < 1:
        raise PredictInputError(f"{path}: an image of {gray.shape[1]} x {gray.shape[0]} pixels; expected at least 1 x 1")
    return fashion_mnist_pixels(gray, invert)


def _float_pixels(where: str, array: np.ndarray) -> np.ndarray:
    """An array's pixels as float32 in [0, 1]: uint8 divided by 255; floats whose maximum is at most 1 taken as
    [0, 1] already, others as 0-255; anything else refused by name."""
    if array.dtype == np.uint8:
        return _unit_float(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise PredictInputError(f"{where}: array of dtype {array.dtype}; expected uint8 pixels 0-255 or floats "
                                "in [0, 1] or [0, 255]")
    values = array.astype(np.float32)
    if values.size and not np.isfinite(values).all():
        raise PredictInputError(f"{where}: the array holds NaN or infinite values; expected pixels in [0, 1] or [0, 255]")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise PredictInputError(f"{where}: pixel values from {low:g} to {high:g}; expected [0, 1] or [0, 255] "
                                "(Fashion-MNIST: 0 background, 255 brightest product)")
    return values if high <= 1.0 else values / 255.0


def load_npy(path: Path) -> np.ndarray:
    """A .npy of one 28 x 28 image or N of them, as float32 (N, 28, 28) in [0, 1]. allow_pickle is off: a .npy
    holding Python objects could run code when loaded."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PredictInputError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]}); expected a numeric "
                                "array saved with numpy.save") from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.shape == (SIDE, SIDE):
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (SIDE, SIDE):
        raise PredictInputError(f"{path}: array of shape {array.shape}; expected (N, 28, 28) or (28, 28)")
    return _float_pixels(str(path), array)


def is_idx_images(path: Path) -> bool:
    return path.suffix == ".gz" or "idx3" in path.name


def sibling_labels(path: Path) -> Path | None:
    """The labels file published beside an IDX images file (t10k-images-idx3-ubyte.gz → t10k-labels-idx1-ubyte.gz)."""
    if "images-idx3" not in path.name:
        return None
    candidate = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    return candidate if candidate.is_file() else None


def read_labels(path: Path) -> np.ndarray:
    """Labels 0-9 from an IDX labels file (.gz or plain) or a 1-D integer .npy."""
    from tasks.dataset import read_user_idx

    if not path.is_file():
        raise PredictInputError(f"{path}: no such labels file; expected an IDX labels file (.gz) or a .npy of classes 0-9")
    if path.suffix == ARRAY_SUFFIX:
        try:
            labels = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise PredictInputError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0]})") from None
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise PredictInputError(f"{path}: labels of shape {labels.shape} and dtype {labels.dtype}; expected a 1-D "
                                    "integer array of classes 0-9, one per image")
    else:
        try:
            labels = read_user_idx(str(path), path.read_bytes(), images=False)
        except DatasetError as exc:
            raise PredictInputError(str(exc)) from None
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = int(np.argmax((labels < 0) | (labels > 9)))
        raise PredictInputError(f"{path}: label {int(labels[bad])} at row {bad}; expected classes 0-9 "
                                f"({', '.join(f'{i} {n}' for i, n in enumerate(CLASS_NAMES))})")
    return labels.astype(np.int64)


def _images_in(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        others = sorted(p.name for p in folder.iterdir())
        found = f"{len(others)} other entries ({', '.join(others[:5])}{', …' if len(others) > 5 else ''})" if others else "nothing"
        raise PredictInputError(f"{folder}: a folder with no PNG or JPEG files in it (found {found}); expected "
                                f"images named *.png, *.jpg or *.jpeg (subfolders are not searched)")
    return files


def load_inputs(paths: list[str], invert: Invert = "auto") -> Inputs:
    """Every input, read and converted before any model is loaded: a bad file fails in a fraction of a second."""
    from tasks.dataset import read_user_idx

    inputs = Inputs()
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            files = _images_in(path)
            inputs.add([str(f) for f in files], _unit_float(np.stack([load_image(f, invert) for f in files])))
        elif not path.exists():
            raise PredictInputError(f"{path}: no such file or folder; expected {WHAT_IS_READ}")
        elif path.suffix == ARRAY_SUFFIX:
            pixels = load_npy(path)
            inputs.add([f"{path}[{i}]" for i in range(len(pixels))], pixels)
        elif is_idx_images(path):
            try:
                images = read_user_idx(str(path), path.read_bytes(), images=True)
            except DatasetError as exc:
                raise PredictInputError(f"{exc} (expected an IDX images file like t10k-images-idx3-ubyte.gz)") from None
            labels_path = sibling_labels(path)
            labels = read_labels(labels_path) if labels_path else None
            if labels is not None and len(labels) != len(images):
                labels, labels_path = None, None  # not this file's labels: accuracy only with --labels
            inputs.add([f"{path}[{i}]" for i in range(len(images))], _unit_float(images), labels,
                       str(labels_path) if labels_path else "")
        else:
            inputs.add([str(path)], _unit_float(load_image(path, invert)[None]))
    return inputs


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

    def describe(self) -> str:
        accuracy = f", test accuracy {100 * self.test_accuracy:.2f}%" if self.test_accuracy is not None else ""
        return f"{self.architecture} of run {self.run_id} ({self.chosen_as}{accuracy})"


MODEL_CHOICES = "'champion' (the overall champion, the default), 'champion:ARCH' (an architecture's champion) or RUN_ID/ARCH"


def _from_entry(store, entry: dict, chosen_as: str) -> ModelRef:
    if not entry.get("model_sha256"):
        raise ModelChoiceError(f"{store.url_for('models/champion.json')}: the {chosen_as} entry records no model_sha256; "
                               "a model is loaded only when its hash can be checked: choose it as RUN_ID/ARCH")
    return ModelRef(entry["run_id"], entry["architecture"], entry["model_key"], entry["model_sha256"],
                    entry.get("test_accuracy"), chosen_as)


def _champion(store, architecture: str | None) -> ModelRef:
    from tasks.champion import read_champions

    pointer = read_champions(store)
    hint = "pick a run's model with --model RUN_ID/ARCH (`fmnist runs` lists them)"
    if not pointer or not pointer.get("overall"):
        raise ModelChoiceError(f"no champion yet in {store.uri} (no models/champion.json): only models evaluated on "
                               f"all 10,000 test rows are promoted, so a quick run never is; {hint}")
    if architecture is None:
        return _from_entry(store, pointer["overall"], "overall champion")
    slots = pointer.get("architectures", {})
    if architecture not in slots:
        raise ModelChoiceError(f"--model champion:{architecture}: no champion for {architecture!r} in {store.uri}; "
                               f"champions exist for {sorted(slots)}; or {hint}")
    return _from_entry(store, slots[architecture], f"champion of {architecture}")


def _run_model(store, run_id: str, architecture: str) -> ModelRef:
    from tasks.runs import RunPaths

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
    from tasks.artifacts import load_published_model
    from tasks.store import MissingKey

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


def labels_for(inputs: Inputs, labels_file: str | None) -> tuple[np.ndarray | None, str]:
    """The labels to score against: --labels, else those that came with every input; (None, '') when neither."""
    if labels_file:
        labels = read_labels(Path(labels_file).expanduser())
        if len(labels) != len(inputs.names):
            raise PredictInputError(f"{labels_file}: {len(labels):,} labels for {len(inputs.names):,} images; expected "
                                    "one label per image, in the order the images are read (a folder's sorted by name)")
        return labels, labels_file
    own = inputs.own_labels()
    return (own, ", ".join(inputs.label_sources)) if own is not None else (None, "")


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
                  "sha256": ref.sha256, "test_accuracy": ref.test_accuracy, "chosen_as": ref.chosen_as},
        "classes": list(CLASS_NAMES),
        "predictions": predictions,
        "accuracy": None if score is None else {"value": score.value, "correct": score.correct, "total": score.total,
                                                "standard_error": score.standard_error, "labels": score.source},
    }
