"""`fmnist prepare` as a user runs it (tests/cli_user.py): a subprocess, against the session's Prefect test server."""

from __future__ import annotations

import re
import subprocess

import pytest

from tasks.data.shards import list_versions, load_manifest
from tasks.data.store import LocalStore, open_store
from tests.cli_user import run_fmnist

SUMMARY = re.compile(
    r"^dataset version (?P<version>[0-9a-f]{16}) \((?P<state>published|already published, nothing written)\): "
    r"train 60,000 rows, test 10,000 rows, 7 shards, (?P<mb>[0-9.]+) MB in (?P<store>\S+)$"
)


def summary(result: subprocess.CompletedProcess) -> re.Match:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    lines = result.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1]) if lines else None
    assert match, f"no summary line in stdout:\n{result.stdout}"
    return match


def test_prepare_into_a_folder_then_again(tmp_path, prefect_api) -> None:
    store_dir = tmp_path / "artifacts"
    first = summary(run_fmnist(["fmnist", "prepare", "--store", str(store_dir)], tmp_path,
                               {"PREFECT_API_URL": prefect_api}, timeout=300))
    assert first["state"] == "published" and first["store"] == str(store_dir)
    assert 25 < float(first["mb"]) < 40

    store = LocalStore(store_dir)
    assert list_versions(store) == [first["version"]]
    manifest = load_manifest(store, first["version"])
    assert {split: info["rows"] for split, info in manifest["splits"].items()} == {"train": 60_000, "test": 10_000}
    stamps = {p: p.stat().st_mtime_ns for p in store_dir.rglob("*") if p.is_file()}

    second = summary(run_fmnist(["fmnist", "prepare", "--store", str(store_dir)], tmp_path,
                                {"PREFECT_API_URL": prefect_api}, timeout=300))
    assert second["state"] == "already published, nothing written" and second["version"] == first["version"]
    assert {p: p.stat().st_mtime_ns for p in store_dir.rglob("*") if p.is_file()} == stamps


def test_prepare_into_s3(tmp_path, prefect_api, s3_server, s3_store_uri) -> None:
    # The endpoint as a flag; the key pair from the environment (the standard AWS chain).
    first = run_fmnist(["fmnist", "prepare", "--store", s3_store_uri, "--s3-endpoint", s3_server.endpoint], tmp_path,
                       {"PREFECT_API_URL": prefect_api}, timeout=300)
    match = summary(first)
    assert match["state"] == "published" and match["store"] == s3_store_uri
    store = open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    assert list_versions(store) == [match["version"]]
    assert load_manifest(store, match["version"])["splits"]["train"]["class_counts"] == [6000] * 10

    # The endpoint from AWS_ENDPOINT_URL instead: the same store, nothing to do.
    second = run_fmnist(["fmnist", "prepare", "--store", s3_store_uri], tmp_path,
                        {"PREFECT_API_URL": prefect_api, "AWS_ENDPOINT_URL": s3_server.endpoint}, timeout=300)
    assert summary(second)["state"] == "already published, nothing written"
    for output in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert s3_server.secret_key not in output


PREFECT_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| ")


def error_line(stderr: str) -> str:
    """The CLI's one error line. Prefect's own log lines may surround it (its EventsWorker may log after it at exit)."""
    lines = stderr.rstrip("\n").splitlines()
    found = [i for i, line in enumerate(lines) if line.startswith("fmnist prepare: error: ")]
    assert len(found) == 1, f"expected one 'fmnist prepare: error:' line in stderr:\n{stderr[-4000:]}"
    after = lines[found[0] + 1:]
    assert all(PREFECT_LOG_LINE.match(line) for line in after[:1]), f"the error continues on a second line:\n{stderr[-4000:]}"
    return lines[found[0]]


BAD_INPUTS = [
    pytest.param(["--source", "{tmp}/no-such-folder"], ["source folder {tmp}/no-such-folder", "does not exist",
                 "apt-get install dataset-fashion-mnist"], True, id="missing-source"),
    pytest.param(["--store", "ftp://x"], ["store URI 'ftp://x'", "unknown scheme 'ftp'", "s3://bucket/prefix"], False, id="ftp-store"),
    pytest.param(["--max-epochs", "-1"], ["config field 'max_epochs'", "greater than or equal to 1", "'-1'"], False, id="negative-epochs"),
    pytest.param(["--architectures", "nope"], ["config field 'architectures[0]'", "'baseline'", "'cnn2'", "(found 'nope')"], False,
                 id="unknown-architecture"),
    pytest.param(["--gpus-per-trial", "2"], ["config field 'gpus_per_trial'", "less than or equal to 1", "'2'"], False, id="gpu-share-above-1"),
]



