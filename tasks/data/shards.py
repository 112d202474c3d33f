"""Parquet shards of a verified dataset, published to a store under a content-hashed version.

Layout: datasets/fashion-mnist/<version>/{train,test}-NNNNN-of-MMMMM.parquet and
manifest.json. A shard holds the row's original index, its label and its raw
uint8 pixels (784 bytes, 28x28 row-major: 4x smaller than float32; pixels are
divided by 255 at read time). Shards and the manifest are written only if
absent, the manifest last: a reader that sees a manifest sees complete shards
whose hashes it lists, preparing the same data twice is a no-op, and two
prepares of one version at once agree on one set of shard bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from urllib.parse import urlparse, urlunparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from tasks.data.dataset import RawDataset
from tasks.errors import DatasetError, DatasetVersionNotFound
from tasks.records import quoted, read_record
from tasks.data.store import MissingKey, Store
from tasks.keys import DATASET_PREFIX, version_prefix
from tasks.progress import Progress, no_progress

SHARD_FORMAT = 1
PIXELS = 28 * 28
SCHEMA = pa.schema(
    [
        pa.field("index", pa.int32(), nullable=False, metadata={"doc": "row number in the original IDX file"}),
        pa.field("label", pa.uint8(), nullable=False, metadata={"doc": "class 0-9"}),
        pa.field("pixels", pa.binary(PIXELS), nullable=False, metadata={"doc": "28x28 uint8, row-major"}),
    ]
)
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class PrepareResult:
    version: str
    created: bool  # False: the version was already published, nothing was written
    manifest: dict

    @property
    def rows(self) -> dict[str, int]:
        return {split: info["rows"] for split, info in self.manifest["splits"].items()}

    @property
    def shard_count(self) -> int:
        return sum(len(info["shards"]) for info in self.manifest["splits"].values())

    @property
    def bytes(self) -> int:
        return sum(s["bytes"] for info in self.manifest["splits"].values() for s in info["shards"])


def dataset_version(source_sha256: dict[str, str], rows_per_shard: int) -> str:
    """A hash of the content and of the shard layout: same data, same version."""
    identity = {"format": SHARD_FORMAT, "rows_per_shard": rows_per_shard, "sources": dict(sorted(source_sha256.items()))}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _public_source(source: str) -> str:
    """The source without any user:password part, so no secret reaches the manifest."""
    parsed = urlparse(source)
    if parsed.password or parsed.username:
        return urlunparse(parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else "")))
    return source


def encode_shard(images: np.ndarray, labels: np.ndarray, first_index: int) -> bytes:
    """One Parquet file (zstd) holding these rows."""
    n = len(labels)
    pixels = pa.FixedSizeBinaryArray.from_buffers(pa.binary(PIXELS), n, [None, pa.py_buffer(np.ascontiguousarray(images))])
    table = pa.Table.from_arrays(
        [pa.array(np.arange(first_index, first_index + n, dtype=np.int32)), pa.array(labels, type=pa.uint8()), pixels],
        schema=SCHEMA,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", write_statistics=["index", "label"])
    return sink.getvalue()


def decode_shard(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) uint8, original index (n,) int32) of one shard."""
    table = pq.read_table(io.BytesIO(data)).combine_chunks()
    pixels = table.column("pixels").chunk(0) if table.num_rows else pa.array([], pa.binary(PIXELS))
    n = table.num_rows
    images = np.frombuffer(pixels.buffers()[1], dtype=np.uint8, count=n * PIXELS, offset=pixels.offset * PIXELS)
    return (
        images.reshape(n, 28, 28),
        table.column("label").to_numpy(),
        table.column("index").to_numpy(),
    )


def _holds_rows(data: bytes, images: np.ndarray, labels: np.ndarray, first_index: int) -> bool:
    """Whether a shard's bytes decode to exactly these rows (its encoding may differ: another pyarrow wrote it)."""
    try:
        got_images, got_labels, got_index = decode_shard(data)
    except (pa.ArrowException, ValueError, OSError, KeyError):
        return False  # not a readable shard of this schema
    return (np.array_equal(got_index, np.arange(first_index, first_index + len(labels)))
            and np.array_equal(got_labels, labels) and np.array_equal(got_images, images))


def _put_shard(store: Store, key: str, data: bytes, images: np.ndarray, labels: np.ndarray, first_index: int) -> bytes:
    """The shard's bytes as stored: ours, or those another prepare of this version stored first.

    Never overwritten: a racing prepare may already have listed the stored bytes' hash in its manifest, and
    two pyarrow versions encode the same rows into different bytes (the footer names the writer)."""
    if store.put_if_absent(key, data):
        return data
    existing = store.get_bytes(key)
    if existing != data and not _holds_rows(existing, images, labels, first_index):
        raise DatasetError(
            f"{store.url_for(key)}: already exists but does not hold rows {first_index}-{first_index + len(labels) - 1} "
            f"of this dataset (another writer's, or damaged); left as it is, no manifest published. "
            f"Delete {store.url_for(key.rsplit('/', 1)[0])}/ and run `fmnist prepare` again"
        )
    return existing


