"""Fetching and verifying the four raw files: the real data, every bad input of design §8, the download path (an
s3:// source: tests/integration/test_dataset.py)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import tasks.data.dataset as dataset
from tasks.data.dataset import DEBIAN_DIR, RAW_FILES, fetch_dataset, parse_idx, resolve_source
from tasks.errors import ChecksumError, DatasetError, IdxFormatError

TRAIN_IMAGES, TRAIN_LABELS = RAW_FILES["train-images"], RAW_FILES["train-labels"]
TEST_IMAGES, TEST_LABELS = RAW_FILES["test-images"], RAW_FILES["test-labels"]


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_gz(fashion_dir) -> dict[str, bytes]:
    """The four Debian .gz files as bytes, by file name (e.g. 'train-labels-idx1-ubyte.gz')."""
    return {f"{raw.filename}.gz": (fashion_dir / f"{raw.filename}.gz").read_bytes() for raw in RAW_FILES.values()}


@pytest.fixture(scope="module")
def content(real_gz) -> dict[str, bytes]:
    """The decompressed (IDX) bytes, by file key (e.g. 'train-labels')."""
    return {key: gzip.decompress(real_gz[f"{raw.filename}.gz"]) for key, raw in RAW_FILES.items()}


def make_source(folder: Path, fashion_dir: Path, **replace: bytes) -> Path:
    """A source folder: the real files (symlinks), except those named in `replace` (file key -> .gz bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, raw in RAW_FILES.items():
        target = folder / f"{raw.filename}.gz"
        if key.replace("-", "_") in replace:
            target.write_bytes(replace[key.replace("-", "_")])
        else:
            target.symlink_to(fashion_dir / f"{raw.filename}.gz")
    return folder


def idx_bytes(magic: int, dims: tuple[int, ...], body: bytes = b"") -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + body


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def assert_names(message: str, *parts: object) -> None:
    for part in parts:
        assert str(part) in message, f"{part!r} not in error message: {message}"


# --- the real dataset --------------------------------------------------------------------------


def test_real_dataset_verifies(raw_dataset, fashion_dir) -> None:
    assert raw_dataset.source == str(fashion_dir)
    assert raw_dataset.train_images.shape == (60_000, 28, 28) and raw_dataset.train_images.dtype == np.uint8
    assert raw_dataset.train_labels.shape == (60_000,) and raw_dataset.train_labels.dtype == np.uint8
    assert raw_dataset.test_images.shape == (10_000, 28, 28) and raw_dataset.test_images.dtype == np.uint8
    assert raw_dataset.test_labels.shape == (10_000,) and raw_dataset.test_labels.dtype == np.uint8
    assert raw_dataset.source_sha256 == {key: raw.sha256 for key, raw in RAW_FILES.items()}
    assert np.bincount(raw_dataset.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(raw_dataset.test_labels, minlength=10).tolist() == [1000] * 10
    assert raw_dataset.train_images.max() == 255 and raw_dataset.train_images.min() == 0


def test_hashes_table_matches_the_design_notes(content) -> None:
    """The design notes' table (§4), measured on Debian's files: size and sha256 of the decompressed bytes."""
    for key, raw in RAW_FILES.items():
        assert len(content[key]) == raw.size
        assert hashlib.sha256(content[key]).hexdigest() == raw.sha256


def test_progress_names_each_file_and_where_it_came_from(fashion_dir) -> None:
    messages: list[str] = []
    fetch_dataset(str(fashion_dir), progress=messages.append)
    assert len(messages) == 4
    for message, raw in zip(messages, RAW_FILES.values()):
        assert_names(message, f"verified {raw.filename}", f"{raw.size:,} bytes", raw.sha256[:12], fashion_dir / f"{raw.filename}.gz")


def test_file_uri_source(fashion_dir) -> None:
    assert fetch_dataset(f"file://{fashion_dir}").source_sha256["test-labels"] == TEST_LABELS.sha256


def test_uncompressed_files_are_accepted(tmp_path, content) -> None:
    for key, raw in RAW_FILES.items():
        (tmp_path / raw.filename).write_bytes(content[key])
    assert fetch_dataset(str(tmp_path)).source_sha256 == {key: raw.sha256 for key, raw in RAW_FILES.items()}


# --- source resolution -------------------------------------------------------------------------


def test_fashion_mnist_dir_is_honoured(tmp_path, fashion_dir, monkeypatch) -> None:
    folder = make_source(tmp_path / "elsewhere", fashion_dir)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
    assert resolve_source() == str(folder)
    assert resolve_source("/explicit/wins") == "/explicit/wins"
    messages: list[str] = []
    assert fetch_dataset(progress=messages.append).source == str(folder)
    assert all(str(folder) in m for m in messages)


def test_debian_folder_is_the_default(monkeypatch, fashion_dir) -> None:
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    assert resolve_source() == DEBIAN_DIR == str(fashion_dir)


# --- bad inputs: each names the file and what was expected / found -----------------------------


def test_truncated_gz(tmp_path, fashion_dir, real_gz) -> None:
    name = f"{TRAIN_IMAGES.filename}.gz"
    truncated = real_gz[name][: len(real_gz[name]) // 2]
    folder = make_source(tmp_path, fashion_dir, train_images=truncated)
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(str(folder))
    assert_names(str(caught.value), folder / name, "truncated .gz", f"{len(truncated)} bytes", "download it again")


def test_corrupt_gz(tmp_path, fashion_dir, real_gz) -> None:
    name = f"{TRAIN_LABELS.filename}.gz"
    damaged = bytearray(real_gz[name])
    damaged[100:120] = bytes(20)
    folder = make_source(tmp_path, fashion_dir, train_labels=bytes(damaged))
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(str(folder))
    message = str(caught.value)
    assert_names(message, folder / name, "download it again")
    assert "corrupt .gz" in message or "truncated .gz" in message


def test_empty_file(tmp_path, fashion_dir) -> None:
    folder = make_source(tmp_path, fashion_dir, test_labels=b"")
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(str(folder))
    assert_names(str(caught.value), folder / f"{TEST_LABELS.filename}.gz", "empty file (0 bytes)")


def test_wrong_content_hash_is_a_checksum_error(tmp_path, fashion_dir, content) -> None:
    """Right format, right counts, other pixels (like MNIST digits in place of Fashion-MNIST)."""
    header = 16
    images = np.frombuffer(content["train-images"], np.uint8, offset=header).reshape(60_000, 28, 28)
    altered = content["train-images"][:header] + images[::-1].tobytes()  # the same images in reverse order
    assert parse_idx("altered", altered, TRAIN_IMAGES).shape == (60_000, 28, 28)  # the format is fine
    folder = make_source(tmp_path, fashion_dir, train_images=gz(altered))
    with pytest.raises(ChecksumError) as caught:
        fetch_dataset(str(folder))
    assert_names(
        str(caught.value),
        folder / f"{TRAIN_IMAGES.filename}.gz",
        f"expected {TRAIN_IMAGES.size} bytes with sha256 {TRAIN_IMAGES.sha256}",
        f"found {len(altered)} bytes with sha256 {hashlib.sha256(altered).hexdigest()}",
        "MNIST",
        "point --source at the Fashion-MNIST files",
    )


def test_html_page_in_place_of_a_gz_file(tmp_path, fashion_dir) -> None:
    folder = make_source(tmp_path, fashion_dir, train_labels=b"<!DOCTYPE html>\n<html><body>Sign in</body></html>\n")
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(str(folder))
    assert_names(str(caught.value), folder / f"{TRAIN_LABELS.filename}.gz", "expected gzip data (bytes 1f 8b)", "<!DOCTYPE html>", "an HTML page")


@pytest.mark.parametrize(
    ("raw", "data", "field", "expected", "found"),
    [
        pytest.param(TRAIN_LABELS, b"", "header", "at least 8 bytes", "0 bytes", id="empty"),
        pytest.param(TRAIN_IMAGES, idx_bytes(2051, (60_000, 28))[:12], "header", "at least 16 bytes", "12 bytes", id="short-header"),
        pytest.param(TRAIN_LABELS, b"\x1f\x8b\x08\x00" + bytes(60_004), "bytes 0-1", "00 00", "1f 8b", id="not-idx"),
        pytest.param(TRAIN_LABELS, idx_bytes(2051, (60_000,), bytes(60_000)), "magic", 2049, 2051, id="images-magic-in-labels"),
        pytest.param(TEST_IMAGES, idx_bytes(2049, (10_000, 28, 28)), "magic", 2051, 2049, id="labels-magic-in-images"),
        pytest.param(TEST_IMAGES, idx_bytes(2051, (10_000, 28, 29), bytes(10_000 * 28 * 29)), "rows x columns", "28 x 28", "28 x 29", id="29-columns"),
        pytest.param(TRAIN_LABELS, idx_bytes(2049, (59_999,), bytes(59_999)), "number of items", 60_000, 59_999, id="59999-labels"),
        pytest.param(TEST_IMAGES, idx_bytes(2051, (9_999, 28, 28), bytes(9_999 * 784)), "number of items", 10_000, 9_999, id="9999-images"),
        pytest.param(TEST_LABELS, idx_bytes(2049, (10_000,), bytes(9_000)), "data length", "10000 bytes after the header", "9000", id="short-body"),
        pytest.param(TEST_LABELS, idx_bytes(2049, (10_000,), bytes(10_001)), "data length", "10000 bytes after the header", "10001", id="long-body"),
        pytest.param(TEST_LABELS, idx_bytes(2049, (10_000,), bytes(123) + b"\x0a" + bytes(9_876)), "label at row 123", "a class 0-9", 10, id="label-10"),
    ],
)
def test_parse_idx_rejects(raw, data: bytes, field: str, expected: object, found: object) -> None:
    where = f"/data/{raw.filename}.gz"
    with pytest.raises(IdxFormatError) as caught:
        parse_idx(where, data, raw)
    error = caught.value
    assert (error.file, error.field, error.expected, error.found) == (where, field, expected, found)
    assert_names(str(error), where, f"IDX field '{field}'", f"expected {expected}", f"found {found}")


@pytest.mark.parametrize(
    ("key", "make", "field", "expected", "found"),
    [
        pytest.param("train_labels", lambda c: idx_bytes(2051, (60_000,)) + c["train-labels"][8:], "magic", 2049, 2051, id="wrong-magic"),
        pytest.param("train_labels", lambda c: idx_bytes(2049, (59_999,)) + c["train-labels"][8:-1], "number of items", 60_000, 59_999, id="59999-labels"),
        pytest.param("test_labels", lambda c: c["test-labels"][:500] + b"\x0a" + c["test-labels"][501:], "label at row 492", "a class 0-9", 10, id="label-10"),
        pytest.param(
            "test_images",
            lambda c: idx_bytes(2051, (10_000, 28, 29)) + bytes(10_000 * 28 * 29),
            "rows x columns", "28 x 28", "28 x 29", id="29-columns",
        ),
    ],
)
def test_fetch_reports_idx_errors_with_the_file(tmp_path, fashion_dir, content, key, make, field, expected, found) -> None:
    folder = make_source(tmp_path, fashion_dir, **{key: gz(make(content))})
    with pytest.raises(IdxFormatError) as caught:
        fetch_dataset(str(folder))
    filename = RAW_FILES[key.replace("_", "-")].filename
    assert_names(str(caught.value), folder / f"{filename}.gz", f"IDX field '{field}'", f"expected {expected}", f"found {found}")


def test_missing_source_folder(tmp_path) -> None:
    missing = tmp_path / "no-such-folder"
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(str(missing))
    assert_names(str(caught.value), f"source folder {missing}", "does not exist", "--source", "apt-get install dataset-fashion-mnist")


def test_folder_without_the_files(tmp_path) -> None:
    (tmp_path / "README").write_text("not the dataset")
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(str(tmp_path))
    assert_names(str(caught.value), f"source folder {tmp_path}", f"expected {TRAIN_IMAGES.filename}.gz", "found only ['README']")


def test_unknown_source_scheme() -> None:
    with pytest.raises(DatasetError) as caught:
        fetch_dataset("ftp://example.org/fashion")
    assert_names(str(caught.value), "'ftp://example.org/fashion'", "unknown scheme 'ftp'", "http(s)://", "s3://")


# --- the download path, against a local HTTP server --------------------------------------------


class FileServer:
    """An HTTP server on 127.0.0.1 whose answers a test decides: respond(name, nth_request) -> (status, body)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: list[str] = []
        self.respond: Callable[[str, int], tuple[int, bytes]] = self.serve_files
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                owner.requests.append(name)
                status, body = owner.respond(name, Counter(owner.requests)[name])
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if body.lstrip().startswith(b"<") else "application/gzip")
                length = owner.declared_length.get(name, len(body))
                if length is not None:  # None: no Content-Length, the body ends when the connection closes
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.declared_length: dict[str, int | None] = {}
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/fashion-mnist"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve_files(self, name: str, _nth: int) -> tuple[int, bytes]:
        if name in self.files:
            return 200, self.files[name]
        return 404, b"<html>Not Found</html>"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def file_server(real_gz, tmp_path, monkeypatch) -> Iterator[FileServer]:
    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(dataset, "DOWNLOAD_RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    server = FileServer(real_gz)
    yield server
    server.close()


def cache_listing(tmp_path: Path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_verifies_then_caches(file_server, tmp_path, real_gz, raw_dataset) -> None:
    got = fetch_dataset(file_server.url)
    assert got.source_sha256 == raw_dataset.source_sha256
    assert np.array_equal(got.train_images, raw_dataset.train_images)
    assert sorted(file_server.requests) == sorted(real_gz)
    assert cache_listing(tmp_path) == sorted(real_gz)  # the four files, no temp file left
    for name, data in real_gz.items():
        assert (tmp_path / "cache" / name).read_bytes() == data

    # Second fetch: all four from the cache, no request.
    file_server.requests.clear()
    fetch_dataset(file_server.url)
    assert file_server.requests == []

    # A damaged cache entry is downloaded again, and only that one.
    damaged = tmp_path / "cache" / f"{TRAIN_LABELS.filename}.gz"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    fetch_dataset(file_server.url)
    assert file_server.requests == [f"{TRAIN_LABELS.filename}.gz"]
    assert damaged.read_bytes() == real_gz[damaged.name]


def test_download_that_fails_verification_never_reaches_the_cache(file_server, tmp_path, content) -> None:
    bad = idx_bytes(2049, (60_000,)) + bytes(60_000)  # valid IDX, all labels 0: wrong hash
    file_server.files[f"{TRAIN_LABELS.filename}.gz"] = gz(bad)
    with pytest.raises(ChecksumError) as caught:
        fetch_dataset(file_server.url)
    assert_names(str(caught.value), f"{file_server.url}/{TRAIN_LABELS.filename}.gz", TRAIN_LABELS.sha256)
    assert cache_listing(tmp_path) == [f"{TRAIN_IMAGES.filename}.gz"]  # verified before it; nothing else, no temp file


def test_html_page_served_with_status_200(file_server, tmp_path) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>Captive portal</title></head><body>Please log in</body></html>"
    file_server.respond = lambda name, nth: (200, page)
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(file_server.url)
    assert_names(str(caught.value), f"{file_server.url}/{TRAIN_IMAGES.filename}.gz", "expected gzip data", "an HTML page, not the dataset: check the URL")
    assert cache_listing(tmp_path) == []
    assert file_server.requests == [f"{TRAIN_IMAGES.filename}.gz"]  # a wrong page is not retried


def test_503_twice_then_200_is_retried(file_server, real_gz) -> None:
    flaky = f"{TRAIN_LABELS.filename}.gz"
    serve = file_server.serve_files
    file_server.respond = lambda name, nth: (503, b"busy") if name == flaky and nth <= 2 else serve(name, nth)
    assert fetch_dataset(file_server.url).source_sha256["train-labels"] == TRAIN_LABELS.sha256
    assert Counter(file_server.requests)[flaky] == 3


def test_503_for_ever_gives_up_after_the_retries(file_server) -> None:
    file_server.respond = lambda name, nth: (503, b"busy")
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(file_server.url)
    assert_names(str(caught.value), f"{file_server.url}/{TRAIN_IMAGES.filename}.gz", "download failed after 4 attempts", "503", "--source")
    assert len(file_server.requests) == 4


def test_connection_closed_mid_body_is_retried(file_server, real_gz) -> None:
    name = f"{TRAIN_LABELS.filename}.gz"
    body = real_gz[name]
    serve = file_server.serve_files
    file_server.declared_length[name] = len(body)
    file_server.respond = lambda n, nth: (200, body[: len(body) // 2]) if n == name and nth == 1 else serve(n, nth)
    assert fetch_dataset(file_server.url).source_sha256["train-labels"] == TRAIN_LABELS.sha256
    assert Counter(file_server.requests)[name] == 2


def test_404_is_not_retried_and_names_the_url(file_server) -> None:
    del file_server.files[f"{TEST_LABELS.filename}.gz"]
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(file_server.url)
    assert_names(str(caught.value), f"{file_server.url}/{TEST_LABELS.filename}.gz", "HTTP 404", "check the --source URL")
    assert Counter(file_server.requests)[f"{TEST_LABELS.filename}.gz"] == 1


def test_unreachable_http_source(tmp_path, monkeypatch) -> None:
    import socket

    monkeypatch.setenv("FMNIST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dataset, "DOWNLOAD_RETRY_DELAYS_S", (0.01,))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DatasetError) as caught:
        fetch_dataset(f"http://127.0.0.1:{port}/fmnist")
    assert_names(str(caught.value), f"http://127.0.0.1:{port}/fmnist/{TRAIN_IMAGES.filename}.gz", "download failed after 2 attempts", "FASHION_MNIST_DIR")


# --- size caps: a gzip bomb or an oversized download fails fast, with bounded memory --------------


def gzip_of_zeros(megabytes: int) -> bytes:
    """A .gz of `megabytes` MB of zeros, made a chunk at a time (about 1000x smaller than its content)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunk = bytes(2**20)
    return b"".join([*(packer.compress(chunk) for _ in range(megabytes)), packer.flush()])


BOMB_CHECK = """
import resource, sys, time
from tasks.data.dataset import RAW_FILES, fetch_file
from tasks.errors import DatasetError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    fetch_file(sys.argv[1], RAW_FILES["test-labels"])
    print("no error")
except DatasetError as exc:
    print(exc)
print(time.monotonic() - started)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)  # ru_maxrss is in KiB on Linux
"""


def test_gzip_bomb_in_a_folder_fails_fast_with_bounded_memory(tmp_path, fashion_dir) -> None:
    """200 MB of zeros as the 10,008-byte test labels: decompression stops at the expected size + 1."""
    import os
    import subprocess
    import sys

    name = f"{TEST_LABELS.filename}.gz"
    folder = make_source(tmp_path / "bomb", fashion_dir, test_labels=gzip_of_zeros(200))
    done = subprocess.run([sys.executable, "-c", BOMB_CHECK, str(folder)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(dataset.__file__).parents[2])})
    assert done.returncode == 0, done.stderr
    message, seconds, grown = done.stdout.strip().splitlines()
    assert_names(message, folder / name, f"expected {TEST_LABELS.size:,} bytes", "larger", "--source")
    assert float(seconds) < 5, f"took {seconds} s"
    assert int(grown) < 32 * 2**20, f"peak memory grew by {int(grown):,} bytes"  # the content alone would be 200 MB


def test_gzip_bomb_over_http_names_the_url(file_server) -> None:
    name = f"{TEST_LABELS.filename}.gz"
    file_server.files[name] = gzip_of_zeros(200)  # about 200 KB: under the download cap, caught while decompressing
    with pytest.raises(DatasetError) as caught:
        dataset.fetch_file(file_server.url, TEST_LABELS)
    assert_names(str(caught.value), f"{file_server.url}/{name}", f"expected {TEST_LABELS.size:,} bytes", "larger")
    assert file_server.requests == [name]  # a file that is too large does not get better: no retry


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-content-length"])
def test_oversized_download_is_refused(file_server, announced: bool) -> None:
    """Compressed, the file cannot be much larger than its content: past content + 1 MiB the download stops
    (refused from its Content-Length, or while streaming when the server sends none)."""
    name = f"{TEST_LABELS.filename}.gz"
    file_server.files[name] = b"\x1f\x8b" + bytes(3 * 2**20)
    if not announced:
        file_server.declared_length[name] = None
    with pytest.raises(DatasetError) as caught:
        dataset.fetch_file(file_server.url, TEST_LABELS)
    limit = TEST_LABELS.size + dataset.DOWNLOAD_SLACK_BYTES
    assert_names(str(caught.value), f"{file_server.url}/{name}", "larger than expected", f"{limit:,} bytes", "--source")
    assert file_server.requests == [name]


def test_right_header_with_too_much_data_is_refused_by_size(tmp_path, fashion_dir, content) -> None:
    """A valid label header followed by 1 MB more than 10,000 labels: the size, not a later field, is the error."""
    name = f"{TEST_LABELS.filename}.gz"
    folder = make_source(tmp_path, fashion_dir, test_labels=gz(content["test-labels"] + bytes(2**20)))
    with pytest.raises(DatasetError) as caught:
        dataset.fetch_file(str(folder), TEST_LABELS)
    assert not isinstance(caught.value, IdxFormatError)
    assert_names(str(caught.value), folder / name, f"expected {TEST_LABELS.size:,} bytes", "larger")
