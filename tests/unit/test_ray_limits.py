"""Ray limits a user meets before any trial runs, checked without Ray: an address where nothing answers, or that
is not host:port, and a bad connect timeout. The same through the real `fmnist` command: tests/cli/test_ray_limits.py;
trials no node can hold: tests/integration/test_ray_limits.py and test_cluster.py."""

from __future__ import annotations

import time

import pytest

from tasks.errors import ConfigError
from tasks.tune.cluster import RayConnectError, check_ray_reachable


def test_an_address_where_nothing_listens_fails_within_the_deadline():
    started = time.monotonic()
    with pytest.raises(RayConnectError) as error:
        check_ray_reachable("127.0.0.1:1", timeout_s=1.5)
    assert 1.5 <= time.monotonic() - started < 10
    assert str(error.value).startswith("cannot connect to the Ray cluster at 127.0.0.1:1 within 1.5 s: ")
    assert "check --ray-address / RAY_ADDRESS, or leave it empty for a local Ray" in str(error.value)


@pytest.mark.parametrize("address, expected", [
    ("head", "expected host:port"), ("ray://", "expected ray://host:port")])
def test_an_address_that_is_not_host_port_is_refused_at_once(address, expected):
    with pytest.raises(RayConnectError, match=expected):
        check_ray_reachable(address, timeout_s=30)


def test_a_bad_connect_timeout_names_the_variable(monkeypatch):
    monkeypatch.setenv("FMNIST_RAY_CONNECT_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="FMNIST_RAY_CONNECT_TIMEOUT_S"):
        check_ray_reachable("127.0.0.1:1")
