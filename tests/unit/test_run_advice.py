"""Decisions a user acts on, around a run (issue 17 §5, issue 21 X5, X10, and the listing's order):

- every advice line names a command that works for that kind of run, with the options that find it (--store, and
  --s3-endpoint when the environment does not give it); a search's is `fmnist search --resume ID`, which brings
  back the options it began with;
- a search's run id reused by a run (or a run's by a search) says what it is;
- `fmnist run --resume` of a run that is not there creates nothing;
- `fmnist runs` orders by the start the run recorded, not by config.json's write time;
- a resumed `--recipe best` run keeps the recipes it began with; a retried search finds its own recipe stored;
- under label smoothing, metrics.json records both test losses and which one history.csv's loss is.
"""

from __future__ import annotations

import json
import os
import shlex

import numpy as np
import pytest

from flows.cli import main
from flows.cli.launch import config_from
from flows.cli.options import parser
from tasks.config import PipelineConfig, SearchConfig, config_record
from tasks.errors import ConfigError
from tasks.keys import RunPaths
from tasks.model.recipes import KEPT_WORDS, Recipe, keep_if_better
from tasks.runs.hints import resume_command, store_options
from tasks.runs.run import claim_record, claim_run, read_stored_config, resolve_recipes
from tasks.runs.runlist import list_runs, show_run


def advised_command(text: str) -> str:
    """The command between backticks in an advice line that starts with `fmnist `."""
    commands = [part for part in text.split("`")[1::2] if part.startswith("fmnist ")]
    assert commands, text
    return commands[-1]


def parsed(command: str):
    """The command as `fmnist` would parse it (argparse exits on an unknown option: the command would not work)."""
    words = shlex.split(command)
    assert words[0] == "fmnist"
    return parser().parse_args(words[1:])


def killed_search(store, **options) -> SearchConfig:
    """A search that was claimed and then killed: its config.json, nothing else."""
    config = SearchConfig(run_id="s1", store=store.uri, **options)
    store.put_bytes(RunPaths("s1").config, claim_record(config, 1_700_000_000.0))
    return config


# --- X5: a killed search -----------------------------------------------------------------------------------------

def test_a_killed_search_is_resumable_and_its_advice_resumes_it_with_its_options(store):
    began = killed_search(store, preset="quick", architectures=["mlp1", "cnn2"], num_samples=4, seeds=2,
                          time_budget="2h", warm_start=False)
    text = show_run(store, "s1")
    assert text.startswith("run s1: resumable")
    assert "fmnist run --resume" not in text
    args = parsed(advised_command(text))
    assert (args.command, args.resume, args.store) == ("search", "s1", store.uri)
    assert config_from(args) == began  # `fmnist search --resume s1 --store …`: the search as it began
    listing = list_runs(store)
    assert "| s1 |" in listing and "| search | resumable |" in listing


def test_a_resumed_search_keeps_what_decides_its_trials_and_takes_a_new_time_budget(store):
    killed_search(store, preset="quick", architectures=["mlp1"], num_samples=4)
    resumed = config_from(parsed(f"fmnist search --resume s1 --store {store.uri} --time-budget 1h"))
    assert (resumed.num_samples, resumed.time_budget, resumed.architectures) == (4, 3600.0, ["mlp1"])
    for changed in ("--num-samples 9", "--scheduler fifo", "--max-epochs 3", "--architectures cnn2"):
        with pytest.raises(ConfigError) as caught:
            config_from(parsed(f"fmnist search --resume s1 --store {store.uri} {changed}"))
        message = str(caught.value)
        assert "a resumed search keeps" in message and "\n" not in message
        assert parsed(advised_command(message)).resume == "s1"
    with pytest.raises(ConfigError, match="no such search"):
        config_from(parsed(f"fmnist search --resume nope --store {store.uri}"))
    assert not store.exists(RunPaths("nope").config)


def test_a_killed_run_is_resumable_with_the_store_named(store):
    store.put_bytes(RunPaths("r1").config, claim_record(PipelineConfig(run_id="r1", store=store.uri), 1.7e9))
    text = show_run(store, "r1")
    assert text.startswith("run r1: resumable")
    args = parsed(advised_command(text))
    assert (args.command, args.resume, args.store) == ("run", "r1", store.uri)


# --- issue 17 §5: a search's run id reused by a run, and a run's by a search ---------------------------------------

