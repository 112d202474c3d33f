"""Training: the seed protocol's split, a real trial through Ray Tune, models that load back safely."""
import os

import keras
import numpy as np
import pytest
from keras.src.trainers.data_adapters.array_slicing import train_validation_split

from tasks.config import PipelineConfig, build_config
from tasks.errors import ConfigError, DatasetVersionNotFound
from tasks.fanout import run_trials
from tasks.shards import load_split, publish_dataset
from tasks.store import open_store
from tasks.training import seed_protocol_split, to_model_input


@pytest.mark.parametrize("rows, fraction", [(60_000, 0.2), (60_000, 0.1), (3_000, 0.2), (2_999, 0.1), (101, 0.2)])
def test_validation_rows_are_the_last_fraction_exactly_as_keras_takes_them(rows, fraction):
    x = np.arange(rows)
    (fit,), (val,) = train_validation_split((x,), validation_split=fraction)
    split_at = seed_protocol_split(rows, fraction)
    assert np.array_equal(x[:split_at], np.asarray(fit)) and np.array_equal(x[split_at:], np.asarray(val))


def test_pixels_are_divided_by_255_and_shaped_for_the_model():
    images = np.array([[[0, 255] * 14] * 28], dtype=np.uint8)
    x = to_model_input(images, (28, 28, 1))
    assert x.dtype == np.float32 and x.shape == (1, 28, 28, 1) and x.max() == 1.0 and x.min() == 0.0


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory, raw_dataset):
    store_dir = tmp_path_factory.mktemp("store")
    store = open_store(str(store_dir))
    return store, publish_dataset(raw_dataset, store).version


def test_one_trial_learns_loss_goes_down_and_the_model_loads_back(ray_local, local_dataset):
    store, version = local_dataset
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["mlp1"], max_epochs=3,
                            train_rows=3000, test_rows=500)
    metrics = run_trials(config, store, "learns", version)["mlp1"]

    history = [line.split(",") for line in store.get_bytes("runs/learns/mlp1/history.csv").decode().splitlines()[1:]]
    losses = [float(row[2]) for row in history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert metrics["epochs"] == 3 and metrics["rows"] == {"fit": 2400, "validation": 600, "test": 500}
    assert metrics["test_accuracy"] > 0.5  # ten classes: chance is 0.1

    # The stored model loads with safe_mode and reproduces the stored test accuracy on the same rows.
    path = store.root / "runs/learns/mlp1/model.keras"
    model = keras.saving.load_model(path, safe_mode=True)
    images, labels, _ = load_split(store, version, "test", 500)
    predicted = model.predict(to_model_input(images, (28, 28)), verbose=0).argmax(1)
    assert float((predicted == labels).mean()) == metrics["test_accuracy"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 500

    # Tune kept a per-epoch checkpoint in the run's storage.
    assert any(k.endswith("model.keras") and "/tune/" in k for k in store.list_keys("runs/learns/"))


@pytest.mark.parametrize("field, value, expected", [
    ("architectures", ["baseline", "resnet50"], "architectures[1]"),
    ("max_epochs", -1, "max_epochs"),
    ("gpus_per_trial", 1.5, "gpus_per_trial"),
    ("batch_size", "many", "batch_size"),
    ("store", None, None),
])
def test_bad_config_names_the_field(field, value, expected):
    if expected is None:
        assert build_config(**{field: value}).store == os.path.abspath("artifacts")  # None: the default, made absolute
        return
    with pytest.raises(ConfigError) as error:
        build_config(**{field: value})
    found = value[-1] if isinstance(value, list) else value
    assert f"config field '{expected}'" in str(error.value) and repr(found) in str(error.value)


def test_quick_preset_fills_defaults_and_explicit_values_win():
    quick = PipelineConfig(preset="quick")
    assert (quick.max_epochs, quick.train_rows, quick.test_rows) == (2, 3000, 1000)
    assert PipelineConfig(preset="quick", max_epochs=5).max_epochs == 5
    assert PipelineConfig().max_epochs == 100 and PipelineConfig().train_rows is None


def test_a_dataset_version_that_does_not_exist_fails_before_any_trial(tmp_path, local_dataset):
    store, version = local_dataset
    with pytest.raises(DatasetVersionNotFound) as error:
        run_trials(PipelineConfig(preset="quick", store=store.uri), store, "nope", "0123456789abcdef")
    assert "0123456789abcdef" in str(error.value) and version in str(error.value) and "fmnist prepare" in str(error.value)
