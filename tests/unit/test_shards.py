"""Publishing the verified dataset as Parquet shards plus a manifest, and reading it back, on a folder (the tests
that take a store run again on SeaweedFS in tests/integration/test_shards_s3.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.errors import DatasetError, DatasetVersionNotFound
from tasks.data.shards import (
    CLASS_NAMES,
    DATASET_PREFIX,
    dataset_version,
    list_versions,
    load_manifest,
    load_split,
    publish_dataset,
    version_prefix,
)
from tasks.data.store import Store, open_store


def fresh_store(kind: str, request, tmp_path_factory) -> Store:
    if kind == "local":
        return open_store(str(tmp_path_factory.mktemp("store")))
    s3_server = request.getfixturevalue("s3_server")
    return open_store(f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex[:12]}", s3_endpoint=s3_server.endpoint)


@pytest.fixture(scope="module")
def published(backend, request, tmp_path_factory, raw_dataset):
    """(store, PrepareResult) of one publication on the tier's backend, shared by the read-only tests of this module."""
    store = fresh_store(backend, request, tmp_path_factory)
    return store, publish_dataset(raw_dataset, store)


@pytest.fixture
def empty_store(backend, request, tmp_path_factory) -> Store:
    return fresh_store(backend, request, tmp_path_factory)


def test_publish_writes_shards_and_a_manifest(published, raw_dataset) -> None:
    store, result = published
    assert result.created is True
    assert result.version == dataset_version(raw_dataset.source_sha256, 10_000)
    assert result.rows == {"train": 60_000, "test": 10_000}
    assert result.shard_count == 7

    manifest = load_manifest(store, result.version)
    assert manifest == result.manifest
    assert manifest["version"] == result.version and manifest["dataset"] == "fashion-mnist"
    assert manifest["source_sha256"] == raw_dataset.source_sha256
    assert manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["splits"]["train"]["class_counts"] == [6000] * 10
    assert manifest["splits"]["test"]["class_counts"] == [1000] * 10
    assert [s["rows"] for s in manifest["splits"]["train"]["shards"]] == [10_000] * 6
    assert [s["rows"] for s in manifest["splits"]["test"]["shards"]] == [10_000]

    shards = [s for info in manifest["splits"].values() for s in info["shards"]]
    for shard in shards:
        data = store.get_bytes(shard["key"])
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert len(data) == shard["bytes"]
    prefix = version_prefix(result.version)
    assert store.list_keys(prefix + "/") == sorted([s["key"] for s in shards] + [f"{prefix}/manifest.json"])
    assert list_versions(store) == [result.version]


def test_shard_schema(published) -> None:
    store, result = published
    first = result.manifest["splits"]["test"]["shards"][0]
    parquet = pq.ParquetFile(io.BytesIO(store.get_bytes(first["key"])))
    assert [(f.name, str(f.type)) for f in parquet.schema_arrow] == [
        ("index", "int32"), ("label", "uint8"), ("pixels", "fixed_size_binary[784]")
    ]
    assert parquet.metadata.num_rows == 10_000
    assert parquet.metadata.row_group(0).column(2).compression == "ZSTD"


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_is_byte_identical_to_the_raw_arrays(published, raw_dataset, split) -> None:
    store, result = published
    images, labels, index = load_split(store, result.version, split)
    raw_images, raw_labels = (
        (raw_dataset.train_images, raw_dataset.train_labels) if split == "train" else (raw_dataset.test_images, raw_dataset.test_labels)
    )
    assert images.dtype == np.uint8 and images.shape == raw_images.shape
    assert images.tobytes() == raw_images.tobytes()
    assert labels.dtype == np.uint8 and labels.tobytes() == raw_labels.tobytes()
    assert np.array_equal(index, np.arange(len(raw_labels)))


def test_rows_loads_only_the_first_rows(published, raw_dataset, monkeypatch) -> None:
    store, result = published
    reads: list[str] = []
    real_get = store.get_bytes
    monkeypatch.setattr(store, "get_bytes", lambda key: reads.append(key) or real_get(key))
    images, labels, index = load_split(store, result.version, "train", rows=12_345)
    assert images.shape == (12_345, 28, 28) and labels.shape == (12_345,)
    assert np.array_equal(images, raw_dataset.train_images[:12_345])
    assert np.array_equal(index, np.arange(12_345))
    assert [k for k in reads if k.endswith(".parquet")] == [s["key"] for s in result.manifest["splits"]["train"]["shards"][:2]]


