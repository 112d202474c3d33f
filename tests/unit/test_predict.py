"""`fmnist predict`'s conversion rule on real test images and photos made of them, and a decompression bomb refused
in one line; all without a trained model (with one, trained by `fmnist run`: tests/integration/test_predict.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from flows.cli import main
from tasks.predict.inputs import _trim_box, fashion_mnist_pixels, should_invert


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


def test_a_large_photo_on_white_comes_back_close_to_the_dataset_image(raw_dataset, tmp_path):
    """A test image as a photo would be: 10x larger, dark product on white, RGB, margins added. Auto inverts it,
    trims the margins and fits it back to 28 x 28."""
    from tasks.predict.inputs import load_image

    original = raw_dataset.test_images[1]  # a pullover that fills the 28 rows
    photo = Image.fromarray(255 - original).resize((280, 280), Image.Resampling.NEAREST).convert("RGB")
    framed = Image.new("RGB", (400, 340), (255, 255, 255))
    framed.paste(photo, (60, 30))
    framed.save(tmp_path / "pullover.jpg", quality=95)
    converted = load_image(tmp_path / "pullover.jpg", "auto")
    # What the rule makes of the dataset image itself: its product (pixels above 5%) centred. Fashion-MNIST's own
    # centring differs by a column or so, which is why a 28 x 28 input is never re-centred.
    top, bottom, left, right = _trim_box(original)
    expected = np.zeros((28, 28), np.uint8)
    y, x = (28 - (bottom - top)) // 2, (28 - (right - left)) // 2
    expected[y:y + bottom - top, x:x + right - left] = original[top:bottom, left:right]
    assert np.abs(converted.astype(int) - expected.astype(int)).mean() < 8  # JPEG and resampling (6.6 measured)
    rgba = Image.new("RGBA", (100, 60), (0, 0, 0, 0))  # a cut-out: transparency reads as a white background
    rgba.paste(Image.new("RGBA", (40, 20), (30, 30, 30, 255)), (30, 20))
    rgba.save(tmp_path / "cutout.png")
    cutout = load_image(tmp_path / "cutout.png", "auto")
    assert (cutout[7:21] > 200).all() and (cutout[:7] == 0).all()  # product bright (28 x 14, centred), rest dark


def test_a_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch):
    """Pillow refuses images far above its pixel limit; here the limit is lowered instead of writing a 180 MP file."""
    Image.new("L", (100, 100), 255).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    code, out, err = predict(capsys, str(tmp_path / "huge.png"), "--store", str(tmp_path))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "huge.png: refused by Pillow as a decompression bomb" in err
