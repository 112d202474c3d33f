"""`fmnist deploy --pool NAME`'s settings, checked before any Prefect server is asked (the pool deployment on a real
server: tests/integration/test_pool_deployment.py; as typed, with a real worker: tests/cli/test_pool_deployment.py)."""

from __future__ import annotations

import pytest

from flows.deploy import pool_deployment
from tasks.config import PipelineConfig
from tasks.errors import ConfigError


def test_an_unknown_flow_is_named():
    with pytest.raises(ConfigError) as error:
        pool_deployment(PipelineConfig(), flow="serch")
    assert "--flow 'serch': expected one of run" in str(error.value)
