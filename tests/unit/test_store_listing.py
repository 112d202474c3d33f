"""The store contract for listing one level (`list_prefixes`) and for `modified_at`, on a folder (on SeaweedFS:
tests/integration/test_store_listing_s3.py)."""

from __future__ import annotations

import time

import pytest

from tasks.errors import StoreError
from tasks.data.store import LocalStore, Store


def test_list_prefixes_gives_the_folders_one_level_down(store: Store) -> None:
    for key in ("runs/b/config.json", "runs/a/run.json", "runs/a/baseline/metrics.json", "runs/a/tune/x/y.pkl",
                "runs/top.json", "models/champion.json"):
        store.put_bytes(key, b"{}")
    assert store.list_prefixes("runs/") == ["runs/a/", "runs/b/"]
    assert store.list_prefixes("runs/a/") == ["runs/a/baseline/", "runs/a/tune/"]
    assert store.list_prefixes("") == ["models/", "runs/"]
    assert store.list_prefixes("runs/b/") == [] and store.list_prefixes("nothing/") == []


def test_list_prefixes_skips_folders_without_objects(store: Store) -> None:
    store.put_bytes("runs/a/config.json", b"{}")
    if isinstance(store, LocalStore):  # an empty folder, or one holding only a write in progress, is not a run
        (store.root / "runs" / "empty").mkdir()
        (store.root / "runs" / "torn").mkdir()
        (store.root / "runs" / "torn" / ".config.json.tmp-123").write_bytes(b"{")
    assert store.list_prefixes("runs/") == ["runs/a/"]


def test_list_prefixes_pages_past_a_thousand(store: Store) -> None:
    """S3 answers at most 1,000 entries a request: the paginator must follow continuation tokens."""
    if isinstance(store, LocalStore):
        pytest.skip("pagination is S3's")
    from concurrent.futures import ThreadPoolExecutor

    names = [f"runs/r{i:04d}/config.json" for i in range(1003)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: store.put_bytes(key, b"{}"), names))
    found = store.list_prefixes("runs/")
    assert len(found) == 1003 and found[0] == "runs/r0000/" and found[-1] == "runs/r1002/"


def test_list_prefixes_wants_a_folder(store: Store) -> None:
    for bad in ("runs", "../", "/runs/"):
        with pytest.raises(StoreError, match="prefix"):
            store.list_prefixes(bad)


def test_modified_at(store: Store) -> None:
    assert store.modified_at("runs/a/config.json") is None
    before = time.time()
    store.put_bytes("runs/a/config.json", b"{}")
    written = store.modified_at("runs/a/config.json")
    assert written is not None and before - 5 <= written <= time.time() + 5  # S3 keeps whole seconds
