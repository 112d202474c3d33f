"""Fetch the four raw Fashion-MNIST files and verify them.

Sources, in order: an explicit source (folder, file://, http(s)://, s3://),
$FASHION_MNIST_DIR, Debian's /usr/share/datasets/fashion-mnist, the upstream
mirror. Every file is decompressed, its IDX header checked field by field,
then the size and SHA-256 of the decompressed bytes compared with the
published content (Debian re-compresses the .gz, so only the decompressed
bytes are comparable). Downloads land in a temporary file and are renamed
into the cache only once verified.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import struct
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from tasks.errors import ChecksumError, DatasetError, IdxFormatError
from tasks.progress import Progress, no_progress

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
UPSTREAM_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
DOWNLOAD_RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 4.0)  # backoff between attempts on network faults
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
UBYTE = 0x08


@dataclass(frozen=True)
class RawFile:
    """One of the four published files, with the size and hash of its decompressed content."""

    key: str
    filename: str
    size: int
    sha256: str
    rows: int

    @property
    def is_images(self) -> bool:
        return self.key.endswith("images")


RAW_FILES: dict[str, RawFile] = {
    f.key: f
    for f in (
        RawFile("train-images", "train-images-idx3-ubyte", 47_040_016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 60_000),
        RawFile("train-labels", "train-labels-idx1-ubyte", 60_008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_000),
        RawFile("test-images", "t10k-images-idx3-ubyte", 7_840_016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 10_000),
        RawFile("test-labels", "t10k-labels-idx1-ubyte", 10_008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_000),
    )
}


@dataclass(frozen=True)
class RawDataset:
    """The verified arrays, and where they came from."""

    source: str
    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray
    test_labels: np.ndarray
    source_sha256: dict[str, str]  # decompressed content hash per file key


def resolve_source(explicit: str | None = None) -> str:
    """The first source that applies: explicit, $FASHION_MNIST_DIR, Debian's folder, upstream."""
    if explicit:
        return explicit
    from tasks.settings import current_settings  # here: the GPU check imports this module where pydantic is absent

    from_environment = current_settings().fashion_mnist_dir
    if from_environment:
        return from_environment
    if Path(DEBIAN_DIR).is_dir():
        return DEBIAN_DIR
    return UPSTREAM_URL


def cache_dir() -> Path:
    from tasks.settings import current_settings

    return current_settings().cache_dir


# --- reading one file from each kind of source ---------------------------------------------

def _read_local(folder: str, raw: RawFile) -> tuple[str, bytes]:
    base = Path(folder).expanduser()
    if not base.is_dir():
        raise DatasetError(
            f"source folder {base}: does not exist or is not a folder; "
            f"pass --source with the folder holding {raw.filename}.gz (Debian: apt-get install dataset-fashion-mnist)"
        )
    for name in (raw.filename + ".gz", raw.filename):
        if (base / name).is_file():
            return str(base / name), (base / name).read_bytes()
    found = sorted(p.name for p in base.iterdir())[:10]
    raise DatasetError(f"source folder {base}: expected {raw.filename}.gz (or {raw.filename}), found only {found}")


# Deflate never grows data by more than a few bytes per 16 KiB block (stored blocks), so a genuine .gz is at
# most a little larger than its content: content size + 1 MiB is generous, and bounds what a wrong URL can send.
DOWNLOAD_SLACK_BYTES = 2**20
DOWNLOAD_CHUNK_BYTES = 2**20


def _read_capped(url: str, response: http.client.HTTPResponse, limit: int, raw: RawFile) -> bytes:
    """The body, read a chunk at a time; a DatasetError as soon as it passes `limit` bytes."""
    too_large = DatasetError(
        f"{url}: larger than expected: more than {limit:,} bytes, for {raw.filename} whose content is {raw.size:,} bytes; "
        "download stopped. Check the --source URL"
    )
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large  # refused before reading a byte of it
    chunks, total = [], 0
    while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)
    if declared and declared.isdigit() and total < int(declared):
        # read(amt) returns b"" at a closed connection instead of raising: a short body is retried like one.
        raise http.client.IncompleteRead(b"".join(chunks), int(declared) - total)
    return b"".join(chunks)


def _download(url: str, raw: RawFile, attempts_delays: tuple[float, ...] | None = None) -> bytes:
    """GET with retries and backoff on network faults and 5xx/429; a 4xx or an oversized body is final."""
    if attempts_delays is None:
        attempts_delays = DOWNLOAD_RETRY_DELAYS_S  # read at call time, so the module setting can be changed
    last: Exception | None = None
    for attempt, delay in enumerate((0.0, *attempts_delays)):
        time.sleep(delay)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return _read_capped(url, response, raw.size + DOWNLOAD_SLACK_BYTES, raw)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise DatasetError(f"{url}: HTTP {exc.code} {exc.reason}; check the --source URL") from None
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            last = exc  # HTTPException: e.g. IncompleteRead, the connection closed before the whole body came
    raise DatasetError(
        f"{url}: download failed after {len(attempts_delays) + 1} attempts ({last}); "
        "check the network, or use a local copy with --source / FASHION_MNIST_DIR"
    )


