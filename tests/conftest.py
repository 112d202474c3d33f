"""Shared fixtures: the real dataset, a real S3 server (SeaweedFS), a Prefect test server.

Session-scoped and started only when a test asks for them:
- `fashion_dir`: Debian's Fashion-MNIST folder (apt-get install dataset-fashion-mnist).
- `raw_dataset`: the verified arrays read from it once per session (read-only: do not modify).
- `s3_server`: a `weed mini` on free 127.0.0.1 ports with one bucket; `.endpoint`, `.bucket`,
  `.access_key`, `.secret_key`, `.client()` (boto3), `.stop()` / `.start()` (same data, same ports),
  `.credentials_env()` for subprocesses. While it runs, os.environ carries its key pair and
  AWS_DEFAULT_REGION, so S3Store and pyarrow (standard credential chain) sign with it.
  AWS_ENDPOINT_URL is NOT set: pass `s3_endpoint=s3_server.endpoint` (or monkeypatch the variable).
- `s3_store_uri` (per test): a fresh `s3://<bucket>/test-<uuid>` prefix.
- `backend` / `store`: a store-backed test's backend ("local" in tests/unit, "s3" in tests/integration) and a fresh
  store on it.
- `prefect_api`: prefect_test_harness(); the API URL string, for PREFECT_API_URL of subprocesses.
- `ray_local` (module): a local Ray with 2 CPUs, started after SeaweedFS (`_ray_session`), shut down at the end.

None is autouse. tests/unit/conftest.py replaces `s3_server`, `prefect_api` and `ray_local` by fixtures that fail:
the unit tier starts none of them.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.seaweed_server import SeaweedServer, temporary_root

# The commands the tests start get a terminal's Ctrl-C, as a user's do. A test session started in the background by
# a non-interactive shell (`cmd &` in a script: "asynchronous commands ignore SIGINT") has SIGINT ignored, and an
# ignored signal stays ignored across exec: every `fmnist deploy` or `prefect worker` started here would ignore the
# Ctrl-C a test sends it. A handler (unlike SIG_IGN) is reset to the default by exec, so the children start as from
# a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@contextmanager
def environ(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for a session-long fixture, restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    missing = [name for name in FASHION_FILES if not (FASHION_DIR / name).is_file()]
    if missing:
        pytest.fail(
            f"Fashion-MNIST not found in {FASHION_DIR} (missing {missing}): "
            "apt-get install dataset-fashion-mnist",
            pytrace=False,
        )
    return FASHION_DIR


@pytest.fixture(scope="session")
def raw_dataset(fashion_dir):
    """The four verified arrays (tasks.data.dataset.RawDataset); shared, so never modify them in place."""
    from tasks.data.dataset import fetch_dataset

    return fetch_dataset(str(fashion_dir))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedServer]:
    server = SeaweedServer(temporary_root("weed-test-"))
    with environ(
        **server.credentials_env(),
        AWS_SESSION_TOKEN=None,
        AWS_PROFILE=None,
        AWS_EC2_METADATA_DISABLED="true",  # no instance-metadata lookups when a test removes the credentials
    ):
        try:
            server.start(timeout=60)
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield server
        finally:
            server.stop()
    import shutil

    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def s3_store_uri(s3_server: SeaweedServer) -> str:
    return f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session", params=["local", "s3"])
def backend(request) -> str:
    """The store backend of a store-backed test: "local" (a folder) or "s3" (the session's SeaweedFS). Each tier's
    conftest narrows it: tests/unit runs these tests on "local", tests/integration runs them again on "s3"
    (tests/integration/on_s3.py); here, for a tier that does not say, both."""
    return request.param


@pytest.fixture
def store(backend, request, tmp_path):
    """The same test on each backend of its tier: a local folder, or a fresh prefix on the session's SeaweedFS."""
    from tasks.data.store import open_store

    if backend == "local":
        return open_store(str(tmp_path / "store"))
    server = request.getfixturevalue("s3_server")
    return open_store(request.getfixturevalue("s3_store_uri"), s3_endpoint=server.endpoint)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    with environ(PREFECT_SERVER_ANALYTICS_ENABLED="false"):
        import prefect.settings
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=90):
            yield prefect.settings.PREFECT_API_URL.value()


def start_local_ray() -> None:
    """The local Ray the tests share: 2 CPUs (this machine's size), quiet workers. No-op if Ray is up."""
    import ray

    from tasks.tune.cluster import WORKER_ENV

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": WORKER_ENV})


@pytest.fixture(scope="session")
def _ray_session(s3_server) -> Iterator[None]:
    """After SeaweedFS, always: Ray's workers inherit the environment, and with it the S3 credentials,
    from the process that starts Ray (Tune is kept from copying them into runtime_env)."""
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")  # module scope: test_cluster.py shuts Ray down for its own clusters
def ray_local(_ray_session) -> Iterator[None]:
    """A real local Ray with 2 CPUs, started once and again if a module shut it down."""
    start_local_ray()
    yield
