"""The integration tier: real Ray, Prefect, SeaweedFS and flows (fixtures in tests/conftest.py). Store-backed tests
run here on SeaweedFS: the unit tier's again (tests/integration/on_s3.py) and this tier's own."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", params=["s3"])
def backend(request) -> str:
    return request.param