def _fetch_http(base_url: str, raw: RawFile) -> VerifiedFile:
    """From the download cache, else downloaded into it: temp file first, renamed once the content verified."""
    url = f"{base_url.rstrip('/')}/{raw.filename}.gz"
    cached = cache_dir() / f"{raw.filename}.gz"
    if cached.is_file():
        try:
            return verified_file(str(cached), cached.read_bytes(), raw)
        except DatasetError:
            cached.unlink()  # a damaged cache entry is downloaded again, never reused
    data = _download(url, raw)
    result = verified_file(url, data, raw)  # raises before anything reaches the cache
    from tasks.data.store import write_atomically

    write_atomically(cached, data)
    return result


def _read_s3(uri: str, raw: RawFile, endpoint: str | None) -> tuple[str, bytes]:
    from tasks.data.store import MissingKey, S3Store

    parsed = urlparse(uri)
    store = S3Store(parsed.netloc, parsed.path, endpoint=endpoint)  # None: AWS_ENDPOINT_URL, else AWS
    for name in (raw.filename + ".gz", raw.filename):
        try:
            return store.url_for(name), store.get_bytes(name)
        except MissingKey:
            continue
    raise DatasetError(f"source {uri}: expected {raw.filename}.gz (or {raw.filename}) in it, found neither")


def fetch_file(source: str, raw: RawFile, s3_endpoint: str | None = None) -> VerifiedFile:
    """One raw file from the source, decompressed, parsed and verified once; `s3_endpoint` serves an s3:// source."""
    scheme = urlparse(source).scheme
    if scheme in ("http", "https"):
        return _fetch_http(source, raw)
    if scheme == "s3":
        return verified_file(*_read_s3(source, raw, s3_endpoint), raw)
    if scheme in ("file", ""):
        return verified_file(*_read_local(urlparse(source).path if scheme else source, raw), raw)
    raise DatasetError(f"source {source!r}: unknown scheme '{scheme}'; expected a folder, file://, http(s):// or s3://")


# --- decompress, parse, verify -----------------------------------------------------------------

def _decompress(where: str, data: bytes, raw: RawFile) -> bytes:
    """The gzip content, decompressed only up to the expected size + 1 byte: a gzip bomb stops there."""
    if not data:
        raise DatasetError(f"{where}: empty file (0 bytes); download it again or fix --source")
    if data[:2] != b"\x1f\x8b":
        if where.endswith(".gz"):
            head = data[:40].decode("latin-1").strip().replace("\n", " ")
            hint = " (an HTML page, not the dataset: check the URL)" if head.lstrip().startswith("<") else ""
            raise DatasetError(f"{where}: expected gzip data (bytes 1f 8b), found {head[:32]!r}{hint}")
        return data  # an uncompressed IDX file
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:  # reads every member, as gzip.decompress does
            content = stream.read(raw.size + 1)
    except EOFError:
        raise DatasetError(f"{where}: truncated .gz (the stream ends before its end marker, {len(data)} bytes); download it again") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DatasetError(f"{where}: corrupt .gz ({exc}); download it again") from None
    return content


def _refuse_oversized(where: str, content: bytes, raw: RawFile) -> None:
    """A DatasetError when the content passed the expected size (`content` was cut at size + 1)."""
    if len(content) <= raw.size:
        return
    if content[:4] == struct.pack(">I", IMAGE_MAGIC if raw.is_images else LABEL_MAGIC):
        _idx_dims(where, content, raw)  # a header declaring another shape (29 columns) names the cause better
    raise DatasetError(
        f"{where}: decompresses to more than the expected {raw.size:,} bytes of {raw.filename}: larger than "
        "Fashion-MNIST (another file, or a gzip bomb); reading stopped there. Point --source at the Fashion-MNIST files"
    )