def test_a_search_id_reused_by_a_run_says_it_is_a_search(store):
    killed_search(store, preset="quick")
    for claim in (lambda: read_stored_config(store, "s1"),  # `fmnist run --resume s1`, `--run-id s1`
                  lambda: claim_run(PipelineConfig(run_id="s1", store=store.uri), store)):  # the UI, a deployment
        with pytest.raises(ConfigError) as caught:
            claim()
        message = str(caught.value)
        assert "is a search's (`fmnist search`), not a run's" in message and "choose another --run-id" in message
        assert "not a valid run config" not in message and "restore it from a backup" not in message
        assert parsed(advised_command(message)).command == "search" and "\n" not in message
    assert not store.exists(RunPaths("s1").lease)  # refused before its lease was touched


def test_a_search_config_the_run_model_refuses_is_still_recognised_as_a_search(store):
    """A search's config.json that no longer validates (a field renamed since) is still a search's, not "not a
    valid run config … restore it from a backup"."""
    values = {**json.loads(config_record(SearchConfig(run_id="s2", store=store.uri))), "retired_field": 1}
    store.put_bytes(RunPaths("s2").config, json.dumps(values).encode())
    with pytest.raises(ConfigError, match="is a search's .* not a run's"):
        read_stored_config(store, "s2")


def test_a_run_id_reused_by_a_search_says_it_is_a_run(store):
    claim_run(PipelineConfig(run_id="r2", store=store.uri, architectures=["mlp1"]), store).release()
    with pytest.raises(ConfigError) as caught:
        claim_run(SearchConfig(run_id="r2", store=store.uri, architectures=["mlp1"]), store)
    message = str(caught.value)
    assert "is a run's (`fmnist run`), not a search's" in message
    assert parsed(advised_command(message)).resume == "r2"


# --- X10: hints carry the options that find the run; a failed lookup creates nothing -------------------------------

