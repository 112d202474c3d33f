"""The nightly deployment's settings, checked before any Prefect server is asked (the deployment on a real server:
tests/integration/test_deployment.py)."""

import pytest

from flows.deploy import nightly_deployment
from tasks.config import PipelineConfig
from tasks.errors import ConfigError


@pytest.mark.parametrize("kwargs, message", [({"timezone": "Mars/Base"}, "time zone"), ({"cron": "61 * * *"}, "cron"),
                                             ({"on_collision": "ignore"}, "on-collision")])
def test_bad_schedule_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError) as error:
        nightly_deployment(PipelineConfig(), **kwargs)
    assert message in str(error.value)


def test_a_deployments_runs_get_a_time_limit_the_searchs_longer_and_after_its_budget():
    from tasks.config import SearchConfig

    assert nightly_deployment(PipelineConfig()).parameters["config"]["timeout"] == 6 * 3600
    assert nightly_deployment(SearchConfig(), flow="search").parameters["config"]["timeout"] == 24 * 3600
    assert nightly_deployment(PipelineConfig(timeout="90m")).parameters["config"]["timeout"] == 5400
    with pytest.raises(ConfigError) as error:
        nightly_deployment(SearchConfig(time_budget="8h", timeout="6h"), flow="search")
    assert "--timeout 6h is not longer than the search's --time-budget 8h" in str(error.value)


def test_the_parameters_tabs_default_is_what_the_deployments_runs_get(tmp_path):
    """Not the flow signature's PipelineConfig() (max_epochs 100 from the full preset, the store resolved here): the
    deployment's own values, the preset's fields empty; each deployment its own."""
    from tasks.config import SearchConfig

    run = nightly_deployment(PipelineConfig(preset="quick", store=str(tmp_path / "a")))
    search = nightly_deployment(SearchConfig(store=str(tmp_path / "b")), flow="search", name="nightly-search")
    for deployment, store in ((run, tmp_path / "a"), (search, tmp_path / "b")):
        default = deployment._parameter_openapi_schema.properties["config"]["default"]
        assert default == deployment.parameters["config"] and default["store"] == str(store)
        assert default["max_epochs"] is None and default["train_rows"] is None
    assert nightly_deployment(PipelineConfig(max_epochs=3, store=str(tmp_path)))._parameter_openapi_schema.properties[
        "config"]["default"]["max_epochs"] == 3