def test_second_publish_is_a_no_op(published, raw_dataset, monkeypatch) -> None:
    store, result = published
    before = _object_stamps(store)
    writes: list[str] = []
    monkeypatch.setattr(store, "put_bytes", lambda key, data: writes.append(key))
    monkeypatch.setattr(store, "put_if_absent", lambda key, data: writes.append(key))
    messages: list[str] = []
    again = publish_dataset(raw_dataset, store, progress=messages.append)
    assert again.created is False and again.version == result.version
    assert again.manifest == result.manifest
    assert writes == []
    assert _object_stamps(store) == before
    assert messages == [f"dataset version {result.version} is already published in {store.uri}: nothing to do"]


def _object_stamps(store: Store) -> dict[str, tuple]:
    """Every object with its modification stamp (mtime_ns for a folder, ETag + LastModified on S3)."""
    from tasks.data.store import LocalStore

    if isinstance(store, LocalStore):
        return {p.relative_to(store.root).as_posix(): p.stat().st_mtime_ns for p in store.root.rglob("*") if p.is_file()}
    stamps = {}
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.prefix + "/"):
        for obj in page.get("Contents", []):
            stamps[obj["Key"]] = (obj["ETag"], obj["LastModified"], obj["Size"])
    return stamps


def test_missing_version_lists_the_versions_there(published) -> None:
    store, result = published
    with pytest.raises(DatasetVersionNotFound) as caught:
        load_split(store, "0123456789abcdef", "train")
    message = str(caught.value)
    assert "dataset version '0123456789abcdef' not found in " + store.uri in message
    assert f"versions there: ['{result.version}']" in message
    assert f"fmnist prepare --store {store.uri}" in message


def test_missing_version_in_an_empty_store(empty_store) -> None:
    with pytest.raises(DatasetVersionNotFound, match="versions there: none"):
        load_manifest(empty_store, "0123456789abcdef")
    assert list_versions(empty_store) == []


def test_unknown_split(published) -> None:
    store, result = published
    with pytest.raises(DatasetError, match=r"no split 'validation'; expected one of \['test', 'train'\]"):
        load_split(store, result.version, "validation")


class Killed(Exception):
    """Stands for the process dying at this point."""


def test_crash_before_the_manifest_publishes_nothing_and_the_next_run_completes(empty_store, raw_dataset, monkeypatch) -> None:
    store = empty_store
    real_put = store.put_if_absent

    def die_at_the_manifest(key: str, data: bytes) -> bool:
        if key.endswith("/manifest.json"):
            raise Killed(key)
        return real_put(key, data)

    with monkeypatch.context() as patch:
        patch.setattr(store, "put_if_absent", die_at_the_manifest)
        with pytest.raises(Killed, match="manifest.json"):
            publish_dataset(raw_dataset, store)
    version = dataset_version(raw_dataset.source_sha256, 10_000)
    assert store.list_keys(DATASET_PREFIX + "/")  # the shards were written...
    assert not store.exists(f"{version_prefix(version)}/manifest.json")  # ...but no manifest: not published
    assert list_versions(store) == []
    with pytest.raises(DatasetVersionNotFound):
        load_split(store, version, "test")

    result = publish_dataset(raw_dataset, store)
    assert result.created is True and result.version == version
    images, labels, _ = load_split(store, version, "test")
    assert images.tobytes() == raw_dataset.test_images.tobytes()
    assert list_versions(store) == [version]


def test_crash_between_shards_leaves_no_manifest(tmp_path, raw_dataset, monkeypatch) -> None:
    store = open_store(str(tmp_path))
    real_put = store.put_if_absent
    calls = []

    def put_then_die(key: str, data: bytes) -> bool:
        calls.append(key)
        if len(calls) == 3:
            raise Killed(key)
        return real_put(key, data)

    with monkeypatch.context() as patch:
        patch.setattr(store, "put_if_absent", put_then_die)
        with pytest.raises(Killed):
            publish_dataset(raw_dataset, store)
    assert len(store.list_keys()) == 2 and list_versions(store) == []
    result = publish_dataset(raw_dataset, store)
    assert result.created and len(store.list_keys()) == 8


def test_a_tampered_shard_is_refused_by_name(tmp_path, raw_dataset) -> None:
    store = open_store(str(tmp_path))
    result = publish_dataset(raw_dataset, store)
    shard = result.manifest["splits"]["train"]["shards"][1]
    other = store.get_bytes(result.manifest["splits"]["train"]["shards"][2]["key"])  # a valid shard, wrong place
    store.put_bytes(shard["key"], other)

    load_split(store, result.version, "train", rows=10_000)  # the first shard alone is fine
    with pytest.raises(DatasetError) as caught:
        load_split(store, result.version, "train")
    message = str(caught.value)
    assert store.url_for(shard["key"]) in message
    assert f"the manifest says {shard['sha256']}" in message and hashlib.sha256(other).hexdigest() in message
    assert "run `fmnist prepare` again" in message


