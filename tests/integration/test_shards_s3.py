"""tests/unit/test_shards.py's store-backed tests again, on the session's SeaweedFS (tests/integration/on_s3.py),
and a shard changed on S3 after publication."""

from __future__ import annotations

import pytest

import tests.unit.test_shards as unit
from tasks.data.shards import load_split, publish_dataset
from tasks.data.store import open_store
from tasks.errors import DatasetError
from tests.integration.on_s3 import on_s3

globals().update(on_s3(unit))


def test_a_tampered_shard_on_s3(s3_server, s3_store_uri, raw_dataset) -> None:
    store = open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    result = publish_dataset(raw_dataset, store)
    shard = result.manifest["splits"]["test"]["shards"][0]
    data = bytearray(store.get_bytes(shard["key"]))
    data[-100] ^= 0xFF
    store.put_bytes(shard["key"], bytes(data))
    with pytest.raises(DatasetError, match=f"{s3_store_uri}/{shard['key']}: sha256 [0-9a-f]{{64}} but the manifest says"):
        load_split(store, result.version, "test")
