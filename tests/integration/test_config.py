"""Bad configuration through Prefect's parameters: a flow run checks them with the same model as the CLI
(tests/unit/test_config.py), on the session's Prefect server."""

import pytest


def test_prefect_parameters_are_checked_by_the_same_model(prefect_api):
    from prefect.exceptions import ParameterTypeError

    from flows.run import run_flow

    with pytest.raises(ParameterTypeError) as error:
        run_flow(config={"preset": "quick", "max_epochs": -1, "gpus_per_trial": 3})
    assert "max_epochs" in str(error.value) and "gpus_per_trial" in str(error.value)