def test_a_hint_names_the_store_and_an_endpoint_the_environment_does_not_give(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    args = parsed(resume_command("f9", "s3://rtb/fmnist", "http://10.0.0.5:8333"))
    assert (args.resume, args.store, args.s3_endpoint) == ("f9", "s3://rtb/fmnist", "http://10.0.0.5:8333")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.5:8333")
    assert store_options("s3://rtb/fmnist", "http://10.0.0.5:8333") == " --store s3://rtb/fmnist"
    assert store_options("/data/my store", None) == " --store '/data/my store'"


def test_a_changed_protocol_refusal_names_the_store(store):
    claim_run(PipelineConfig(run_id="r3", store=store.uri, architectures=["mlp1"]), store).release()
    with pytest.raises(ConfigError) as caught:
        claim_run(PipelineConfig(run_id="r3", store=store.uri, architectures=["cnn2"]), store)
    args = parsed(advised_command(str(caught.value)))
    assert (args.resume, args.store) == ("r3", store.uri)


def test_resuming_a_run_that_is_not_there_creates_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--resume", "f9"]) == 2
    err = capsys.readouterr().err
    assert "--resume f9: no such run" in err and "no such folder" in err and "--store" in err
    assert list(tmp_path.iterdir()) == []  # no ./artifacts left behind


# --- `fmnist runs` orders by the start the run recorded ------------------------------------------------------------

def test_runs_are_ordered_by_their_recorded_start_not_the_files_write_time(store, tmp_path):
    for run_id, started in (("older", 1_700_000_000.0), ("newer", 1_700_086_400.0)):
        store.put_bytes(RunPaths(run_id).config, claim_record(PipelineConfig(run_id=run_id, store=store.uri), started))
    if store.uri.startswith("/"):  # a copy of the folders: the older one written last
        os.utime(os.path.join(store.uri, RunPaths("newer").config), (1_000_000_000, 1_000_000_000))
    rows = [line for line in list_runs(store).splitlines() if line.startswith("| newer") or line.startswith("| older")]
    assert [row.split(" | ")[0] for row in rows] == ["| newer", "| older"]
    assert "| 2023-11-14 22:13 |" in rows[1]  # 1_700_000_000 in UTC


def test_a_claimed_run_records_when_it_started(store):
    run = claim_run(PipelineConfig(run_id="r4", store=store.uri, architectures=["mlp1"]), store)
    run.release()
    record = json.loads(store.get_bytes(RunPaths("r4").config))
    assert record["kind"] == "run" and record["started_at"].endswith("Z")
    assert read_stored_config(store, "r4") == run.config  # the record's own keys are not config fields


# --- issue 17 §5: the recipes of a resumed 'best' run, and the stored best recipe on a retry -----------------------

def best(run_id: str, val: float, rate: float = 0.002) -> dict:
    return {"architecture": "mlp1", "recipe": Recipe(learning_rate=rate).model_dump(), "val_accuracy_mean": val,
            "test_accuracy_mean": val, "run_id": run_id}


def test_a_retried_search_finds_its_own_recipe_stored(store):
    assert keep_if_better(store, "full", "mlp1", best("s1", 0.90)) == "stored"
    assert keep_if_better(store, "full", "mlp1", best("s1", 0.90)) == "already ours"  # its own earlier write
    assert keep_if_better(store, "full", "mlp1", best("s2", 0.90)) == "kept the stored one"
    assert "this run" in KEPT_WORDS["already ours"] and "kept" not in KEPT_WORDS["already ours"]


def test_resuming_a_best_run_from_the_ui_keeps_the_recipes_it_began_with(store):
    keep_if_better(store, "quick", "mlp1", best("s1", 0.80, rate=0.002))
    form = PipelineConfig(preset="quick", recipe="best", architectures=["mlp1"], store=store.uri, run_id="b1")
    first = claim_run(resolve_recipes(form, store), store)  # as flows.steps.claim does
    first.release()
    keep_if_better(store, "quick", "mlp1", best("s2", 0.85, rate=0.005))  # a newer search stored a better one
    resumed = claim_run(resolve_recipes(form, store), store)  # the same form again: no recipes in it
    resumed.release()
    assert resumed.resumed and resumed.config.recipes == first.config.recipes
    assert resumed.config.recipes["mlp1"]["learning_rate"] == 0.002


# --- issue 17 §5: which loss the history records under label smoothing ---------------------------------------------

def test_under_label_smoothing_both_test_losses_are_recorded(raw_dataset):
    import keras

    from tasks.model.architectures import build_model
    from tasks.model.recipes import compile_with_recipe
    from tasks.model.training import evaluate, one_hot, trial_data

    keras.utils.set_random_seed(0)
    arrays = {"train": (raw_dataset.train_images[:500], raw_dataset.train_labels[:500]),
              "test": (raw_dataset.test_images[:300], raw_dataset.test_labels[:300])}
    model = build_model("baseline")
    compile_with_recipe(model, Recipe(label_smoothing=0.1), fit_rows=400)
    data = trial_data(arrays, 0.2, model.input_shape[1:])
    model.fit(data.x_fit, data.y_fit, epochs=1, verbose=0)
    result = evaluate(model, data, label_smoothing=0.1)
    trained_on, _ = model.evaluate(data.x_test, one_hot(data.test_labels), verbose=0)  # Keras' smoothed loss
    plain = float(np.mean(keras.losses.categorical_crossentropy(one_hot(data.test_labels),
                                                        model.predict(data.x_test, verbose=0))))
    assert result["label_smoothing"] == 0.1
    assert result["test_loss_smoothed"] == pytest.approx(trained_on, rel=1e-4)  # what history.csv's loss is
    assert result["test_loss"] == pytest.approx(plain, rel=1e-4) and result["test_loss"] < trained_on
    unsmoothed = evaluate(model, data)
    assert unsmoothed["test_loss_smoothed"] == pytest.approx(unsmoothed["test_loss"])
    assert np.isclose(unsmoothed["test_loss"], result["test_loss"])


def test_every_attempt_of_a_flow_run_claims_the_same_run_or_search():
    """The UI's Retry (and a Prefect retry) runs the same flow run again: its run id, a search's too, is the same,
    so the retry resumes instead of starting another (flows.flow_run)."""
    from flows.flow_run import run_id_of_flow_run

    origin = {"flow_run_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "created": "20261202-020000", "attempt": 1}
    assert run_id_of_flow_run(origin) == "20261202-020000-c3d2e1f0"
    assert run_id_of_flow_run({**origin, "attempt": 3}) == run_id_of_flow_run(origin)
    assert run_id_of_flow_run(None) is None


def test_a_stored_recipe_is_replaced_only_by_one_better_by_two_standard_errors(store):
    """Issue 27 §6: every search reuses the same validation rows, so the stored record is the best of many noisy
    means; a new one replaces it only when ahead by two standard errors of the difference (from the seeds' spread)."""
    assert keep_if_better(store, "full", "mlp1", {**best("s1", 0.900), "val_accuracy_se": 0.001}) == "stored"
    # ahead by 0.002, two SE of the difference are 2 x sqrt(0.001² + 0.001²) = 0.0028: kept
    assert keep_if_better(store, "full", "mlp1", {**best("s2", 0.902), "val_accuracy_se": 0.001}) == \
        "kept the stored one"
    assert keep_if_better(store, "full", "mlp1", {**best("s3", 0.903), "val_accuracy_se": 0.001}) == "stored"
    assert "two standard errors" in KEPT_WORDS["kept the stored one"]
