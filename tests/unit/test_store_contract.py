"""One contract for every store backend, on a local folder here (tests/integration/test_store_contract_s3.py runs it
on SeaweedFS, with S3's error messages); then the errors that need no S3 server: bad URIs, a connection reset
mid-body (a fake S3 on 127.0.0.1), a full disk."""

from __future__ import annotations

import time

import pytest

from tasks.errors import StoreError
from tasks.data.store import LocalStore, MissingKey, S3Store, Store, open_store


def test_open_store_picks_the_backend(store: Store) -> None:
    assert isinstance(store, (LocalStore, S3Store))
    assert store.url_for("a/b.json") == store.uri.rstrip("/") + "/a/b.json"


def test_put_get_round_trip(store: Store) -> None:
    payloads = {
        "a.bin": bytes(range(256)) * 3,
        "runs/r1/metrics.json": b'{"accuracy": 0.9}',
        "runs/r1/empty": b"",
    }
    for key, data in payloads.items():
        store.put_bytes(key, data)
    for key, data in payloads.items():
        assert store.get_bytes(key) == data


def test_put_replaces_the_old_object(store: Store) -> None:
    store.put_bytes("k", b"first version, longer")
    store.put_bytes("k", b"second")
    assert store.get_bytes("k") == b"second"


def test_put_if_absent_keeps_the_first_writer(store: Store) -> None:
    assert store.put_if_absent("models/champion.json", b"first") is True
    assert store.put_if_absent("models/champion.json", b"second") is False
    assert store.get_bytes("models/champion.json") == b"first"
    assert store.list_keys() == ["models/champion.json"]  # the loser left no temp object


def test_get_of_a_missing_key_raises_missing_key(store: Store) -> None:
    with pytest.raises(MissingKey) as caught:
        store.get_bytes("runs/nothing/here.json")
    assert store.url_for("runs/nothing/here.json") in str(caught.value)
    assert "no such object" in str(caught.value)


def test_exists(store: Store) -> None:
    assert not store.exists("dir/file")
    store.put_bytes("dir/file", b"x")
    assert store.exists("dir/file")
    assert not store.exists("dir")  # a "folder" is not an object


def test_list_keys_is_sorted_and_filtered_by_prefix(store: Store) -> None:
    for key in ("runs/b/x", "runs/a/z", "runs/a/y", "runs/ab/w", "datasets/v1/manifest.json", "top"):
        store.put_bytes(key, b"1")
    assert store.list_keys() == sorted(["runs/b/x", "runs/a/z", "runs/a/y", "runs/ab/w", "datasets/v1/manifest.json", "top"])
    assert store.list_keys("runs/a/") == ["runs/a/y", "runs/a/z"]
    assert store.list_keys("runs/") == ["runs/a/y", "runs/a/z", "runs/ab/w", "runs/b/x"]
    # A prefix is a string prefix, as in S3: "runs/a" also matches "runs/ab/…".
    assert store.list_keys("runs/a") == ["runs/a/y", "runs/a/z", "runs/ab/w"]
    assert store.list_keys("datasets/v1/manifest") == ["datasets/v1/manifest.json"]
    assert store.list_keys("nothing/") == []