def test_prepare_from_an_s3_source_uses_the_endpoint_flag(tmp_path, prefect_api, s3_server, s3_store_uri, fashion_dir,
                                                          monkeypatch) -> None:
    """--s3-endpoint reaches the s3:// --source too, with no AWS_ENDPOINT_URL to fall back on (issue 9, §6.1)."""
    raw_store = open_store(s3_store_uri, s3_endpoint=s3_server.endpoint)
    for path in sorted(fashion_dir.glob("*-ubyte.gz")):
        raw_store.put_bytes(f"raw/{path.name}", path.read_bytes())
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    store_dir = tmp_path / "artifacts"
    result = run_fmnist(["fmnist", "prepare", "--source", f"{s3_store_uri}/raw", "--s3-endpoint", s3_server.endpoint,
                         "--store", str(store_dir)], tmp_path,
                        {"PREFECT_API_URL": prefect_api, "FMNIST_S3_MAX_ATTEMPTS": "2"}, timeout=300)
    assert summary(result)["state"] == "published"
    assert f"from {s3_store_uri}/raw/train-images-idx3-ubyte.gz" in result.stdout + result.stderr

@pytest.mark.parametrize(("args", "expected", "creates_store"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_clear_line(tmp_path, prefect_api, args, expected, creates_store) -> None:
    store_dir = tmp_path / "store"
    args = [a.format(tmp=tmp_path) for a in args]
    if "--store" not in args:
        args += ["--store", str(store_dir)]
    result = run_fmnist(["fmnist", "prepare", *args], tmp_path, {"PREFECT_API_URL": prefect_api}, timeout=300)

    assert result.returncode == 2, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert result.stdout == ""
    last = error_line(result.stderr)
    for part in expected:
        assert part.format(tmp=tmp_path) in last, f"{part!r} not in {last!r}"
    # Nothing published, and bad input is not retried.
    assert "Retry 1/" not in result.stderr
    if creates_store:
        assert LocalStore(store_dir).list_keys() == []
    else:
        assert not store_dir.exists() and not (tmp_path / "artifacts").exists()
    if not any(a.startswith("--source") or a == "ftp://x" for a in args):
        assert result.stderr.count("\n") == 1  # a config error stops before Prefect starts: nothing but the error


def test_a_truncated_manifest_of_the_version_to_publish_exits_2_with_one_line(tmp_path, prefect_api, raw_dataset) -> None:
    from tasks.data.shards import dataset_version
    from tasks.keys import version_prefix

    store_dir = tmp_path / "artifacts"
    store = LocalStore(store_dir)
    prefix = version_prefix(dataset_version(raw_dataset.source_sha256, 10_000))
    store.put_bytes(f"{prefix}/manifest.json", b'{"format": 1, "dataset": "fashion-mnist", "splits": {"tra')
    result = run_fmnist(["fmnist", "prepare", "--store", str(store_dir)], tmp_path, {"PREFECT_API_URL": prefect_api},
                        timeout=300)

    assert result.returncode == 2, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    line = error_line(result.stderr)
    assert line.startswith(f"fmnist prepare: error: {store_dir}/{prefix}/manifest.json: the manifest of dataset version ")
    assert "it ends early (truncated)" in line
    assert line.endswith(f"delete {store_dir}/{prefix}/ and run `fmnist prepare --store {store_dir}` again")
    assert "Retry 1/" not in result.stderr and "Traceback" not in result.stderr  # a damaged file is not retried
    assert store.list_keys() == [f"{prefix}/manifest.json"]  # nothing written beside it


def test_fmnist_run_on_a_store_with_a_damaged_manifest_is_refused_before_prefect_starts(tmp_path, raw_dataset) -> None:
    """Issue 21 ("also seen"): store faults the run finds itself used to come after Prefect's temporary server had
    started (14-38 s in). As typed, with the default store and Prefect's temporary server: one line, no Prefect."""
    from tasks.data.shards import dataset_version
    from tasks.keys import version_prefix

    store = LocalStore(tmp_path / "artifacts")
    prefix = version_prefix(dataset_version(raw_dataset.source_sha256, 10_000))
    store.put_bytes(f"{prefix}/manifest.json", b'{"format": 1, "dataset": "fashion-mnist", "splits": {"tra')
    result = run_fmnist("fmnist run --preset quick --architectures baseline", tmp_path, timeout=300)

    assert result.returncode == 2, result.stderr[-4000:]
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                  if line.startswith("fmnist run: error: ")], result.stderr[-4000:]
    assert "the manifest of dataset version" in result.stderr and "it ends early (truncated)" in result.stderr
    assert "prefect" not in result.stderr.lower() and result.seconds < 20, result.seconds
    assert store.list_keys() == [f"{prefix}/manifest.json"]