def test_shard_layout_is_part_of_the_version(tmp_path, raw_dataset) -> None:
    store = open_store(str(tmp_path))
    small = publish_dataset(raw_dataset, store, rows_per_shard=25_000)
    assert [s["rows"] for s in small.manifest["splits"]["train"]["shards"]] == [25_000, 25_000, 10_000]
    assert small.manifest["splits"]["train"]["shards"][0]["key"].endswith("/train-00000-of-00003.parquet")
    images, _, index = load_split(store, small.version, "train", rows=30_000)
    assert np.array_equal(images, raw_dataset.train_images[:30_000]) and index[-1] == 29_999
    default = publish_dataset(raw_dataset, store)
    assert default.version != small.version
    assert list_versions(store) == sorted([small.version, default.version])


def test_no_credentials_reach_the_manifest(tmp_path, raw_dataset) -> None:
    store = open_store(str(tmp_path))
    raw = dataclasses.replace(raw_dataset, source="https://reader:s3cr3t-sentinel@mirror.example:8443/fmnist")
    result = publish_dataset(raw, store)
    text = store.get_bytes(f"{version_prefix(result.version)}/manifest.json").decode()
    assert "s3cr3t-sentinel" not in text and "reader" not in text
    assert json.loads(text)["source"] == "https://mirror.example:8443/fmnist"
    for key in store.list_keys():
        assert b"s3cr3t-sentinel" not in store.get_bytes(key)


# --- two prepares of one version at once (issue 9, §6.4) ------------------------------------------
# Shard bytes are identical between processes of one pyarrow version (checked: same sha256), but not between
# versions: the footer names its writer ("parquet-cpp-arrow version …") and the zstd build may differ. A second
# machine with another pyarrow cannot exist here, so the other writer stands in for it with another zstd level.


def _other_writers_encoding(images: np.ndarray, labels: np.ndarray, first_index: int) -> bytes:
    import pyarrow as pa

    from tasks.data.shards import PIXELS, SCHEMA

    n = len(labels)
    pixels = pa.FixedSizeBinaryArray.from_buffers(pa.binary(PIXELS), n, [None, pa.py_buffer(np.ascontiguousarray(images))])
    table = pa.Table.from_arrays(
        [pa.array(np.arange(first_index, first_index + n, dtype=np.int32)), pa.array(labels, type=pa.uint8()), pixels],
        schema=SCHEMA,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=9)
    return sink.getvalue()


def _assert_manifest_matches_the_store(store: Store, version: str, raw_dataset) -> None:
    manifest = load_manifest(store, version)
    for info in manifest["splits"].values():
        for shard in info["shards"]:
            data = store.get_bytes(shard["key"])
            assert (hashlib.sha256(data).hexdigest(), len(data)) == (shard["sha256"], shard["bytes"]), shard["key"]
    images, labels, _ = load_split(store, version, "test")
    assert images.tobytes() == raw_dataset.test_images.tobytes() and labels.tobytes() == raw_dataset.test_labels.tobytes()
    assert load_split(store, version, "train")[1].tobytes() == raw_dataset.train_labels.tobytes()


def test_two_prepares_racing_leave_a_manifest_that_matches_the_shards(empty_store, raw_dataset, monkeypatch) -> None:
    """A writes every shard; B (another pyarrow) writes them too; A publishes the manifest; B finds it published."""
    import threading

    import tasks.data.shards as shards

    store = empty_store
    version = dataset_version(raw_dataset.source_sha256, 10_000)
    last_shard = f"{version_prefix(version)}/test-00000-of-00001.parquet"
    b_wrote_shards, a_published = threading.Event(), threading.Event()
    own_encoding = shards.encode_shard
    monkeypatch.setattr(shards, "encode_shard", lambda *args: (
        _other_writers_encoding(*args) if threading.current_thread().name == "prepare-b" else own_encoding(*args)))
    results: dict[str, object] = {}

    def b_progress(message: str) -> None:
        if last_shard in message:
            b_wrote_shards.set()
            assert a_published.wait(timeout=60)

    def run_b() -> None:
        try:
            results["b"] = publish_dataset(raw_dataset, store, progress=b_progress)
        except Exception as exc:  # reported by the main thread
            results["b"] = exc

    b = threading.Thread(target=run_b, name="prepare-b", daemon=True)

    def a_progress(message: str) -> None:
        if last_shard in message and not b.is_alive():
            b.start()
            assert b_wrote_shards.wait(timeout=60)

    results["a"] = publish_dataset(raw_dataset, store, progress=a_progress)
    a_published.set()
    b.join(timeout=60)
    assert not b.is_alive()
    assert not isinstance(results["b"], Exception), results["b"]
    assert results["a"].manifest == results["b"].manifest  # B kept A's manifest
    _assert_manifest_matches_the_store(store, version, raw_dataset)


