"""The classifiers, as layer lists read top to bottom: the report's five (its Figures 2, 4, 6, 8, 9) and a sixth
of ours, a small residual CNN. Adding a model is one entry in ARCHITECTURES (and its parameter count, which
tests/test_architectures.py asserts).

Written against `keras` only, so KERAS_BACKEND=jax works as well as TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DROPOUT = 0.4  # the report's MLP rate; it gives none for the CNNs, so the same rate is the natural reading


@dataclass(frozen=True)
class ReportResult:
    """One row of the report's results (one run each)."""

    epochs: int
    train_accuracy: float  # percent
    test_accuracy: float  # percent


# --- the report's five: Sequential layer lists, `dropout` the rate of every Dropout layer --------------------------

def baseline(dropout: float) -> list:
    from keras import Input
    from keras.layers import Dense, Flatten

    return [
        Input((28, 28), name="Input"),
        Flatten(name="Flatten_Image"),
        Dense(10, activation="softmax", name="Output"),
    ]


def mlp1(dropout: float) -> list:
    from keras import Input
    from keras.layers import Dense, Flatten

    return [
        Input((28, 28), name="Input"),
        Flatten(name="Flatten_Image"),
        Dense(256, activation="relu", name="Hidden1"),
        Dense(10, activation="softmax", name="Output"),
    ]


def mlp3_dropout(dropout: float) -> list:
    from keras import Input
    from keras.layers import Dense, Dropout, Flatten

    return [
        Input((28, 28), name="Input"),
        Flatten(name="Flatten_Image"),
        Dense(256, activation="relu", name="Hidden1"), Dropout(dropout, name="Dropout1"),
        Dense(128, activation="relu", name="Hidden2"), Dropout(dropout, name="Dropout2"),
        Dense(100, activation="relu", name="Hidden3"), Dropout(dropout, name="Dropout3"),
        Dense(10, activation="softmax", name="Output"),
    ]


def cnn1_mlp(dropout: float) -> list:
    from keras import Input
    from keras.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    return [
        Input((28, 28, 1), name="Input"),
        Conv2D(16, (3, 3), padding="same", activation="relu", name="Conv1"),
        MaxPooling2D((2, 2), strides=2, name="MaxPool2D1"), Dropout(dropout, name="Dropout1"),
        Flatten(name="Flatten"),
        Dense(256, activation="relu", name="Hidden1"), Dropout(dropout, name="Dropout2"),
        Dense(128, activation="relu", name="Hidden2"), Dropout(dropout, name="Dropout3"),
        Dense(100, activation="relu", name="Hidden3"), Dropout(dropout, name="Dropout4"),
        Dense(10, activation="softmax", name="Output"),
    ]


def cnn2(dropout: float) -> list:
    from keras import Input
    from keras.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    return [
        Input((28, 28, 1), name="Input"),
        Conv2D(16, (3, 3), padding="same", activation="relu", name="Conv1"),
        MaxPooling2D((2, 2), strides=2, name="MaxPool2D1"), Dropout(dropout, name="Dropout1"),
        Conv2D(32, (3, 3), padding="same", activation="relu", name="Conv2"),
        MaxPooling2D((2, 2), strides=2, name="MaxPool2D2"), Dropout(dropout, name="Dropout2"),
        Flatten(name="Flatten"),
        Dense(256, activation="relu", name="Hidden1"), Dropout(dropout, name="Dropout3"),
        Dense(10, activation="softmax", name="Output"),
    ]


# --- ours: a small residual CNN (ResNet-style basic blocks, batch normalisation), not in the report ----------------

RESNET_WIDTHS, RESNET_BLOCKS = (32, 64, 128), (2, 2, 2)  # 28x28 → 14x14 → 7x7 stages; 698,282 parameters


