"""Fetching the four raw files from an s3:// source on the session's SeaweedFS (the rest of the fetching and its bad
inputs: tests/unit/test_dataset.py)."""

from __future__ import annotations

import pytest

from tasks.data.dataset import RAW_FILES, fetch_dataset
from tasks.errors import DatasetError
from tests.unit.test_dataset import real_gz  # noqa: F401  (a fixture: the four .gz files as bytes)

TRAIN_IMAGES, TEST_LABELS = RAW_FILES["train-images"], RAW_FILES["test-labels"]


def test_s3_source(s3_server, s3_store_uri, real_gz, monkeypatch) -> None:
    from tasks.data.store import open_store

    store = open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    for name, data in real_gz.items():
        store.put_bytes(name, data)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    messages: list[str] = []
    got = fetch_dataset(s3_store_uri, progress=messages.append)
    assert got.source_sha256 == {key: raw.sha256 for key, raw in RAW_FILES.items()}
    assert f"{s3_store_uri}/{TRAIN_IMAGES.filename}.gz" in messages[0]

    store.delete(f"{TEST_LABELS.filename}.gz")
    with pytest.raises(DatasetError, match=f"expected {TEST_LABELS.filename}.gz"):
        fetch_dataset(s3_store_uri)


def test_s3_source_uses_the_explicit_endpoint(s3_server, s3_store_uri, real_gz, monkeypatch) -> None:
    """--s3-endpoint reaches the s3:// source: no AWS_ENDPOINT_URL to fall back on (issue 9, §6.1)."""
    from tasks.data.store import open_store

    store = open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    for name, data in real_gz.items():
        store.put_bytes(name, data)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    got = fetch_dataset(s3_store_uri, s3_endpoint=s3_server.endpoint)
    assert got.source_sha256 == {key: raw.sha256 for key, raw in RAW_FILES.items()}