def test_a_leftover_shard_with_the_same_rows_is_kept(empty_store, raw_dataset) -> None:
    """A shard another writer left (other bytes, same rows) is reused, and its own hash is the one recorded."""
    store = empty_store
    version = dataset_version(raw_dataset.source_sha256, 10_000)
    key = f"{version_prefix(version)}/train-00001-of-00006.parquet"
    theirs = _other_writers_encoding(raw_dataset.train_images[10_000:20_000], raw_dataset.train_labels[10_000:20_000], 10_000)
    store.put_bytes(key, theirs)
    result = publish_dataset(raw_dataset, store)
    assert store.get_bytes(key) == theirs
    assert result.manifest["splits"]["train"]["shards"][1]["sha256"] == hashlib.sha256(theirs).hexdigest()
    _assert_manifest_matches_the_store(store, version, raw_dataset)


def test_a_leftover_shard_with_other_rows_is_refused_by_name(empty_store, raw_dataset) -> None:
    store = empty_store
    version = dataset_version(raw_dataset.source_sha256, 10_000)
    key = f"{version_prefix(version)}/train-00001-of-00006.parquet"
    other_rows = _other_writers_encoding(raw_dataset.train_images[:10_000], raw_dataset.train_labels[:10_000], 0)
    store.put_bytes(key, other_rows)
    with pytest.raises(DatasetError) as caught:
        publish_dataset(raw_dataset, store)
    message = str(caught.value)
    assert store.url_for(key) in message and "rows 10000-19999" in message
    assert f"Delete {store.url_for(version_prefix(version))}/" in message and "run `fmnist prepare` again" in message
    assert not store.exists(f"{version_prefix(version)}/manifest.json")
    assert store.get_bytes(key) == other_rows  # someone else's object is never overwritten


# A damaged manifest (issue 10, item 9): one DatasetError naming it, what is wrong and the repair.
def _valid_manifest() -> dict:
    def split(name: str, rows: int) -> dict:
        return {"rows": rows, "class_counts": [rows // 10] * 10,
                "shards": [{"key": f"{name}-00000-of-00001.parquet", "rows": rows, "bytes": 1, "sha256": "a" * 64}]}
    return {"format": 1, "version": "0123456789abcdef", "splits": {"train": split("train", 60_000), "test": split("test", 10_000)}}


def _manifest_without(path: tuple) -> bytes:
    manifest = _valid_manifest()
    *parents, last = path
    target = manifest
    for key in parents:
        target = target[key]
    del target[last]
    return json.dumps(manifest, indent=2).encode()


BAD_MANIFESTS = [
    pytest.param(b"\xff\xfe\x00garbage", "not UTF-8 text at byte 0", id="garbage-bytes"),
    pytest.param(json.dumps(_valid_manifest(), indent=2).encode()[:120], "it ends early (truncated)", id="truncated"),
    pytest.param(b"", "empty (0 bytes)", id="empty-file"),
    pytest.param(b"[]", "expected a JSON object, found a list", id="empty-list"),
    pytest.param(b"{}", "lacks 'splits'", id="empty-object"),
    pytest.param(_manifest_without(("splits", "test")), "'splits' lacks 'test'", id="no-test-split"),
    pytest.param(_manifest_without(("splits", "train", "shards", 0, "sha256")), "split 'train' shard 0 lacks 'sha256'",
                 id="shard-lacks-sha256"),
]


@pytest.mark.parametrize(("content", "problem"), BAD_MANIFESTS)
def test_a_damaged_manifest_is_one_clear_error(empty_store, content, problem) -> None:
    store, version = empty_store, "0123456789abcdef"
    key = f"{version_prefix(version)}/manifest.json"
    store.put_bytes(key, content)
    for read in (lambda: load_manifest(store, version), lambda: load_split(store, version, "test")):
        with pytest.raises(DatasetError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"{store.url_for(key)}: the manifest of dataset version {version} is damaged: ")
        assert problem in message, message
        assert message.endswith(f"delete {store.url_for(version_prefix(version))}/ and run "
                                f"`fmnist prepare --store {store.uri}` again")
        assert "\n" not in message


@pytest.mark.parametrize(("content", "problem"), [BAD_MANIFESTS[1], BAD_MANIFESTS[-1]])
def test_publishing_a_version_whose_manifest_is_damaged_refuses_and_writes_nothing(empty_store, raw_dataset,
                                                                                    content, problem) -> None:
    store = empty_store
    key = f"{version_prefix(dataset_version(raw_dataset.source_sha256, 10_000))}/manifest.json"
    store.put_bytes(key, content)
    with pytest.raises(DatasetError, match="is damaged: .*delete .* and run `fmnist prepare") as caught:
        publish_dataset(raw_dataset, store)
    assert problem in str(caught.value)
    assert store.list_keys() == [key] and store.get_bytes(key) == content


def test_the_published_manifest_passes_the_checks(published) -> None:
    store, result = published
    assert load_manifest(store, result.version) == result.manifest
