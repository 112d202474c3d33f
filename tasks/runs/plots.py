"""PNG figures of the report: training curves (Figures 3, 5, 7, 9, 10), confusion matrix, one sample per class (Figure 1)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and Ray workers
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _figure().close(fig)
    return buffer.getvalue()


def curves_png(history: Sequence[dict], title: str) -> bytes:
    """Accuracy and loss of train and validation by epoch, side by side."""
    plt = _figure()
    epochs = [row["epoch"] for row in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((acc, "accuracy"), (loss, "loss")):
        axis.plot(epochs, [row[metric] for row in history], label=f"train {metric}")
        axis.plot(epochs, [row[f"val_{metric}"] for row in history], label=f"validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    return _png(fig)


def confusion_png(matrix: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """Counts of true class (rows) against predicted class (columns)."""
    plt = _figure()
    fig, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(10), class_names, rotation=45, ha="right")
    axis.set_yticks(range(10), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(col, row, int(count), ha="center", va="center", fontsize=7,
                  color="white" if count > threshold else "black")
    fig.colorbar(image, ax=axis)
    axis.set_title(title)
    return _png(fig)


def samples_png(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> bytes:
    """The first image of each class, labelled (the report's Figure 1)."""
    plt = _figure()
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.5))
    for cls, axis in enumerate(axes.flat):
        index = int(np.argmax(labels == cls))
        axis.imshow(images[index], cmap="gray_r")
        axis.set_title(f"{cls}: {class_names[cls]}", fontsize=9)
        axis.axis("off")
    return _png(fig)
