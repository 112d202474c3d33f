"""Loading a published model safely: `.keras` only, its hash checked against its record, safe_mode on.

`safe_mode=True` refuses Lambda layers (arbitrary code) when deserialising; HDF5
files ignore safe_mode altogether (CVE-2025-9905), so they are refused outright.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from tasks.errors import PipelineError
from tasks.keys import RunPaths
from tasks.data.store import Store


class UnsafeModelError(PipelineError):
    """A model file that is not what its record says, or not a safe format."""


def load_published_model(store: Store, model_key: str, expected_sha256: str):
    """The Keras model at `model_key`, after checking format and hash; never runs code from the file.
    Keras (TensorFlow) is imported only once the checks pass: a refused file is one line, without TensorFlow's
    start-up notices before it."""
    if not model_key.endswith(".keras"):
        raise UnsafeModelError(f"{store.url_for(model_key)}: only native .keras files are loaded (HDF5 and others "
                               "bypass Keras' safe_mode); re-save the model with model.save('model.keras')")
    data = store.get_bytes(model_key)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise UnsafeModelError(f"{store.url_for(model_key)}: sha256 {digest} but its record says {expected_sha256}: "
                               "the file was changed after it was published; refusing to load it")
    if not data.startswith(b"PK"):
        raise UnsafeModelError(f"{store.url_for(model_key)}: not a .keras archive (expected a zip, found {data[:8]!r})")
    import keras

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(data)
        try:
            return keras.saving.load_model(path, safe_mode=True)
        except ValueError as exc:  # safe_mode refusing a Lambda layer, or a damaged archive
            raise UnsafeModelError(f"{store.url_for(model_key)}: refused by Keras safe_mode: {str(exc).splitlines()[0]}") from None


def load_run_model(store: Store, run_id: str, architecture: str):
    """A run's model, checked against the sha256 in its metrics.json."""
    paths = RunPaths(run_id)
    metrics = json.loads(store.get_bytes(paths.metrics(architecture)))
    return load_published_model(store, paths.model(architecture), metrics["model_sha256"])
