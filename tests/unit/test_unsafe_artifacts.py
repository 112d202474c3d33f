"""Security: models that could run code, or that changed after publication, are refused."""

import hashlib
import json

import keras
import numpy as np
import pytest

from tasks.model.artifacts import UnsafeModelError, load_published_model, load_run_model
from tasks.data.store import open_store
from tasks.model.training import model_bytes


def publish(store, key, data):
    store.put_bytes(key, data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path))


def small_model(*middle):
    return keras.Sequential([keras.Input((4,)), *middle, keras.layers.Dense(2, activation="softmax")])


def test_a_published_model_loads_and_predicts(store):
    model = small_model()
    sha = publish(store, "runs/r/m/model.keras", model_bytes(model))
    store.put_bytes("runs/r/m/metrics.json", json.dumps({"model_sha256": sha}).encode())
    loaded = load_run_model(store, "r", "m")
    x = np.ones((3, 4), dtype="float32")
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_a_lambda_layer_is_refused_by_safe_mode(store):
    sha = publish(store, "m/model.keras", model_bytes(small_model(keras.layers.Lambda(lambda t: t * 2))))
    with pytest.raises(UnsafeModelError) as error:
        load_published_model(store, "m/model.keras", sha)
    assert "safe_mode" in str(error.value) and "m/model.keras" in str(error.value)


def test_an_h5_file_is_refused_before_reading(store, tmp_path):
    path = tmp_path / "model.h5"
    small_model().save(path)
    sha = publish(store, "m/model.h5", path.read_bytes())
    with pytest.raises(UnsafeModelError) as error:
        load_published_model(store, "m/model.h5", sha)
    assert ".keras" in str(error.value)


def test_a_model_whose_hash_does_not_match_its_record_is_refused(store):
    publish(store, "runs/r/m/model.keras", model_bytes(small_model()))
    store.put_bytes("runs/r/m/metrics.json", json.dumps({"model_sha256": "0" * 64}).encode())
    with pytest.raises(UnsafeModelError) as error:
        load_run_model(store, "r", "m")
    assert "changed after it was published" in str(error.value)
