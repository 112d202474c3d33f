"""Bad configuration: every field, out of range or of the wrong type, gets one message naming it —
through the CLI (in-process) and, in tests/integration/test_config.py, through Prefect's parameters alike."""

import pytest

from flows.cli import main
from tasks.config import PipelineConfig, build_config
from tasks.errors import ConfigError

BAD = {
    "preset": "huge",
    "store": 5,
    "s3_endpoint": "minio:9000",
    "source": 5,
    "rows_per_shard": 0,
    "architectures": ["cnn3"],
    "max_epochs": -1,
    "batch_size": 0,
    "patience": -1,
    "train_rows": 50,
    "test_rows": 20_000,
    "seed": -1,
    "steps_per_execution": 0,
    "eval_batch_size": "big",
    "cpus_per_trial": 0,
    "gpus_per_trial": 1.5,
    "max_failures": -1,
    "store_wait_s": -5,
    "promotion_margin": 2,
    "promotion_alpha": 0,
    "ray_address": 5,
    "timeout": "6 days",
    "run_id": "../other-run",
    "recipe": "bestest",
    "recipes": {"cnn2": {"learning_rate": -1}},
}
# What a user can type on the command line (strings only): the CLI options of those fields.
CLI_BAD = {name: value for name, value in BAD.items() if not isinstance(value, (int, float, list, dict))} | {
    "max_epochs": "-1", "gpus_per_trial": "1.5", "train_rows": "fifty", "architectures": "baseline,cnn3",
    "promotion_margin": "2", "promotion_alpha": "0.9", "cpus_per_trial": "0"}


def test_every_field_has_a_bad_value_here():
    assert set(BAD) == set(PipelineConfig.model_fields)


@pytest.mark.parametrize("field", sorted(BAD))
def test_bad_value_is_one_message_naming_the_field(field):
    with pytest.raises(ConfigError) as error:
        build_config(**{field: BAD[field]})
    message = str(error.value)
    assert message.count("\n") == 0 and f"config field '{field}" in message


