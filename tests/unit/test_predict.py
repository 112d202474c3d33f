"""`fmnist predict`'s conversion rule on real test images and photos made of them, and a decompression bomb refused
in one line; all without a trained model (with one, trained by `fmnist run`: tests/integration/test_predict.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flows.cli import main
from tasks.predict.inputs import fashion_mnist_pixels, should_invert


def predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fashion_mnist_images_are_never_inverted_by_auto(raw_dataset):
    """--invert auto must leave the dataset's own images alone: none of the 70,000 has a ring brighter than mid-gray."""
    for images in (raw_dataset.test_images, raw_dataset.train_images):
        rings = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, 1:-1, 0], images[:, 1:-1, -1]], axis=1)
        assert rings.mean(axis=1).max() < 127.5
    assert not should_invert(raw_dataset.test_images[0], "auto") and should_invert(raw_dataset.test_images[0], "yes")


def test_a_28_by_28_grayscale_image_is_taken_pixel_for_pixel(raw_dataset):
    for image in raw_dataset.test_images[:50]:
        assert np.array_equal(fashion_mnist_pixels(image, "auto"), image)


# --- product photos made of test images classify as the images do ---------------------------------------------
# Each of the first 500 test images becomes a product photo: upscaled 8x to 224 x 224, dark on a white background,
# RGB, framed by white margins (20 px left, 12 px top, so JPEG's 8 x 8 blocks do not line up with the product's),
# saved as PNG or JPEG. `load_image` turns each back into 28 x 28, and a model trained here on the real training set
# must classify it as it classifies the raw test array. Agreement, not accuracy: it isolates the conversion.
# A nearest upscale leaves the grid as all that differs: its floor is issue 17's bar, which the conversion before
# the fix failed (spare pixel below / right, Lanczos: 96.6 % PNG, 96.8 % JPEG; now 99.0 %, 99.2 %). A bicubic
# upscale also blurs the product's outline, which the 5% trim then reads a little wider, so no conversion gets it
# back exactly; its floor only guards against regressions: with this model and these 500 images the old
# conversion scored 96.2 % / 96.2 % and the fixed one 96.4 % / 96.2 % (over six models the fix gained about a point).
PHOTOS = 500
ROUND_TRIPS: dict[str, tuple[Image.Resampling, str, float]] = {
    # name: (upscale, file format, floor)
    "nearest-png": (Image.Resampling.NEAREST, "PNG", 0.98),  # issue 17's bar
    "nearest-jpeg": (Image.Resampling.NEAREST, "JPEG", 0.98),
    "bicubic-png": (Image.Resampling.BICUBIC, "PNG", 0.95),  # six seeds' models, 2,000 images: 96.2-97.0 %
    "bicubic-jpeg": (Image.Resampling.BICUBIC, "JPEG", 0.95),
}


@pytest.fixture(scope="module")
def mlp1(raw_dataset):
    """mlp1 trained with plain Keras (the project's layers and compile) for 4 epochs on all 60,000 training rows,
    seed 0: about 10 s on 2 cores. A dense model sees pixels, not shapes: a product one pixel off is a different
    input to it, which is what these tests must notice."""
    import keras

    from tasks.model.architectures import build_model, compile_for_seed_protocol

    keras.utils.set_random_seed(0)
    model = build_model("mlp1")
    compile_for_seed_protocol(model)
    model.fit(raw_dataset.train_images.astype(np.float32) / 255, keras.utils.to_categorical(raw_dataset.train_labels, 10),
              batch_size=128, epochs=4, verbose=0)
    return model


def _classes(model, images: np.ndarray) -> np.ndarray:
    return model.predict(images.astype(np.float32) / 255, batch_size=1024, verbose=0).argmax(axis=1)


def product_photo(image: np.ndarray, upscale: Image.Resampling) -> Image.Image:
    """A 28 x 28 test image as a product photo: 224 x 224, dark on white, RGB, with white margins."""
    product = Image.fromarray(255 - image).resize((224, 224), upscale).convert("RGB")
    photo = Image.new("RGB", (264, 256), (255, 255, 255))
    photo.paste(product, (20, 12))
    return photo


@pytest.mark.parametrize("trip", sorted(ROUND_TRIPS))
def test_product_photos_of_test_images_classify_as_the_images_do(trip, mlp1, raw_dataset, tmp_path):
    from tasks.predict.inputs import load_image

    upscale, file_format, floor = ROUND_TRIPS[trip]
    images, labels = raw_dataset.test_images[:PHOTOS], raw_dataset.test_labels[:PHOTOS]
    converted = []
    for i, image in enumerate(images):
        path = tmp_path / f"{i:03d}.{file_format.lower()}"
        product_photo(image, upscale).save(path, file_format, **({"quality": 90} if file_format == "JPEG" else {}))
        converted.append(load_image(path, "auto"))
    raw, photos = _classes(mlp1, images), _classes(mlp1, np.stack(converted))
    agreement = float((photos == raw).mean())
    print(f"{trip}: agreement {agreement:.3f}, accuracy {(photos == labels).mean():.3f} (raw {(raw == labels).mean():.3f})")
    assert agreement >= floor, f"{trip}: the photos got the raw images' class in {agreement:.1%} of {PHOTOS}; floor {floor:.0%}"


def test_the_spare_row_and_column_go_above_and_left_as_in_the_dataset():
    """An odd margin is split with the extra pixel before the product, so a 25-row, 27-column product starts in row 2 and column 1."""
    from tasks.predict.inputs import place_on_canvas

    canvas = place_on_canvas(np.full((25, 27), 200, np.uint8))
    rows, cols = np.nonzero(canvas)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 26, 1, 27)
    assert np.array_equal(place_on_canvas(np.full((28, 28), 9, np.uint8)), np.full((28, 28), 9, np.uint8))


def test_a_transparent_cutout_reads_as_a_product_on_white(tmp_path):
    from tasks.predict.inputs import load_image

    rgba = Image.new("RGBA", (100, 60), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (40, 20), (30, 30, 30, 255)), (30, 20))
    rgba.save(tmp_path / "cutout.png")
    cutout = load_image(tmp_path / "cutout.png", "auto")
    assert (cutout[7:21] > 200).all() and (cutout[:7] == 0).all() and (cutout[21:] == 0).all()  # 28 x 14, centred


def test_a_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch):
    """Pillow refuses images far above its pixel limit; here the limit is lowered instead of writing a 180 MP file."""
    Image.new("L", (100, 100), 255).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    code, out, err = predict(capsys, str(tmp_path / "huge.png"), "--store", str(tmp_path))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "huge.png: refused by Pillow as a decompression bomb" in err
