"""tests/unit/test_store_contract.py's contract again, on the session's SeaweedFS (tests/integration/on_s3.py); then
S3's own error messages (unreachable endpoint, missing bucket, wrong or no credentials) and the server fixture's
promises."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

import tests.unit.test_store_contract as unit
from tasks.data.store import S3Store, open_store
from tasks.errors import StoreError
from tests.integration.on_s3 import on_s3

globals().update(on_s3(unit))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint(s3_server, monkeypatch) -> None:
    monkeypatch.setenv("FMNIST_S3_MAX_ATTEMPTS", "2")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        open_store("s3://some-bucket/prefix", s3_endpoint=endpoint)
    message = str(caught.value)
    assert f"cannot reach S3 endpoint {endpoint}" in message
    assert "s3://some-bucket/prefix" in message and "--s3-endpoint" in message
    assert time.monotonic() - started < 20


def test_unreachable_endpoint_from_aws_endpoint_url(s3_server, monkeypatch) -> None:
    monkeypatch.setenv("FMNIST_S3_MAX_ATTEMPTS", "1")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    with pytest.raises(StoreError, match=f"cannot reach S3 endpoint {endpoint}"):
        open_store("s3://some-bucket")


def test_missing_bucket(s3_server) -> None:
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError) as caught:
        open_store(f"s3://{bucket}/prefix", s3_endpoint=s3_server.endpoint)
    message = str(caught.value)
    assert f"bucket '{bucket}' does not exist" in message and s3_server.endpoint in message
    assert "create it or fix the store URI" in message


def test_wrong_secret_key(s3_server, s3_store_uri, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
    with pytest.raises(StoreError) as caught:
        open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    message = str(caught.value)
    assert "rejected the credentials" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "wrong-secret-0123456789" not in message and s3_server.secret_key not in message

    # The same on a write (SignatureDoesNotMatch comes back with a body, not a bare 403).
    bucket, prefix = s3_store_uri[len("s3://"):].split("/", 1)
    store = S3Store(bucket, prefix, endpoint=s3_server.endpoint)
    with pytest.raises(StoreError, match="rejected the credentials"):
        store.put_bytes("x", b"1")
    with pytest.raises(StoreError, match="rejected the credentials"):
        store.get_bytes("x")


def test_unknown_access_key(s3_server, s3_store_uri, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "NOSUCHKEY")
    with pytest.raises(StoreError, match="rejected the credentials"):
        open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)


def test_no_credentials_at_all(s3_server, s3_store_uri, monkeypatch, tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StoreError) as caught:
        open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    assert "no AWS credentials found" in str(caught.value)


def test_s3_client_environment_is_the_servers(s3_server) -> None:
    """The fixture's promise: the process environment signs with the server's pair."""
    assert os.environ["AWS_ACCESS_KEY_ID"] == s3_server.access_key
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == s3_server.secret_key
    s3_server.client().head_bucket(Bucket=s3_server.bucket)


def test_s3_server_can_be_stopped_and_started_again(s3_server, s3_store_uri, monkeypatch) -> None:
    """The fixture's stop()/start() for fault tests: the store goes away, then comes back with its data."""
    store = open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    store.put_bytes("survives/restart.txt", b"still here")
    monkeypatch.setenv("FMNIST_S3_MAX_ATTEMPTS", "1")
    s3_server.stop()
    try:
        assert not s3_server.running
        with pytest.raises(StoreError, match=f"cannot reach S3 endpoint {s3_server.endpoint}"):
            S3Store(store.bucket, store.prefix, endpoint=s3_server.endpoint).get_bytes("survives/restart.txt")
    finally:
        s3_server.start()
    assert store.get_bytes("survives/restart.txt") == b"still here"  # the same client, same endpoint
