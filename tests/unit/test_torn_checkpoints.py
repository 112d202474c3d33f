"""A checkpoint copy cut short (a full disk, the store gone) leaves nothing torn where Tune or a resume reads it
(issue 21, X7): remove_torn_checkpoints on a real local store. The whole path, on a real full tmpfs:
tests/cli/test_disk_full.py."""

from __future__ import annotations

import json

from tasks.data.store import open_store
from tasks.model.training import MODEL_FILE, STATE_FILE, remove_torn_checkpoints

TRIAL = "runs/r1/tune/abc_00000_architecture=cnn2"


def _checkpoint(store, name: str, model: bytes | None, recorded: int | None, state: bool = True) -> None:
    if model is not None:
        store.put_bytes(f"{TRIAL}/{name}/{MODEL_FILE}", model)
    if state:
        manifest = {"bytes": recorded, "sha256": "-"} if recorded is not None else None
        store.put_bytes(f"{TRIAL}/{name}/{STATE_FILE}",
                        json.dumps({"history": [], "early_stopping": {}, "model_file": manifest}).encode())


def test_only_the_incomplete_checkpoint_folders_are_removed(tmp_path):
    store = open_store(str(tmp_path))
    _checkpoint(store, "checkpoint_000000", b"x" * 100, 100)  # complete
    _checkpoint(store, "checkpoint_000001", b"x" * 40, 100)  # model.keras cut short
    _checkpoint(store, "checkpoint_000002", None, 100)  # model.keras never written
    _checkpoint(store, "checkpoint_000003", b"x" * 100, None, state=False)  # state.json never written
    _checkpoint(store, "checkpoint_000004", b"x" * 7, None)  # an old checkpoint without a manifest: kept
    store.put_bytes(f"{TRIAL}/result.json", b"{}")  # Tune's own files beside them are left alone

    removed = remove_torn_checkpoints(store, TRIAL)

    assert removed == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]
    assert sorted(store.list_keys(f"{TRIAL}/")) == sorted([
        f"{TRIAL}/checkpoint_000000/{MODEL_FILE}", f"{TRIAL}/checkpoint_000000/{STATE_FILE}",
        f"{TRIAL}/checkpoint_000004/{MODEL_FILE}", f"{TRIAL}/checkpoint_000004/{STATE_FILE}",
        f"{TRIAL}/result.json"])


def test_a_trial_with_no_checkpoint_yet_has_nothing_to_remove(tmp_path):
    assert remove_torn_checkpoints(open_store(str(tmp_path)), TRIAL) == []
