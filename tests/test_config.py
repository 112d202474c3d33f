"""Bad configuration: every field, out of range or of the wrong type, gets one message naming it —
through the CLI and through Prefect's parameters alike."""

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
    "promotion_margin": 2,
    "ray_address": 5,
    "run_id": "../other-run",
}
# What a user can type on the command line (strings only): the CLI options of those fields.
CLI_BAD = {name: value for name, value in BAD.items() if not isinstance(value, (int, float, list))} | {
    "max_epochs": "-1", "gpus_per_trial": "1.5", "train_rows": "fifty", "architectures": "baseline,cnn3",
    "promotion_margin": "2", "cpus_per_trial": "0"}


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


def test_prefect_parameters_are_checked_by_the_same_model(prefect_api):
    from prefect.exceptions import ParameterTypeError

    from flows.run import run_flow

    with pytest.raises(ParameterTypeError) as error:
        run_flow(config={"preset": "quick", "max_epochs": -1, "gpus_per_trial": 3})
    assert "max_epochs" in str(error.value) and "gpus_per_trial" in str(error.value)


def test_resume_of_a_run_that_does_not_exist_is_refused(tmp_path, capsys):
    assert main(["run", "--resume", "no-such-run", "--store", str(tmp_path)]) == 2
    assert "--resume no-such-run: no such run" in capsys.readouterr().err


def test_deploy_without_a_prefect_server_says_how_to_start_one(monkeypatch, capsys):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["deploy"]) == 2
    assert "prefect server start" in capsys.readouterr().err
