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
