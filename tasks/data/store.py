"""Object storage behind one small interface, chosen by URI.

- a folder, or `file://…`: the embedded default (`./artifacts`);
- `s3://bucket/prefix`: boto3 against AWS or any S3-compatible endpoint.

Every write of a whole object is atomic (a local temp file renamed into place;
a single S3 PUT), so a reader never sees half an object. Multi-object
publications (a dataset version, a run) are made safe one level up by writing
their manifest last.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from tasks.errors import NO_SPACE_ERRNOS, StoreError, StoreUnreachable

if TYPE_CHECKING:
    import pyarrow.fs


def temp_file_beside(path: Path, data: bytes) -> Path:
    """`data` in a new temporary file beside `path`, flushed to disk (fsync) before the caller renames or links it
    into place, so that after a crash `path` holds the whole of it or nothing. The one place that fsyncs; a failed
    write leaves nothing behind and raises its OSError."""
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_atomically(path: Path, data: bytes) -> None:
    """Replace the file at `path` by `data`, atomically: a reader sees the old content or the new, never a part."""
    os.replace(temp_file_beside(path, data), path)


class MissingKey(StoreError):
    """The key does not exist in the store."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"store key {key!r}: expected a relative path like 'runs/<id>/file', without '..' or '//'")
    return key


def _check_prefix(prefix: str) -> str:
    """A list_keys prefix: empty, or a key that may end with '/'. Matched as a string prefix, as in S3."""
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if prefix and (not body or body.startswith("/") or any(p in ("", ".", "..") for p in body.split("/"))):
        raise StoreError(f"store prefix {prefix!r}: expected a relative path like 'runs/<id>/', without '..' or '//'")
    return prefix


def _check_folder_prefix(prefix: str) -> str:
    """A list_prefixes prefix: empty (the root) or a folder, ending with '/'."""
    if prefix and not prefix.endswith("/"):
        raise StoreError(f"store prefix {prefix!r}: list_prefixes expects a folder ending with '/', like 'runs/'")
    return _check_prefix(prefix)


def _is_object(path: Path) -> bool:
    """A file a reader can get: not a folder, a temporary file of a write in progress, or a lock."""
    return path.is_file() and ".tmp-" not in path.name and not path.name.endswith(".lock")


@dataclass(frozen=True)
class Stamped:
    """An object read together with two times from the store's own clock: when it was last written and when it
    was read. Their difference is its age as the store measures it, whatever the reader's clock says."""

    data: bytes | None  # None: absent
    token: str | None  # the version token of read_versioned
    modified: float | None  # seconds since the epoch, by the store's clock (S3 LastModified, the file's mtime)
    now: float  # the store's clock at the read (S3's Date header; a probe file's mtime)

    @property
    def age_s(self) -> float | None:
        """Seconds since the object was last written, by the store's clock; None when it is absent."""
        return None if self.modified is None else max(0.0, self.now - self.modified)


