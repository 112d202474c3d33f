"""The report's five classifiers, as layer lists read top to bottom (report Figures 2, 4, 6, 8, 9).

Written against `keras` only, so KERAS_BACKEND=jax works as well as TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

DROPOUT = 0.4  # the report's MLP rate; it gives none for the CNNs, so the same rate is the natural reading


@dataclass(frozen=True)
class ReportResult:
    """One row of the report's results (one run each)."""

    epochs: int
    train_accuracy: float  # percent
    test_accuracy: float  # percent


@dataclass(frozen=True)
class Architecture:
    key: str
    report_name: str
    validation_split: float  # the LAST fraction of the training rows, as Keras' validation_split takes it
    params: int  # exact, as printed in the report's model summary
    report: ReportResult


ARCHITECTURES: dict[str, Architecture] = {
    a.key: a
    for a in (
        Architecture("baseline", "Baseline", 0.2, 7_850, ReportResult(44, 87.07, 84.60)),
        Architecture("mlp1", "Baseline + 1 Hidden Layer", 0.2, 203_530, ReportResult(37, 94.55, 89.18)),
        Architecture("mlp3_dropout", "Baseline + 3 Hidden Layers + Dropout", 0.2, 247_766, ReportResult(55, 92.06, 88.99)),
        Architecture("cnn1_mlp", "1 CNN Layer + Best MLP", 0.2, 850_038, ReportResult(44, 93.11, 90.08)),
        Architecture("cnn2", "2 CNN Layers + 1 Hidden Layer", 0.1, 409_034, ReportResult(43, 96.85, 92.72)),
    )
}


def layers_of(key: str) -> list:
    """The layer list of one architecture (fresh layer objects on each call)."""
    from keras import Input
    from keras.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    table = {
        "baseline": [
            Input((28, 28), name="Input"),
            Flatten(name="Flatten_Image"),
            Dense(10, activation="softmax", name="Output"),
        ],
        "mlp1": [
            Input((28, 28), name="Input"),
            Flatten(name="Flatten_Image"),
            Dense(256, activation="relu", name="Hidden1"),
            Dense(10, activation="softmax", name="Output"),
        ],
        "mlp3_dropout": [
            Input((28, 28), name="Input"),
            Flatten(name="Flatten_Image"),
            Dense(256, activation="relu", name="Hidden1"), Dropout(DROPOUT),
            Dense(128, activation="relu", name="Hidden2"), Dropout(DROPOUT),
            Dense(100, activation="relu", name="Hidden3"), Dropout(DROPOUT),
            Dense(10, activation="softmax", name="Output"),
        ],
        "cnn1_mlp": [
            Input((28, 28, 1), name="Input"),
            Conv2D(16, (3, 3), padding="same", activation="relu", name="Conv1"),
            MaxPooling2D((2, 2), strides=2, name="MaxPool2D1"), Dropout(DROPOUT, name="Dropout1"),
            Flatten(name="Flatten"),
            Dense(256, activation="relu", name="Hidden1"), Dropout(DROPOUT, name="Dropout2"),
            Dense(128, activation="relu", name="Hidden2"), Dropout(DROPOUT, name="Dropout3"),
            Dense(100, activation="relu", name="Hidden3"), Dropout(DROPOUT, name="Dropout4"),
            Dense(10, activation="softmax", name="Output"),
        ],
        "cnn2": [
            Input((28, 28, 1), name="Input"),
            Conv2D(16, (3, 3), padding="same", activation="relu", name="Conv1"),
            MaxPooling2D((2, 2), strides=2, name="MaxPool2D1"), Dropout(DROPOUT, name="Dropout1"),
            Conv2D(32, (3, 3), padding="same", activation="relu", name="Conv2"),
            MaxPooling2D((2, 2), strides=2, name="MaxPool2D2"), Dropout(DROPOUT, name="Dropout2"),
            Flatten(name="Flatten"),
            Dense(256, activation="relu", name="Hidden1"), Dropout(DROPOUT, name="Dropout3"),
            Dense(10, activation="softmax", name="Output"),
        ],
    }
    if key not in table:
        from tasks.errors import ConfigError

        raise ConfigError(f"architecture {key!r}: unknown; expected one of {sorted(table)}")
    return table[key]


def build_model(key: str):
    """An uncompiled keras.Sequential of the architecture, named after its key."""
    import keras

    return keras.Sequential(layers_of(key), name=key)


def compile_for_seed_protocol(model, steps_per_execution: int = 1) -> None:
    """Adam (default settings), categorical cross-entropy on one-hot labels, accuracy."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
