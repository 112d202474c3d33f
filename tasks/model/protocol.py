"""The seed protocol's batch order, in numpy alone.

numpy only, on purpose: benchmarks/gpu_packed.py imports this on a GPU machine that has neither Ray nor
pyarrow, and the trainer (tasks.model.training) imports it too, so both shuffle the same way.
"""

from __future__ import annotations

import numpy as np


def epoch_permutation(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    """The order of the fit rows in epoch `epoch` (0-based, as Keras counts epochs).

    A new order every epoch, as the report's unseeded `model.fit(shuffle=True)` gives, yet a function of
    (seed, epoch) alone, so a trial resumed at epoch k draws exactly the order an uninterrupted one did.
    `keras.utils.set_random_seed` + `fit(shuffle=True)` is no substitute: Keras re-instantiates its shuffle
    with the same seed each epoch, so every epoch sees the same order (design §10).
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch]))).permutation(n_rows)


def shuffled_for_epoch(seed: int, epoch: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """`arrays` (same length, rows first) in epoch `epoch`'s order; copies, the inputs stay as they are."""
    order = epoch_permutation(seed, epoch, len(arrays[0]))
    return tuple(array[order] for array in arrays)


MAX_SHIFT = 2  # pixels; Fashion-MNIST's products are centred with a margin, so ±2 px keeps them whole


def augmented(images: np.ndarray, seed: int, epoch: int, kind: str) -> np.ndarray:
    """Epoch `epoch`'s augmented copy of `images` (rows first, 28×28 then optional channels), drawn on the fly.

    'shift': each image moved by (dy, dx) in [-2, 2]², the uncovered border black (Fashion-MNIST's background);
    'shift_flip': and mirrored left-right with probability 1/2. The draw is a function of (seed, epoch) alone,
    like the epoch's order, so a resumed trial sees exactly what an uninterrupted one did. Nothing is stored.
    """
    if kind == "none":
        return images
    if kind not in ("shift", "shift_flip"):
        raise ValueError(f"augmentation {kind!r}: expected 'none', 'shift' or 'shift_flip'")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, 1])))
    shifts = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(len(images), 2))
    pad = ((0, 0), (MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)) + ((0, 0),) * (images.ndim - 3)
    padded = np.pad(images, pad)
    out = np.empty_like(images)
    for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):  # 25 vectorised slices instead of a loop over images
        for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            out[rows] = padded[rows, MAX_SHIFT + dy:MAX_SHIFT + dy + 28, MAX_SHIFT + dx:MAX_SHIFT + dx + 28]
    if kind == "shift_flip":
        flip = rng.random(len(images)) < 0.5
        out[flip] = out[flip, :, ::-1]
    return out
