"""The unit tier starts no server: no SeaweedFS, no Prefect server, no Ray (a test asking for one fails at once,
naming the tier it belongs to); its store-backed tests run on a local folder (tests/integration/on_s3.py runs them
again on SeaweedFS)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="session", params=["local"])
def backend(request) -> str:
    return request.param


def _not_here(what: str) -> None:
    pytest.fail(f"{what} is not for the unit tier: move the test to tests/integration (or tests/cli)", pytrace=False)


@pytest.fixture(scope="session")
def s3_server():
    _not_here("the S3 server (s3_server)")


@pytest.fixture(scope="session")
def prefect_api():
    _not_here("a Prefect server (prefect_api)")


@pytest.fixture(scope="session")
def _ray_session():
    _not_here("a Ray session (ray_local)")


@pytest.fixture(scope="module")
def ray_local():
    _not_here("a local Ray (ray_local)")


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and getattr(ray, "is_initialized", lambda: False)()


@pytest.fixture(autouse=True)
def _no_ray_left_running():
    """A unit test that started Ray (through code under test) fails: the tier must stay quick and Ray-free. In the
    whole suite the integration tier runs first in this process and may leave its Ray up: only a test that found
    Ray down and left it up started it."""
    was_up = _ray_initialized()
    yield
    if not was_up and _ray_initialized():
        sys.modules["ray"].shutdown()
        pytest.fail("this unit test started Ray: move it to tests/integration", pytrace=False)
