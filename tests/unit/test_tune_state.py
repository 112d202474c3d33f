"""Which checkpoint of a trial folder counts as complete (tasks.tune.tune_state): both files there, and readable."""

from __future__ import annotations

import io
import json
import zipfile

from tasks.data.store import open_store
from tasks.tune.tune_state import complete_checkpoint, newest_complete_checkpoint

TRIAL = "runs/r/tune/train_trial_0_architecture=cnn2"


def model_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
    return buffer.getvalue()


def write_checkpoint(store, name: str, epochs: int, model: bytes | None = None, state: bool = True) -> None:
    store.put_bytes(f"{TRIAL}/{name}/model.keras", model if model is not None else model_zip())
    if state:
        store.put_bytes(f"{TRIAL}/{name}/state.json", json.dumps({"history": [{}] * epochs}).encode())


def test_the_newest_complete_checkpoint_is_chosen_and_incomplete_ones_skipped(tmp_path):
    store = open_store(str(tmp_path))
    write_checkpoint(store, "checkpoint_000001", 2)
    write_checkpoint(store, "checkpoint_000002", 3, state=False)  # upload cut before state.json
    write_checkpoint(store, "checkpoint_000003", 4, model=model_zip()[:-10])  # model.keras cut short
    write_checkpoint(store, "checkpoint_000010", 11, model=b"not a zip")
    found = newest_complete_checkpoint(store, TRIAL)
    assert (found.name, found.index, found.epochs) == ("checkpoint_000001", 1, 2)
    assert complete_checkpoint(store, TRIAL, "checkpoint_000002") is None
    assert complete_checkpoint(store, TRIAL, "checkpoint_000000") is None  # gone


def test_a_trial_folder_without_checkpoints_has_none(tmp_path):
    assert newest_complete_checkpoint(open_store(str(tmp_path)), TRIAL) is None