def publish_dataset(raw: RawDataset, store: Store, rows_per_shard: int = 10_000, progress: Progress = no_progress) -> PrepareResult:
    """Write the shards, then the manifest last; a no-op when this version is already published."""
    version = dataset_version(raw.source_sha256, rows_per_shard)
    prefix = version_prefix(version)
    if store.exists(f"{prefix}/manifest.json"):
        progress(f"dataset version {version} is already published in {store.uri}: nothing to do")
        return PrepareResult(version, False, load_manifest(store, version))

    splits: dict[str, dict] = {}
    for split, images, labels in (("train", raw.train_images, raw.train_labels), ("test", raw.test_images, raw.test_labels)):
        count = -(-len(labels) // rows_per_shard)
        shards = []
        for i in range(count):
            start, stop = i * rows_per_shard, min((i + 1) * rows_per_shard, len(labels))
            ours = encode_shard(images[start:stop], labels[start:stop], start)
            key = f"{prefix}/{split}-{i:05d}-of-{count:05d}.parquet"
            data = _put_shard(store, key, ours, images[start:stop], labels[start:stop], start)
            shards.append({"key": key, "rows": stop - start, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
            verb = "wrote" if data is ours else "kept (already there, same rows)"
            progress(f"{verb} {key} ({stop - start:,} rows, {len(data):,} bytes)")
        splits[split] = {
            "rows": len(labels),
            "class_counts": np.bincount(labels, minlength=10).tolist(),
            "shards": shards,
        }

    # Every shard is there: written by us (put_if_absent succeeded) or read back whole just now (_put_shard); both
    # stores read their own writes, so no second look before the manifest.
    manifest = {
        "format": SHARD_FORMAT,
        "dataset": "fashion-mnist",
        "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": _public_source(raw.source),
        "source_sha256": raw.source_sha256,
        "rows_per_shard": rows_per_shard,
        "schema": {f.name: str(f.type) for f in SCHEMA},
        "class_names": list(CLASS_NAMES),
        "splits": splits,
    }
    if not store.put_if_absent(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode()):
        progress(f"dataset version {version} was published meanwhile by another run: keeping that one")
        manifest = load_manifest(store, version)
    return PrepareResult(version, True, manifest)


def list_versions(store: Store) -> list[str]:
    """Versions with a published manifest."""
    return sorted({k.split("/")[2] for k in store.list_keys(DATASET_PREFIX + "/") if k.endswith("/manifest.json")})


class ShardEntry(BaseModel):
    """One shard as the manifest lists it: every read of it is checked against its size and hash."""

    model_config = ConfigDict(strict=True, extra="allow")

    key: str
    rows: int
    bytes: int
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the shard's bytes, 64 hex digits.")


class SplitEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    rows: int
    shards: list[ShardEntry] = Field(min_length=1)


class Splits(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    train: SplitEntry
    test: SplitEntry


class Manifest(BaseModel):
    """manifest.json, as far as the readers use it (both splits, their rows, every shard's key, size and hash): a
    shard without its hash must not be read unchecked, nor fail later as a KeyError. Its other keys (source hashes,
    class counts, schema) are kept as they are."""

    model_config = ConfigDict(strict=True, extra="allow")

    splits: Splits


def _manifest_naming(loc: tuple[str | int, ...]) -> str:
    """'splits', split 'train', split 'train' shard 0 'sha256': the manifest's places, as its errors say them."""
    if len(loc) >= 2 and loc[0] == "splits":
        split, rest = f"split {loc[1]!r}", loc[2:]
        if len(rest) >= 2 and rest[0] == "shards" and isinstance(rest[1], int):
            split, rest = f"{split} shard {rest[1]}", rest[2:]
        return f"{split} {quoted(rest)}".rstrip()
    return quoted(loc)


def load_manifest(store: Store, version: str) -> dict:
    key = f"{version_prefix(version)}/manifest.json"
    try:
        data = store.get_bytes(key)
    except MissingKey:
        known = list_versions(store)
        raise DatasetVersionNotFound(
            f"dataset version {version!r} not found in {store.uri} (no {key}); "
            f"versions there: {known or 'none'}; run `fmnist prepare --store {store.uri}` first"
        ) from None
    # Written once and never replaced (put_if_absent): a damaged one stays damaged until removed with its shards.
    return read_record(Manifest, data, name=_manifest_naming, error=lambda problem: DatasetError(
        f"{store.url_for(key)}: the manifest of dataset version {version} is damaged: {problem}; delete "
        f"{store.url_for(version_prefix(version))}/ and run `fmnist prepare --store {store.uri}` again"
    )).model_dump(mode="json")


def load_split(store: Store, version: str, split: str, rows: int | None = None,
               manifest: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `rows` rows (all when None) of a split, every shard read checked against its manifest hash."""
    manifest = manifest or load_manifest(store, version)  # a caller that holds it (the run) saves a read
    if split not in manifest["splits"]:
        raise DatasetError(f"dataset {version}: no split {split!r}; expected one of {sorted(manifest['splits'])}")
    wanted = manifest["splits"][split]["rows"] if rows is None else rows
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    have = 0
    for shard in manifest["splits"][split]["shards"]:
        if have >= wanted:
            break
        data = store.get_bytes(shard["key"])
        digest = hashlib.sha256(data).hexdigest()
        if digest != shard["sha256"]:
            raise DatasetError(
                f"{store.url_for(shard['key'])}: sha256 {digest} but the manifest says {shard['sha256']}: the shard was "
                f"changed or damaged; delete {version_prefix(version)}/ and run `fmnist prepare` again"
            )
        parts.append(decode_shard(data))
        have += shard["rows"]
    images, labels, index = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return images[:wanted], labels[:wanted], index[:wanted]