def test_list_keys_hides_temp_files_of_interrupted_writes(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("runs/a/done.json", b"{}")
    (tmp_path / "runs" / "a" / ".half.json.tmp-0123456789abcdef").write_bytes(b"{")  # a writer killed mid-write
    assert store.list_keys() == ["runs/a/done.json"]
    assert not store.exists("runs/a/half.json")


def test_read_stamped_ages_an_object_by_the_stores_clock(store: Store) -> None:
    """The object's age is the store's now minus its write time, both from the store (to the second on S3): a fresh
    object is young, an old one ages, whatever this process's clock says; the token is read_versioned's."""
    absent = store.read_stamped("runs/r/lease.json")
    assert (absent.data, absent.token, absent.modified, absent.age_s) == (None, None, None, None)
    assert abs(absent.now - time.time()) < 60
    store.put_bytes("runs/r/lease.json", b"held")
    fresh = store.read_stamped("runs/r/lease.json")
    assert fresh.data == b"held" and fresh.token == store.read_versioned("runs/r/lease.json")[1]
    assert fresh.age_s is not None and fresh.age_s < 1.5
    time.sleep(2.2)
    assert 1.0 <= store.read_stamped("runs/r/lease.json").age_s < 4.0
    assert store.list_keys("runs/") == ["runs/r/lease.json"]  # the clock probe of a folder leaves nothing


def test_delete_is_idempotent(store: Store) -> None:
    store.put_bytes("d/x", b"1")
    store.put_bytes("d/y", b"2")
    store.delete("d/x")
    assert not store.exists("d/x")
    store.delete("d/x")  # already gone: no error
    store.delete("never/existed")
    assert store.list_keys() == ["d/y"]


BAD_KEYS = ["../x", "/abs", "a//b", "a/../../b", "", "a/./b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: Store, key: str) -> None:
    operations = {
        "put_bytes": lambda: store.put_bytes(key, b"x"),
        "put_if_absent": lambda: store.put_if_absent(key, b"x"),
        "get_bytes": lambda: store.get_bytes(key),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
        "url_for": lambda: store.url_for(key),
    }
    for name, operation in operations.items():
        with pytest.raises(StoreError) as caught:
            operation()
        assert not isinstance(caught.value, MissingKey), name
        assert repr(key) in str(caught.value) and "expected a relative path" in str(caught.value), name
    assert store.list_keys() == []


def test_bad_list_prefix_is_rejected(store: Store) -> None:
    for prefix in ("../", "/abs", "a//b"):
        with pytest.raises(StoreError, match="expected a relative path"):
            store.list_keys(prefix)


def test_arrow_filesystem_writes_and_reads_at_the_base_path(store: Store) -> None:
    """What Ray Tune and pyarrow do: for S3 this needs endpoint_override, and multipart uploads with our key pair."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, base = store.arrow_filesystem()
    fs.create_dir(f"{base}/arrow", recursive=True)  # what Ray Tune does; a local folder needs it, S3 ignores it
    table = pa.table({"x": pa.array(range(1000), pa.int32())})
    pq.write_table(table, f"{base}/arrow/table.parquet", filesystem=fs)
    assert pq.read_table(f"{base}/arrow/table.parquet", filesystem=fs).equals(table)

    big = np.random.default_rng(0).integers(0, 256, 12 * 2**20, dtype=np.uint8).tobytes()  # > pyarrow's 10 MiB part: multipart
    with fs.open_output_stream(f"{base}/arrow/big.bin") as out:
        out.write(big)
    with fs.open_input_stream(f"{base}/arrow/big.bin") as source:
        assert source.read() == big
    # The store and pyarrow see the same objects.
    assert store.list_keys("arrow/") == ["arrow/big.bin", "arrow/table.parquet"]
    assert store.get_bytes("arrow/big.bin") == big


# --- S3: errors a user can act on -----------------------------------------------------------


def test_unknown_scheme() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("ftp://x")
    message = str(caught.value)
    assert "'ftp://x'" in message and "unknown scheme 'ftp'" in message and "s3://bucket/prefix" in message


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix"])
def test_s3_uri_without_bucket(uri: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(uri)
    assert repr(uri) in str(caught.value) and "expected s3://bucket[/prefix], found no bucket name" in str(caught.value)


class BreakingS3:
    """A real HTTP server on 127.0.0.1 that answers every GetObject with headers for `body` and, for the first
    `broken` requests, only half of it before closing the connection: a reset mid-body, as a flaky network does."""

    def __init__(self, body: bytes, broken: int) -> None:
        import http.server
        import threading

        self.gets = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                owner.gets += 1
                cut = owner.gets <= broken
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if cut else body)
                self.close_connection = cut  # the client is left waiting for the rest: the socket closes instead

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_credentials(monkeypatch) -> None:
    """A key pair to sign with: the breaking server checks no signature. No proxy for 127.0.0.1."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setattr("tasks.data.store.BODY_READ_RETRY_DELAYS_S", (0.01, 0.01))


def test_a_connection_reset_mid_body_is_retried(fake_credentials) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    server = BreakingS3(body, broken=2)
    try:
        assert S3Store("bucket", "prefix", endpoint=server.endpoint).get_bytes("obj.bin") == body
        assert server.gets == 3
    finally:
        server.close()


def test_a_body_that_always_breaks_is_a_store_error(fake_credentials) -> None:
    server = BreakingS3(b"x" * 100_000, broken=1_000)
    started = time.monotonic()
    try:
        with pytest.raises(StoreError) as caught:
            S3Store("bucket", "prefix", endpoint=server.endpoint).get_bytes("obj.bin")
    finally:
        server.close()
    message = str(caught.value)
    assert not isinstance(caught.value, MissingKey)
    assert "s3://bucket/prefix/obj.bin" in message and "after 3 attempts" in message
    assert "check the network" in message and server.endpoint in message
    assert server.gets == 3 and time.monotonic() - started < 20


def test_a_local_write_that_runs_out_of_space_is_a_store_error_and_leaves_nothing(tmp_path):
    """The write really fails in the kernel: a subprocess whose file-size limit (RLIMIT_FSIZE) is 64 KiB writes
    100 KB, which ends in EFBIG as a full disk ends in ENOSPC. One StoreError naming the file; no temporary left."""
    import subprocess
    import sys

    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "from tasks.errors import StoreError\n"
        "from tasks.data.store import LocalStore\n"
        "try:\n"
        "    LocalStore(sys.argv[1]).put_bytes('runs/r/model.keras', b'x' * 100_000)\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"writing {tmp_path}/runs/r/model.keras: File too large (100,000 bytes); no space")
    assert [p.name for p in (tmp_path / "runs" / "r").iterdir()] == []
