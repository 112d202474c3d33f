"""Ray limits a user meets before any trial runs, checked without Ray: an address where nothing answers, or that
is not host:port, and a bad connect timeout. The same through the real `fmnist` command: tests/cli/test_ray_limits.py;
trials no node can hold: tests/integration/test_ray_limits.py and test_cluster.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

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


# ---- an open port that is not Ray (issue 21, X2) ----------------------------------------------------------------
# Before the protocol check, a port that accepted TCP passed, and ray.init hung there for minutes
# ("Failed to connect to GCS ... within 5 seconds" every ~40 s). Real listeners on 127.0.0.1, no Ray needed.


@pytest.fixture
def web_server() -> Iterator[int]:
    """A real HTTP/1.1 server (what an S3 or dashboard port is) on a free port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never says a byte."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("scheme, what", [("", "Ray GCS"), ("ray://", "Ray Client server")])
def test_a_web_server_port_is_refused_as_not_ray_in_one_line_at_once(web_server, scheme, what):
    started = time.monotonic()
    with pytest.raises(RayConnectError) as error:
        check_ray_reachable(f"{scheme}127.0.0.1:{web_server}", timeout_s=30)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert message.startswith(f"cannot use the Ray cluster at {scheme}127.0.0.1:{web_server}: something that is not "
                              f"a {what} answers on 127.0.0.1:{web_server}"), message
    assert message.endswith("check --ray-address / RAY_ADDRESS, or leave it empty for a local Ray"), message
    assert "\n" not in message


def test_a_port_that_accepts_and_stays_silent_is_refused_within_the_connect_timeout(silent_listener):
    started = time.monotonic()
    with pytest.raises(RayConnectError) as error:
        check_ray_reachable(f"127.0.0.1:{silent_listener}", timeout_s=2)
    assert 1 <= time.monotonic() - started < 6
    assert f"accepts connections on 127.0.0.1:{silent_listener} but does not answer as a Ray GCS" in str(error.value)
