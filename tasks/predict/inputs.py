"""`fmnist predict`'s inputs: images, folders, .npy arrays and IDX files → one (N, 28, 28) float32 array in
[0, 1] (load_inputs), and their labels where a labels file is given or lies beside them.

How a picture becomes a Fashion-MNIST image (fashion_mnist_pixels), after Zalando's recipe for the dataset
(github.com/zalandoresearch/fashion-mnist, "Get the data"): grayscale; the product made bright on a dark
background (Fashion-MNIST is white-on-black: Zalando negated their white-background photos); the edges that
are within 5% of the background's colour trimmed; the longest side resized to 28 by subsampling (the recipe's
"skipping some rows and columns") and the product centred on a black 28 x 28 canvas, an odd spare row or column
above / left of it as in the dataset (place_on_canvas). An image that is already 28 x 28 is taken pixel for pixel
(only the inversion rule applies): it is in the dataset's form, and trimming would move the product off the
dataset's centring. Not copied from the recipe: its sharpening step (a Gaussian unsharp mask).

Measured against a model's predictions on the raw test arrays: 2,000 test images made into 224 x 224 photos on
white (PNG and JPEG; tests/unit/test_predict.py makes the same photos of 500), six 4-epoch mlp1 models. Subsampling agrees best with the dataset's
grid in every round trip (nearest upscale 99.1 %, bicubic 96.5 %) against Lanczos (98.1 %, 96.3 %), box
(99.2 %, 96.0 %) and bicubic (97.8 %, 96.2 %), and is no worse than Lanczos on noisy photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tasks.errors import DatasetError, PipelineError
from tasks.data.shards import CLASS_NAMES

SIDE = 28
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIX = ".npy"
Invert = Literal["auto", "yes", "no"]
# --invert auto: invert when the outermost ring of pixels is brighter than mid-gray. Fashion-MNIST's own images
# never are (the brightest ring mean among all 70,000 is 108 of 255); a product photographed on white is.
# Comparing the ring with the centre instead would invert 10 of the 10,000 test images (wide products).
MID_GRAY = 127.5
TRIM_TOLERANCE = 0.05 * 255  # the recipe's 5% distance from the background colour


class PredictInputError(PipelineError):
    """A file or folder given to `fmnist predict` that is not something it can classify."""


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
    # NEAREST is the recipe's subsampling, so the model sees what it was trained on (Lanczos, which filters
    # first, gave 1 point less agreement on nearest-upscaled photos and 0.2 less on bicubic ones: module docstring).
    return place_on_canvas(np.asarray(Image.fromarray(product).resize(size, Image.Resampling.NEAREST)))


def place_on_canvas(product: np.ndarray) -> np.ndarray:
    """A product of at most 28 x 28 pixels centred on a black 28 x 28 canvas, as Fashion-MNIST centres: an odd
    spare row goes above the product and an odd spare column left of it. The dataset's test images measure so
    (products trimmed at 5%): 3,224 of the 3,279 with an odd width have the spare column on the left, 2,075 of the
    2,375 with an odd height have the spare row on top. Putting it below / right instead (`(28 - h) // 2`) moved
    half the products by a pixel, and a model that sees pixels, not shapes, changed its answer on 3-5 % of them."""
    height, width = product.shape
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    top, left = (SIDE - height + 1) // 2, (SIDE - width + 1) // 2  # the spare pixel, if any, before the product
    canvas[top:top + height, left:left + width] = product
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
    from tasks.data.dataset import read_user_idx

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
    from tasks.data.dataset import read_user_idx

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