def _residual_block(x: Any, width: int, stride: int, name: str) -> Any:
    """conv-BN-ReLU-conv-BN plus the input (through a strided 1x1 conv when the shape changes), then ReLU."""
    from keras import layers

    y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(layers.BatchNormalization(name=f"{name}_bn1")(y))
    y = layers.BatchNormalization(name=f"{name}_bn2")(
        layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y))
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = layers.BatchNormalization(name=f"{name}_short_bn")(
            layers.Conv2D(width, 1, strides=stride, use_bias=False, name=f"{name}_short_conv")(x))
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def resnet_bn(dropout: float) -> Any:
    """Stem conv, three stages of two basic blocks (32, 64, 128 channels), global average pooling, dropout, softmax."""
    import keras
    from keras import layers

    inputs = keras.Input((28, 28, 1), name="Input")
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(
        layers.Conv2D(RESNET_WIDTHS[0], 3, padding="same", use_bias=False, name="stem_conv")(inputs)))
    for stage, (width, blocks) in enumerate(zip(RESNET_WIDTHS, RESNET_BLOCKS)):
        for block in range(blocks):
            x = _residual_block(x, width, 2 if block == 0 and stage > 0 else 1, f"stage{stage + 1}_block{block + 1}")
    x = layers.Dropout(dropout, name="Dropout")(layers.GlobalAveragePooling2D(name="Pool")(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="Output")(x), name="resnet_bn")


# --- the registry -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Architecture:
    key: str
    report_name: str
    validation_split: float  # the LAST fraction of the training rows, as Keras' validation_split takes it
    params: int  # exact: the report's model summary for its five (tests assert it)
    report: ReportResult | None  # None: not in the report
    layers: Callable[[float], Any]  # dropout rate → a Sequential's layer list, or a built functional model
    dropout: float | None = DROPOUT  # the rate its Dropout layers use by default; None: it has no Dropout

    @property
    def in_report(self) -> bool:
        return self.report is not None


ARCHITECTURES: dict[str, Architecture] = {
    a.key: a
    for a in (
        Architecture("baseline", "Baseline", 0.2, 7_850, ReportResult(44, 87.07, 84.60), baseline, None),
        Architecture("mlp1", "Baseline + 1 Hidden Layer", 0.2, 203_530, ReportResult(37, 94.55, 89.18), mlp1, None),
        Architecture("mlp3_dropout", "Baseline + 3 Hidden Layers + Dropout", 0.2, 247_766,
                     ReportResult(55, 92.06, 88.99), mlp3_dropout),
        Architecture("cnn1_mlp", "1 CNN Layer + Best MLP", 0.2, 850_038, ReportResult(44, 93.11, 90.08), cnn1_mlp),
        Architecture("cnn2", "2 CNN Layers + 1 Hidden Layer", 0.1, 409_034, ReportResult(43, 96.85, 92.72), cnn2),
        # Ours, selectable by name, not among the default five: under 1M parameters, aiming at 95 % test accuracy.
        Architecture("resnet_bn", "Small residual CNN + BatchNorm (ours)", 0.1, 698_282, None, resnet_bn, 0.2),
    )
}
REPORT_ARCHITECTURES: tuple[str, ...] = tuple(key for key, a in ARCHITECTURES.items() if a.in_report)


def architecture(key: str) -> Architecture:
    if key not in ARCHITECTURES:
        from tasks.errors import ConfigError

        raise ConfigError(f"architecture {key!r}: unknown; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[key]


def layers_of(key: str, dropout: float | None = None) -> list:
    """The layer list of one of the report's Sequential architectures (fresh layer objects on each call)."""
    spec = architecture(key)
    return spec.layers(spec.dropout if dropout is None else dropout)


def build_model(key: str, dropout: float | None = None):
    """An uncompiled model of the architecture, named after its key; `dropout` overrides its default rate."""
    import keras

    spec = architecture(key)
    built = spec.layers(DROPOUT if spec.dropout is None else (spec.dropout if dropout is None else dropout))
    return built if isinstance(built, keras.Model) else keras.Sequential(built, name=key)


def compile_for_seed_protocol(model, steps_per_execution: int = 1) -> None:
    """Adam (default settings), categorical cross-entropy on one-hot labels, accuracy."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(), loss="categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
