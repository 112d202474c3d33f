"""Point each unfinished trial of a saved Tune experiment at its newest complete checkpoint before a resume.

Why (design §10, issue 10 item 1): with `CheckpointConfig(num_to_keep=1)` Tune deletes checkpoint_K as soon as
checkpoint_K+1 is written, whether or not the experiment-state upload that would name K+1 succeeded. After a long
store outage the saved state names K, which is gone, and `Tuner.restore` fails every trial with "Could not recover
from checkpoint as it does not exist on storage anymore" (raised in Trainable.restore, before our trainable runs,
so the trainable cannot fall back by itself). The same repair picks up a checkpoint written after the last state
save (a run SIGKILLed between the two), which Tune would otherwise ignore and retrain.

What is changed, and why it is safe: only the newest experiment_state-*.json (the one Tune restores from), only
trials that are not TERMINATED, and in those only
- the run metadata's checkpoint manager (`_latest_checkpoint_result`, `_checkpoint_results`): the one checkpoint
  it tracks (num_to_keep=1) becomes the newest complete checkpoint_N of the trial's own folder, with its metrics'
  `checkpoint_dir_name` and `training_iteration` (= epochs in its state.json) to match;
- the trial's `storage.current_checkpoint_index` = N, so the next checkpoint is written to N+1, never into N.
The state is read and written with Tune's own (de)serialisers (Trial / _TrainingRunMetadata json state), the
objects Tune itself rewrites on restore (Trial.set_storage). Our trainable keeps everything it resumes from
(weights, optimizer, history, early stopping) inside the checkpoint, so any complete checkpoint is a consistent
place to continue: history N+1 epochs long, the next epoch N+2, no gap and no duplicate.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from tasks.data.store import Store
from tasks.progress import Progress

CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")
STATE_FILE_PREFIX = "experiment_state-"


@dataclass(frozen=True)
class FoundCheckpoint:
    name: str  # checkpoint_000003
    index: int  # 3
    epochs: int  # rows of history in its state.json


def _index(name: str) -> int | None:
    match = CHECKPOINT_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def complete_checkpoint(store: Store, trial_key: str, name: str) -> FoundCheckpoint | None:
    """The checkpoint if it is complete: state.json parses with a history, model.keras is a zip whose members
    pass their CRC (an upload cut short by the outage fails one of these). Checked without Keras, in the driver."""
    index = _index(name)
    folder = f"{trial_key}/{name}"
    if index is None or not (store.exists(f"{folder}/state.json") and store.exists(f"{folder}/model.keras")):
        return None
    try:
        history = json.loads(store.get_bytes(f"{folder}/state.json"))["history"]
        with zipfile.ZipFile(io.BytesIO(store.get_bytes(f"{folder}/model.keras"))) as model:
            damaged = model.testzip()
    except (ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    return None if damaged is not None or not isinstance(history, list) else FoundCheckpoint(name, index, len(history))


def newest_complete_checkpoint(store: Store, trial_key: str) -> FoundCheckpoint | None:
    names = {key[len(trial_key) + 1:].split("/")[0] for key in store.list_keys(f"{trial_key}/checkpoint_")}
    for name in sorted((n for n in names if _index(n) is not None), key=_index, reverse=True):
        found = complete_checkpoint(store, trial_key, name)
        if found:
            return found
    return None


def _repoint(trial: Any, found: FoundCheckpoint) -> None:
    """Make the trial's checkpoint manager track `found` (see the module docstring for the fields)."""
    from tasks.tune.ray_compat import point_trial_at_checkpoint

    point_trial_at_checkpoint(trial, f"{trial.storage.trial_fs_path}/{found.name}", found.epochs, found.index,
                              found.name)


def repair_trial(store: Store, experiment_key: str, trial_json: str, metadata_json: str) -> tuple[str, str, str] | None:
    """(trial json, metadata json, what changed) when the trial should resume from a newer checkpoint than the one
    its saved state names (or from one where the state names none, or one that is gone); None to leave it as is."""
    from ray.tune.experiment import Trial

    trial = Trial.from_json_state(trial_json, stub=True)  # stub: no trainable lookup in the driver
    if trial.status == Trial.TERMINATED:
        return None
    trial.restore_run_metadata(metadata_json)
    trial_key = f"{experiment_key}/{trial.storage.trial_dir_name}"
    named = PurePosixPath(trial.checkpoint.path).name if trial.checkpoint else None
    found = newest_complete_checkpoint(store, trial_key)
    named_ok = named is not None and complete_checkpoint(store, trial_key, named) is not None
    if found is None or (named_ok and found.name == named):
        return None  # nothing newer (with no checkpoint at all the trial starts afresh, as it would anyway)
    _repoint(trial, found)
    trial.stub = json.loads(trial_json).get("stub", False)  # saved as Tune saved it: a stub trial never runs
    state_json, metadata = trial.get_json_state()
    was = f"{named} ({'present' if named_ok else 'missing'})" if named else "no checkpoint"
    return state_json, metadata, f"{trial.storage.trial_dir_name}: resuming from {found.name} ({found.epochs} epochs); the saved state named {was}"


def repair_experiment_state(store: Store, experiment_key: str, progress: Progress = lambda _: None) -> list[str]:
    """Rewrite the newest experiment_state-*.json (atomically) so that every unfinished trial resumes from its
    newest complete checkpoint; return one line per trial changed."""
    states = [k for k in store.list_keys(f"{experiment_key}/{STATE_FILE_PREFIX}") if k.endswith(".json")
              and "/" not in k[len(experiment_key) + 1:]]
    if not states:
        return []
    newest = max(states)  # the one Tune restores from: its timestamped names sort in time order
    state = json.loads(store.get_bytes(newest))
    changes = []
    for position, (trial_json, metadata_json) in enumerate(state["trial_data"]):
        repaired = repair_trial(store, experiment_key, trial_json, metadata_json)
        if repaired:
            state["trial_data"][position] = [repaired[0], repaired[1]]
            changes.append(repaired[2])
            progress(repaired[2])
    if changes:
        store.put_bytes(newest, json.dumps(state, indent=2).encode())
    return changes