@pytest.mark.parametrize("field", sorted(CLI_BAD))
def test_cli_exits_2_naming_the_field(field, capsys):
    flag = "--" + field.replace("_", "-")
    assert main(["run", flag, CLI_BAD[field]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmnist run: error: config field") and f"'{field}" in err and "Traceback" not in err


def test_resume_of_a_run_that_does_not_exist_is_refused(tmp_path, capsys):
    assert main(["run", "--resume", "no-such-run", "--store", str(tmp_path)]) == 2
    assert "--resume no-such-run: no such run" in capsys.readouterr().err


def test_deploy_without_a_prefect_server_says_how_to_start_one(monkeypatch, capsys):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["deploy"]) == 2
    assert "prefect server start" in capsys.readouterr().err


def test_the_forms_schema_refuses_what_the_model_refuses():
    """Bounds the Prefect UI's form can check before submit are in the JSON schema, not only in validators."""
    import re

    properties = PipelineConfig.model_json_schema()["properties"]
    run_id = properties["run_id"]["anyOf"][0]["pattern"]
    endpoint = properties["s3_endpoint"]["anyOf"][0]["pattern"]
    assert re.match(run_id, "night-01") and not re.match(run_id, "../other-run")
    assert re.match(endpoint, "http://127.0.0.1:9000") and not re.match(endpoint, "minio:9000")
    assert not re.match(endpoint, "http://key:secret@minio:9000")
    for name in ("store", "source", "ray_address"):
        schema = properties[name].get("anyOf", [properties[name]])[0]
        assert not re.match(schema["pattern"], "s3://key:secret@bucket/x"), name
    assert all(field.get("description") for field in properties.values())


@pytest.mark.parametrize("field, value", [("source", "https://user:pass@mirror.example/fmnist"),
                                          ("s3_endpoint", "http://key:secret@minio:9000"),
                                          ("store", "s3://key:secret@bucket/fmnist"),
                                          ("ray_address", "ray://user:pass@head:10001")])
def test_credentials_in_urls_are_refused_without_echoing_them_into_anything_stored(field, value):
    with pytest.raises(ConfigError) as error:
        build_config(**{field: value})
    assert "credentials never go into the config" in str(error.value)


def test_a_relative_store_is_resolved_once_to_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert PipelineConfig().store == str(tmp_path / "artifacts")
    assert PipelineConfig(store="runs-here").store == str(tmp_path / "runs-here")
    assert PipelineConfig(store="file:./x").store == str(tmp_path / "x")
    assert PipelineConfig(store="file:///abs/y").store == "/abs/y"
    assert PipelineConfig(store="s3://bucket/prefix").store == "s3://bucket/prefix"
    # The trial gets the dumped config: absolute wherever Ray runs it.
    monkeypatch.chdir("/")
    assert PipelineConfig(**PipelineConfig(store=str(tmp_path / "artifacts")).model_dump()).store == str(tmp_path / "artifacts")


@pytest.mark.parametrize("form, expected", [
    ({"preset": "quick", "max_epochs": None, "train_rows": None, "test_rows": None}, (2, 3000, 1000)),
    ({"preset": "full", "max_epochs": None, "train_rows": None, "test_rows": None}, (100, None, None)),
    ({"preset": "quick", "max_epochs": 7, "train_rows": None, "test_rows": None}, (7, 3000, 1000)),
    ({"preset": "full", "train_rows": 60_000}, (100, 60_000, None)),
])
def test_a_preset_fills_empty_fields_and_given_values_win(form, expected):
    config = PipelineConfig(**form)
    assert (config.max_epochs, config.train_rows, config.test_rows) == expected


def test_protocol_names_what_was_overridden_and_comparability_follows():
    assert PipelineConfig(preset="full").comparable and PipelineConfig(preset="quick").comparable
    changed = PipelineConfig(preset="full", max_epochs=2)
    assert not changed.comparable and changed.protocol().startswith("preset 'full' with max_epochs=2: all 60,000")
    assert not PipelineConfig(preset="quick", seed=3).comparable
    assert PipelineConfig(preset="full", architectures=["cnn2"]).comparable  # a subset of models is still comparable
    form = PipelineConfig(preset="quick", store="/s").form_parameters()
    assert form["max_epochs"] is None and form["train_rows"] is None
    assert PipelineConfig(preset="quick", max_epochs=5).form_parameters()["max_epochs"] == 5


def test_resume_refuses_options_that_change_the_run_and_keeps_the_stored_config(tmp_path, capsys):
    """A quick run's stored config.json: `--resume ID` rebuilds it; protocol options given with it are refused by
    name, before Prefect starts; options that don't change the numbers (resources) are taken."""
    from flows.cli.launch import config_from
    from flows.cli.options import parser
    from tasks.runs.run import claim_run

    store = str(tmp_path / "store")
    run = claim_run(PipelineConfig(preset="quick", store=store, run_id="q1", architectures=["cnn2"]))
    assert not run.resumed and (tmp_path / "store/runs/q1/config.json").is_file()
    run.release()  # as a run that ended unfinished: resumable

    resumed = config_from(parser().parse_args(["run", "--resume", "q1", "--store", store, "--cpus-per-trial", "2"]))
    assert (resumed.preset, resumed.train_rows, resumed.architectures, resumed.cpus_per_trial) == ("quick", 3000, ["cnn2"], 2.0)

    for options, named in ((["--preset", "full"], "preset"), (["--max-epochs", "5"], "max_epochs"),
                           (["--architectures", "baseline"], "architectures"), (["--seed", "1"], "seed"),
                           (["--batch-size", "64"], "batch_size"), (["--train-rows", "6000"], "train_rows")):
        assert main(["run", "--resume", "q1", "--store", store, *options]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{named}: the run has" in err and "fmnist run --resume q1" in err, err

    # The flow's own claim (the UI path: every field sent) refuses the same.
    with pytest.raises(ConfigError, match="max_epochs: the run has 2, given 100"):
        claim_run(PipelineConfig(store=store, run_id="q1", architectures=["cnn2"], train_rows=3000, test_rows=1000))
    resumed_run = claim_run(PipelineConfig(preset="quick", store=store, run_id="q1", architectures=["cnn2"]))
    assert resumed_run.resumed
    resumed_run.release()
