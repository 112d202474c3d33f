"""The seed protocol's batch order, in numpy alone.

numpy only, on purpose: benchmarks/gpu_packed.py imports this on a GPU machine that has neither Ray nor
pyarrow, and the trainer (tasks.training) imports it too, so both shuffle the same way.
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
