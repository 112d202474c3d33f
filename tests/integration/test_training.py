"""Training through Ray Tune on the session's local Ray: a real trial learns and its model loads back, early
stopping and a stopped checkpoint's resume, resumes bit-identical to an uninterrupted trial, a run killed during
Tune's start-up, a trial's full disk (the pieces without Ray: tests/unit/test_training.py)."""

import math
import signal
import uuid

import keras
import pytest

from tasks.config import PipelineConfig
from tasks.data.shards import load_split, publish_dataset
from tasks.data.store import open_store
from tasks.model.recipes import recipe_for
from tasks.model.training import to_model_input
from tasks.runs.run import Run
from tasks.tune.fanout import Experiment, TrainingError, run_trials, trial_spec
from tests.trial_processes import newest_checkpoint_state, trials_killed_after
from tests.unit.test_training import local_dataset, same_state  # noqa: F401  (local_dataset: a fixture)


def test_one_trial_learns_loss_goes_down_and_the_model_loads_back(ray_local, local_dataset):
    store, version = local_dataset
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["mlp1"], max_epochs=3,
                            train_rows=3000, test_rows=500)
    metrics = run_trials(Run.on_published_dataset(config, store, "learns", version))["mlp1"]

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

    # The protocol reached fit: Adam with its default settings, categorical cross-entropy, and batch 128,
    # read from the optimizer's step count (3 epochs of ceil(2400 / 128) = 19 steps; batch 32 would give 75).
    assert model.optimizer.get_config() == {**keras.optimizers.Adam().get_config(), "name": model.optimizer.name}
    assert model.loss == "categorical_crossentropy"
    assert int(model.optimizer.iterations.numpy()) == 3 * math.ceil(2400 / 128)


@pytest.fixture(scope="module")
def protocol_dataset(tmp_path_factory, raw_dataset):
    store = open_store(str(tmp_path_factory.mktemp("protocol-store")))
    return store, publish_dataset(raw_dataset, store).version


def test_early_stopping_fires_and_a_stopped_checkpoint_resumes_without_training_more(ray_local, protocol_dataset):
    """patience 0: the trial stops at its first epoch without a better val_accuracy. Its publishing is made to
    fail (a file where its artifact folder goes, max_failures 0), so the run errors with a stopped=True checkpoint;
    resumed, the trial must publish from that checkpoint and train no further."""
    store, version = protocol_dataset
    run_id = f"stops-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["baseline"], max_epochs=40, patience=0,
                            train_rows=1000, test_rows=200, max_failures=0)
    blocker = store.root / f"runs/{run_id}/baseline"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError):
        run_trials(Run.on_published_dataset(config, store, run_id, version))

    state = newest_checkpoint_state(store, run_id)
    accuracies = [row["val_accuracy"] for row in state["history"]]
    assert state["early_stopping"]["stopped"] and len(accuracies) < config.max_epochs
    # EarlyStopping(patience=0): every epoch but the last improved on the best so far; the last did not.
    assert all(later > max(accuracies[:i + 1]) for i, later in enumerate(accuracies[1:-1]))
    assert len(accuracies) >= 2 and accuracies[-1] <= max(accuracies[:-1])

    blocker.unlink()
    metrics = run_trials(Run.on_published_dataset(config, store, run_id, version))["baseline"]
    assert metrics["epochs"] == metrics["resumed_from_epoch"] == len(accuracies)
    assert store.get_bytes(f"runs/{run_id}/baseline/history.csv").decode().count("\n") == 1 + len(accuracies)


@pytest.mark.slow
def test_a_trial_killed_after_epoch_2_ends_bit_identical_to_one_never_interrupted(ray_local, protocol_dataset):
    store, version = protocol_dataset
    # 24,000 fit rows: epochs long enough (~1 s) that the kill lands after epoch 2's checkpoint, before the end.
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["mlp3_dropout"], max_epochs=4,
                            train_rows=30_000, test_rows=500, max_failures=2)
    straight, killed_run = f"straight-{uuid.uuid4().hex[:6]}", f"killed-{uuid.uuid4().hex[:6]}"
    run_trials(Run.on_published_dataset(config, store, straight, version))


    with trials_killed_after(store, killed_run, epochs=2, interval=0.05) as killed:
        metrics = run_trials(Run.on_published_dataset(config, store, killed_run, version))["mlp3_dropout"]

    assert killed, "no trial process was found to kill"
    assert 2 <= metrics["resumed_from_epoch"] < 4, "the kill did not land between epoch 2 and the end"
    models = [keras.saving.load_model(store.root / f"runs/{run}/mlp3_dropout/model.keras", safe_mode=True)
              for run in (straight, killed_run)]
    assert same_state(*models)


def test_a_run_killed_before_tunes_first_state_save_starts_its_trials_afresh(ray_local, local_dataset):
    """Killed during Tune's start-up: tuner.pkl written, no experiment state. The next attempt trains the trial
    from the start (nothing was trained) instead of failing to restore trials that were never saved."""
    from tasks.tune.fanout import has_experiment_state, make_tuner

    store, version = local_dataset
    run_id = f"killed-at-start-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["baseline"], max_epochs=1,
                            train_rows=1000, test_rows=200)
    run = Run.on_published_dataset(config, store, run_id, version)
    make_tuner(run, Experiment("tune", [trial_spec(run, "tune", "baseline", recipe_for(config.model_dump(), "baseline"))]))  # what a run killed right after making its Tuner leaves behind
    filesystem, _ = store.arrow_filesystem()
    tune_folder = store.root / "runs" / run_id / "tune"
    assert (tune_folder / "tuner.pkl").is_file() and not has_experiment_state(filesystem, str(tune_folder))
    metrics = run_trials(Run.on_published_dataset(config, store, run_id, version))["baseline"]
    assert metrics["epochs"] == 1 and metrics["resumed_from_epoch"] == 0
    assert has_experiment_state(filesystem, str(tune_folder))


def train_with_a_file_size_limit(config: dict) -> None:
    """train_trial in a Tune trial whose files may not grow past 256 KiB: its first checkpoint's model.keras
    (~800 KB) really fails with EFBIG. SIGXFSZ is blocked in this thread only (signal handlers belong to the
    main thread), so the write returns the error instead of killing the trial's process."""
    import resource

    from tasks.model.training import train_trial

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGXFSZ})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
    try:
        train_trial(config)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_trial_whose_checkpoint_runs_out_of_space_fails_with_one_line_saying_where(ray_local, local_dataset):
    import sys
    import tempfile

    import ray

    from tasks.tune.fanout import make_tuner
    from tasks.tune.progress import trial_error_line

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the trial's process cannot import tests/
    store, version = local_dataset
    config = PipelineConfig(preset="quick", store=store.uri, architectures=["mlp1"], max_epochs=1,
                            train_rows=1000, test_rows=200, max_failures=0)
    run = Run.on_published_dataset(config, store, f"full-{uuid.uuid4().hex[:6]}", version)
    specs = [trial_spec(run, "tune", "mlp1", recipe_for(config.model_dump(), "mlp1"))]
    results = make_tuner(run, Experiment("tune", specs, trainable=train_with_a_file_size_limit)).fit()
    line = trial_error_line(results[0].error)
    assert line.startswith(f"DiskFullError: no space left to write a checkpoint at {tempfile.gettempdir()}/"), line
    assert "File too large" in line and "TMPDIR" in line and "\n" not in line
