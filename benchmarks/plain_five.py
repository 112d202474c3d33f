"""The plain alternative to `fmnist run`: the five models of the report trained one after another
by a hand-written Keras script (numpy in memory, model.fit(validation_split=…), EarlyStopping).

    .venv/bin/python benchmarks/plain_five.py [--max-epochs 100] [--folder /usr/share/datasets/fashion-mnist]
Prints one JSON line per model and a final line with the total wall seconds.

Unseeded, as the report's script is. `keras.utils.set_random_seed` would make it reproducible but not plain:
once seeded, Keras 3's `fit(shuffle=True)` gives every epoch the same batch order (design section 10), while
the report's unseeded `fit` reshuffles each epoch. The project's trainer gets both, a new order per epoch
drawn from (seed, epoch) (tasks.model.protocol); repeating that loop here would no longer be the script a user
writes. So numbers move from run to run by about a seed's worth (design section 2: ~0.27 points).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time

import numpy as np


def read_idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=offset)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--folder", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    started = time.perf_counter()

    import keras

    from tasks.model.architectures import ARCHITECTURES, REPORT_ARCHITECTURES, build_model

    f = args.folder
    x_train = read_idx(f"{f}/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28) / 255.0
    y_train = keras.utils.to_categorical(read_idx(f"{f}/train-labels-idx1-ubyte.gz", 8), 10)
    x_test = read_idx(f"{f}/t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28) / 255.0
    y_test = keras.utils.to_categorical(read_idx(f"{f}/t10k-labels-idx1-ubyte.gz", 8), 10)
    for key, spec in ((key, ARCHITECTURES[key]) for key in REPORT_ARCHITECTURES):  # the report's five (not resnet_bn)
        model_started = time.perf_counter()
        model = build_model(key)
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
        shape = (-1, *model.input_shape[1:])
        history = model.fit(x_train.reshape(shape), y_train, batch_size=128, epochs=args.max_epochs,
                            validation_split=spec.validation_split, verbose=0,
                            callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience)])
        _, test_accuracy = model.evaluate(x_test.reshape(shape), y_test, verbose=0)
        print(json.dumps({"architecture": key, "epochs": len(history.history["loss"]),
                          "test_accuracy": round(100 * test_accuracy, 2),
                          "seconds": round(time.perf_counter() - model_started, 1)}), flush=True)
    print(json.dumps({"total_seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
