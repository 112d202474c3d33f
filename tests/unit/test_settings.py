"""The environment variables as one settings model (tasks/settings.py): their defaults, a bad value's one line, that
nothing else reads them, and run.json recording the values a run used (with the effective S3 endpoint)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tasks.config import build_config
from tasks.data.shards import PrepareResult
from tasks.data.store import LocalStore, S3Store
from tasks.errors import ConfigError
from tasks.runs.reporting import run_record
from tasks.runs.run import Run
from tasks.settings import Settings, current_settings, variable

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = [variable(name) for name in Settings.model_fields]


@pytest.fixture
def clean_env(monkeypatch):
    """None of the settings' variables set, whatever the session has."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_ten_variables_are_the_settings():
    assert sorted(VARIABLES) == sorted([
        "FMNIST_DEBUG", "FASHION_MNIST_DIR", "FMNIST_CACHE_DIR", "FMNIST_RAY_CONNECT_TIMEOUT_S",
        "FMNIST_PLACEMENT_TIMEOUT_S", "FMNIST_LEASE_TTL_S", "FMNIST_PROGRESS", "FMNIST_S3_MAX_ATTEMPTS",
        "AWS_ENDPOINT_URL", "RAY_ADDRESS"])
    assert all(info.description for info in Settings.model_fields.values())


def test_defaults(clean_env):
    settings = current_settings()
    assert settings.debug is False and settings.progress == "auto"
    assert settings.fashion_mnist_dir is None and settings.aws_endpoint_url is None and settings.ray_address is None
    assert settings.cache_dir == Path.home() / ".cache" / "fmnist-pipeline"
    assert (settings.ray_connect_timeout_s, settings.placement_timeout_s, settings.lease_ttl_s) == (30, 600, 120)
    assert settings.s3_max_attempts == 8


def test_values_are_read_when_asked_for(clean_env, tmp_path):
    clean_env.setenv("FMNIST_LEASE_TTL_S", "45")
    clean_env.setenv("FMNIST_PROGRESS", " Plain ")
    clean_env.setenv("FMNIST_CACHE_DIR", str(tmp_path))
    clean_env.setenv("RAY_ADDRESS", "ray://head:10001")
    settings = current_settings()
    assert (settings.lease_ttl_s, settings.progress, settings.cache_dir) == (45, "plain", tmp_path)
    assert settings.ray_address == "ray://head:10001"
    clean_env.setenv("FMNIST_LEASE_TTL_S", "60")
    assert current_settings().lease_ttl_s == 60  # not cached: a changed variable is seen


@pytest.mark.parametrize("value, on", [("1", True), ("yes", True), ("0", False), ("", False), ("  ", False)])
def test_debug_is_on_for_anything_but_empty_or_0(clean_env, value, on):
    clean_env.setenv("FMNIST_DEBUG", value)
    assert current_settings().debug is on


@pytest.mark.parametrize("name", ["FMNIST_RAY_CONNECT_TIMEOUT_S", "FMNIST_S3_MAX_ATTEMPTS", "AWS_ENDPOINT_URL"])
def test_an_empty_or_blank_variable_is_unset(clean_env, name):
    default = current_settings()
    for blank in ("", "   "):
        clean_env.setenv(name, blank)
        assert current_settings() == default


@pytest.mark.parametrize("name, bad, expected", [
    ("FMNIST_RAY_CONNECT_TIMEOUT_S", "soon", "expected a number of seconds above 0, found 'soon'"),
    ("FMNIST_PLACEMENT_TIMEOUT_S", "0", "expected a number of seconds above 0, found '0'"),
    ("FMNIST_LEASE_TTL_S", "-5", "expected a number of seconds above 0, found '-5'"),
    ("FMNIST_S3_MAX_ATTEMPTS", "2.5", "expected a whole number of at least 1, found '2.5'"),
    ("FMNIST_PROGRESS", "fancy", "expected one of 'auto', 'plain', found 'fancy'"),
])
def test_a_bad_value_is_one_line_naming_the_variable(clean_env, name, bad, expected):
    clean_env.setenv(name, bad)
    with pytest.raises(ConfigError) as caught:
        current_settings()
    assert str(caught.value) == f"environment variable {name}: {expected}"


def test_nothing_else_reads_the_variables():
    """Every read goes through the settings: no os.environ / getenv of these names in tasks/ or flows/."""
    names = "|".join(VARIABLES)
    reads = re.compile(rf"(environ\.get\(|environ\[|getenv\()\s*['\"]({names})['\"]")
    found = [f"{path.relative_to(ROOT)}:{number}" for folder in ("tasks", "flows") for path in (ROOT / folder).rglob("*.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if reads.search(line)]
    assert found == []


def _finished_run(store, **config) -> Run:
    config = build_config(store=str(getattr(store, "root", "/unused")), run_id="r1", **config)
    return Run.unclaimed(config, store, "r1", PrepareResult("0123456789abcdef", False, {"splits": {}}))


def test_run_json_records_the_settings_used(clean_env, tmp_path):
    clean_env.setenv("FMNIST_LEASE_TTL_S", "90")
    clean_env.setenv("FMNIST_PROGRESS", "plain")
    run = _finished_run(LocalStore(tmp_path / "artifacts"))
    record = run_record(run, run.started + 1)
    settings = record["settings"]
    assert set(settings) == set(VARIABLES)
    assert settings["FMNIST_LEASE_TTL_S"] == 90 and settings["FMNIST_PROGRESS"] == "plain"
    assert settings["FMNIST_S3_MAX_ATTEMPTS"] == 8 and settings["AWS_ENDPOINT_URL"] is None
    assert record["status"] == "completed" and record["s3_endpoint"] is None  # a local store: no endpoint
    json.dumps(record)  # all of it JSON


def test_run_json_records_the_endpoint_that_came_from_the_environment(clean_env):
    clean_env.setenv("AWS_ENDPOINT_URL", "http://user:secret@127.0.0.1:8333")
    store = S3Store("bucket", "prefix")  # no request is made: the client is only built
    run = _finished_run(store, s3_endpoint=None)
    record = run_record(run, run.started + 1)
    assert record["config"]["s3_endpoint"] is None  # nothing given as an option …
    assert record["s3_endpoint"] == "http://127.0.0.1:8333"  # … the endpoint the store used, credentials left out
    assert record["settings"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333"
    assert "secret" not in json.dumps(record)