class Store(ABC):
    """What every stage needs of object storage."""

    uri: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` at `key` atomically, replacing what was there."""

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write only if `key` does not exist yet; return False when it did (someone else won)."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; MissingKey when there is none."""

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """(bytes, version token) of `key`, or (None, None) when absent: the start of a compare-and-swap."""

    @abstractmethod
    def put_if_version(self, key: str, data: bytes, token: str | None) -> bool:
        """Write only if `key` still has version `token` (None: still absent). False: someone else wrote first."""

    @abstractmethod
    def read_stamped(self, key: str) -> Stamped:
        """read_versioned, with when the object was written and when it was read, both by the store's clock: an
        age no client's clock can skew (the run lease judges its holder by it)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key that starts with `prefix` (a string prefix, as in S3: 'runs/a' matches 'runs/ab/x'), sorted."""

    @abstractmethod
    def list_prefixes(self, prefix: str = "") -> list[str]:
        """The "folders" one level below `prefix` ('' or ending with '/') that hold at least one object, each as a
        prefix ending with '/', sorted. One delimiter listing on S3: listing runs/ this way costs a request per
        1,000 runs, not one per 1,000 of their files (checkpoints included)."""

    @abstractmethod
    def modified_at(self, key: str) -> float | None:
        """When `key` was last written (seconds since the epoch), or None when it is absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; no error when it is already gone."""

    @abstractmethod
    def arrow_filesystem(self) -> tuple["pyarrow.fs.FileSystem", str]:
        """A pyarrow filesystem and the base path in it, for Ray Tune's storage."""

    def url_for(self, key: str) -> str:
        """Where `key` lives, as a user would type it."""
        return f"{self.uri.rstrip('/')}/{_check_key(key)}"


class LocalStore(Store):
    """A folder on this machine (or a shared mount on a cluster)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store folder {self.root}: cannot create it ({exc.strerror}); choose a writable --store") from None

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        """`data` in a temporary file beside `path`; a failed write (disk full, no permission) leaves nothing
        behind and is a StoreError naming the folder, not an OSError from deep inside a stage."""
        try:
            return temp_file_beside(path, data)
        except OSError as exc:
            hint = ("no space for it there (the disk is full, or a quota or size limit): free space or choose "
                    "another --store" if exc.errno in NO_SPACE_ERRNOS
                    else "check the folder's permissions or choose another --store")
            raise StoreError(f"writing {path}: {exc.strerror or exc} ({len(data):,} bytes); {hint}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.replace(self._write_temp(path, data), path)  # write_atomically, with the StoreError of _write_temp

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        temp = self._write_temp(path, data)
        try:
            os.link(temp, path)  # atomic, and fails if `path` exists: the local twin of If-None-Match
            return True
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingKey(f"{self.url_for(key)}: no such object") from None

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def read_stamped(self, key: str) -> Stamped:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:  # mtime and bytes of the same file, even if it is replaced meanwhile
                modified = os.fstat(handle.fileno()).st_mtime
                data = handle.read()
        except FileNotFoundError:
            return Stamped(None, None, None, self._clock(path.parent))
        return Stamped(data, hashlib.sha256(data).hexdigest(), modified, self._clock(path.parent))

    @staticmethod
    def _clock(folder: Path) -> float:
        """The folder's clock: the mtime the file system gives a file made now (on a shared mount, the file
        server's clock). This machine's clock where nothing can be made there (absent or read-only)."""
        probe = folder / f".clock.tmp-{uuid.uuid4().hex}"
        try:
            handle = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError:
            return time.time()
        try:
            return os.fstat(handle).st_mtime
        finally:
            os.close(handle)
            probe.unlink(missing_ok=True)

    def put_if_version(self, key: str, data: bytes, token: str | None) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # An exclusive lock makes compare-then-replace atomic between processes on this machine.
        with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.read_versioned(key)[1] != token:
                return False
            self.put_bytes(key, data)
            return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> list[str]:
        _check_prefix(prefix)
        # Walk the deepest folder that holds every match: the prefix itself when it ends with '/', else its parent.
        start = self.root / prefix if not prefix or prefix.endswith("/") else (self.root / prefix).parent
        if not start.is_dir():
            return []
        keys = []
        for path in start.rglob("*"):
            if path.is_file() and ".tmp-" not in path.name and not path.name.endswith(".lock"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_prefixes(self, prefix: str = "") -> list[str]:
        folder = self.root / _check_folder_prefix(prefix)
        if not folder.is_dir():
            return []
        return sorted(f"{prefix}{child.name}/" for child in folder.iterdir()
                      if child.is_dir() and any(_is_object(path) for path in child.rglob("*")))

    def modified_at(self, key: str) -> float | None:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def arrow_filesystem(self) -> tuple["pyarrow.fs.FileSystem", str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self.root)


_NOT_FOUND = ("NoSuchKey", "404", "NotFound")
# botocore retries a request until its headers arrive, not the body read after it: a connection reset
# mid-body would end the run. Backoff between our own attempts of the whole GET (the stream is spent).
BODY_READ_RETRY_DELAYS_S: tuple[float, ...] = (1.0, 4.0)
# A conditional write that lost: the key changed, appeared, or vanished since it was read.
_LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey")


class S3Store(Store):
    """A bucket (and optional prefix) on AWS S3 or any S3-compatible server."""

    def __init__(self, bucket: str, prefix: str = "", endpoint: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        from tasks.settings import current_settings

        settings = current_settings()
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint = endpoint or settings.aws_endpoint_url
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        # Credentials come from the standard AWS chain (env, profile, instance role), never from our config.
        config = Config(
            retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # Some S3-compatible servers reject or store boto3's default CRC checksums (boto/boto3#4392).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def where(self) -> str:
        return f"{self.uri} (endpoint {self.endpoint or 'AWS default'})"

    def _error(self, exc: Exception, action: str, key: str | None = None) -> StoreError:
        """Turn a botocore failure into a message that says what to fix."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        target = f"{self.uri.rstrip('/')}/{key}" if key else self.uri  # key already checked; may be a list prefix
        if isinstance(exc, EndpointConnectionError):
            return StoreUnreachable(
                f"{action} {target}: cannot reach S3 endpoint {self.endpoint or 'AWS'} after retries; "
                "check --s3-endpoint / AWS_ENDPOINT_URL and that the server is up"
            )
        if isinstance(exc, NoCredentialsError):
            return StoreError(f"{action} {target}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile/role")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (code == "404" and key is None):
                return StoreError(f"{action} {target}: bucket '{self.bucket}' does not exist at {self.where()}; create it or fix the store URI")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403") or status == 403:
                return StoreError(
                    f"{action} {target}: the S3 server rejected the credentials ({code or status}); "
                    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance role's permissions"
                )
            return StoreError(f"{action} {target}: S3 error {code or status}: {exc.response.get('Error', {}).get('Message', '')}")
        return StoreError(f"{action} {target}: {type(exc).__name__}: {exc}")

    def _request(self, action: str, key: str | None, operation: str, tolerate: tuple[str, ...] = (), **params):
        """One client call on the bucket; None when S3 answers with an error code in `tolerate`
        (a missing key, a lost conditional write), a StoreError saying what to fix on any other failure."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in tolerate:
                return None
            raise self._error(exc, action, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, action, key) from None

    def check(self) -> "S3Store":
        """Fail fast, with a clear message, on a wrong endpoint, bucket or credentials."""
        self._request("opening store", None, "head_bucket")
        return self

    def put_bytes(self, key: str, data: bytes) -> None:
        import base64

        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # the server rejects a body damaged in transit
        self._request("writing", key, "put_object", Key=self._key(key), Body=data, ContentMD5=md5)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.put_if_version(key, data, None)

    def get_bytes(self, key: str) -> bytes:
        data, _ = self.read_versioned(key)
        if data is None:
            raise MissingKey(f"{self.url_for(key)}: no such object")
        return data

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        from botocore.exceptions import BotoCoreError

        delays = BODY_READ_RETRY_DELAYS_S  # read at call time, so tests can shorten it
        last: Exception | None = None
        for delay in (0.0, *delays):
            time.sleep(delay)
            response = self._request("reading", key, "get_object", _NOT_FOUND, Key=self._key(key))
            if response is None:
                return None, None
            try:
                return response["Body"].read(), response["ETag"]
            except (BotoCoreError, OSError) as exc:  # ResponseStreamingError, IncompleteReadError, ReadTimeoutError
                last = exc
        raise StoreError(
            f"reading {self.url_for(key)}: the connection broke while receiving the object, after {len(delays) + 1} "
            f"attempts ({last}); check the network and the S3 server at {self.endpoint or 'AWS'}, then run again"
        )

    def read_stamped(self, key: str) -> Stamped:
        from botocore.exceptions import BotoCoreError

        for delay in (0.0, *BODY_READ_RETRY_DELAYS_S):  # a body cut off mid-read: the whole GET again
            time.sleep(delay)
            response = self._request("reading", key, "get_object", _NOT_FOUND, Key=self._key(key))
            if response is None:  # absent: the store's clock from a HEAD of the bucket
                return Stamped(None, None, None, _server_time(self._request("checking", None, "head_bucket")))
            try:
                data = response["Body"].read()
            except (BotoCoreError, OSError):
                continue
            return Stamped(data, response["ETag"], response["LastModified"].timestamp(), _server_time(response))
        raise StoreError(f"reading {self.url_for(key)}: the connection broke while receiving the object, after "
                         f"{len(BODY_READ_RETRY_DELAYS_S) + 1} attempts; check the network and the S3 server at "
                         f"{self.endpoint or 'AWS'}, then run again")

    def put_if_version(self, key: str, data: bytes, token: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        return self._request("writing", key, "put_object", _LOST_RACE, Key=self._key(key), Body=data,
                             **condition) is not None

    def exists(self, key: str) -> bool:
        return self._request("checking", key, "head_object", _NOT_FOUND, Key=self._key(key)) is not None

    def list_keys(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = (self.prefix + "/" if self.prefix else "") + _check_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                # Skip folder markers ("a/b/", made by pyarrow's create_dir): not objects a reader can get.
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "listing", prefix or None) from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._request("deleting", key, "delete_object", Key=self._key(key))

    def list_prefixes(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = (self.prefix + "/" if self.prefix else "") + _check_folder_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full, Delimiter="/")
            for page in pages:
                found.extend(entry["Prefix"][strip:] for entry in page.get("CommonPrefixes", []))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "listing", prefix or None) from None
        return sorted(found)

    def modified_at(self, key: str) -> float | None:
        response = self._request("checking", key, "head_object", _NOT_FOUND, Key=self._key(key))
        return None if response is None else response["LastModified"].timestamp()

    def arrow_filesystem(self) -> tuple["pyarrow.fs.FileSystem", str]:
        import pyarrow.fs

        # pyarrow ignores AWS_ENDPOINT_URL (ray-project/ray#37177): pass the endpoint explicitly.
        # No keys are passed: they would be pickled into Tune's experiment state; pyarrow
        # reads the same standard credential chain itself.
        options: dict[str, object] = {}
        if self.endpoint:
            parsed = urlparse(self.endpoint)
            # The region boto3 signs with (the AWS chain's: AWS_REGION, the profile's, else us-east-1, which
            # S3-compatible servers such as SeaweedFS and MinIO accept): given, pyarrow does not look it up itself.
            options.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https",
                           region=self.client.meta.region_name or "us-east-1")
        base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return pyarrow.fs.S3FileSystem(**options), base


def _server_time(response: dict) -> float:
    """The S3 server's clock at a response (its Date header, to the second); this machine's if it sent none."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()


def open_store(uri: str, s3_endpoint: str | None = None) -> Store:
    """The store a URI names: a folder / file://… (local) or s3://bucket/prefix."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = parsed.path if parsed.scheme == "file" else uri
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise StoreError(f"store URI {uri!r}: file:// URIs name a local path (file:///abs/path); found host {parsed.netloc!r}")
        return LocalStore(path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store URI {uri!r}: expected s3://bucket[/prefix], found no bucket name")
        return S3Store(parsed.netloc, parsed.path, endpoint=s3_endpoint).check()
    raise StoreError(
        f"store URI {uri!r}: unknown scheme '{parsed.scheme}'; expected a folder path, file:///path or s3://bucket/prefix"
    )


def open_store_when_it_answers(uri: str, s3_endpoint: str | None, wait_s: float) -> Store:
    """open_store, waiting up to `wait_s` for a store that does not answer (an outage) before giving up.

    For a trial's start: Tune restarts a failed trial at once, so without a wait the restarts (max_failures) of
    every trial are spent within seconds of an outage's start, and a 30 s blip fails the run. Only an unanswered
    store is waited for; a refusal (credentials, a missing bucket) fails at once. Backoff 1, 2, 4 … 15 s."""
    deadline = time.monotonic() + wait_s
    delay = 1.0
    while True:
        try:
            return open_store(uri, s3_endpoint)
        except StoreUnreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnreachable(f"{exc} (waited {wait_s:g} s for it to answer)") from None
            time.sleep(min(delay, left))
            delay = min(2 * delay, 15.0)