def _idx_dims(where: str, content: bytes, raw: RawFile) -> tuple[int, ...]:
    """The dimensions in an IDX header, once every header field is checked."""
    ndim_expected = 3 if raw.is_images else 1
    header_len = 4 + 4 * ndim_expected
    if len(content) < header_len:
        raise IdxFormatError(where, "header", f"at least {header_len} bytes", f"{len(content)} bytes")
    if content[0:2] != b"\x00\x00":
        raise IdxFormatError(where, "bytes 0-1", "00 00", content[0:2].hex(" "), "Not an IDX file.")
    magic = struct.unpack(">I", content[:4])[0]
    expected_magic = IMAGE_MAGIC if raw.is_images else LABEL_MAGIC
    if magic != expected_magic:
        raise IdxFormatError(where, "magic", expected_magic, magic, f"Is this really the {raw.key} file?")
    dims = struct.unpack(f">{ndim_expected}I", content[4:header_len])
    if dims[0] != raw.rows:
        raise IdxFormatError(where, "number of items", raw.rows, dims[0])
    if raw.is_images and dims[1:] != (28, 28):
        raise IdxFormatError(where, "rows x columns", "28 x 28", f"{dims[1]} x {dims[2]}")
    return dims


def parse_idx(where: str, content: bytes, raw: RawFile) -> np.ndarray:
    """Check every IDX header field of one file and return its array (no copy)."""
    dims = _idx_dims(where, content, raw)
    header_len = 4 + 4 * len(dims)
    body_len = int(np.prod(dims))
    if len(content) - header_len != body_len:
        raise IdxFormatError(where, "data length", f"{body_len} bytes after the header", f"{len(content) - header_len}")
    array = np.frombuffer(content, dtype=np.uint8, offset=header_len).reshape(dims)
    if not raw.is_images and array.size and int(array.max()) > 9:
        bad = int(np.argmax(array > 9))
        raise IdxFormatError(where, f"label at row {bad}", "a class 0-9", int(array[bad]))
    return array


def _verify(where: str, raw: RawFile, content: bytes) -> str:
    digest = hashlib.sha256(content).hexdigest()
    if len(content) != raw.size or digest != raw.sha256:
        raise ChecksumError(
            f"{where}: decompressed content does not match Fashion-MNIST {raw.filename}: "
            f"expected {raw.size} bytes with sha256 {raw.sha256}, found {len(content)} bytes with sha256 {digest}. "
            "MNIST digits have the same format: point --source at the Fashion-MNIST files"
        )
    return digest


@dataclass(frozen=True)
class VerifiedFile:
    where: str
    array: np.ndarray
    sha256: str  # of the decompressed content
    size: int


def verified_file(where: str, data: bytes, raw: RawFile) -> VerifiedFile:
    """Decompress, check every IDX field, then size and SHA-256 against the published content."""
    content = _decompress(where, data, raw)
    _refuse_oversized(where, content, raw)
    array = parse_idx(where, content, raw)
    return VerifiedFile(where, array, _verify(where, raw, content), len(content))


def fetch_dataset(source: str | None = None, progress: Progress = no_progress, s3_endpoint: str | None = None) -> RawDataset:
    """Read, decompress, parse and verify the four files; nothing is written anywhere but the download cache.
    `s3_endpoint` (--s3-endpoint) is the S3-compatible server of an s3:// source."""
    resolved = resolve_source(source)
    files: dict[str, VerifiedFile] = {}
    for raw in RAW_FILES.values():
        files[raw.key] = checked = fetch_file(resolved, raw, s3_endpoint)
        progress(f"verified {raw.filename} ({checked.size:,} bytes, sha256 {checked.sha256[:12]}…) from {checked.where}")
    arrays = {key: f.array for key, f in files.items()}
    hashes = {key: f.sha256 for key, f in files.items()}
    return RawDataset(
        source=resolved,
        train_images=arrays["train-images"], train_labels=arrays["train-labels"],
        test_images=arrays["test-images"], test_labels=arrays["test-labels"],
        source_sha256=hashes,
    )


# --- IDX files a user hands in (fmnist predict): any number of items, no published hash ---------------------

MAX_USER_IDX_ITEMS = 1_000_000  # 784 MB of images: far above the dataset's 60,000, and a bound on what is read


def read_user_idx(where: str, data: bytes, images: bool) -> np.ndarray:
    """An IDX images (N x 28 x 28) or labels (N) file, plain or .gz, with every header field checked as for the
    dataset's own files but no hash: files to classify need not be the published ones. Decompression stops at
    the size the header declares (+1 byte), so a gzip bomb is refused like the dataset's."""
    key = "images" if images else "labels"
    header_len = 16 if images else 8
    head = _decompress(where, data, RawFile(key, where, header_len - 1, "", 0))  # the first header_len bytes
    if len(head) < 8:
        raise IdxFormatError(where, "header", f"at least {header_len} bytes", f"{len(head)} bytes")
    count = struct.unpack(">I", head[4:8])[0]
    if count > MAX_USER_IDX_ITEMS:
        raise IdxFormatError(where, "number of items", f"at most {MAX_USER_IDX_ITEMS:,}", f"{count:,}",
                             "Split the file, or check it is an IDX file")
    raw = RawFile(key, where, header_len + count * (28 * 28 if images else 1), "", count)
    return parse_idx(where, _decompress(where, data, raw), raw)
