"""Integration: `fmnist run --preset quick` end to end on local Ray against the SeaweedFS store."""

import asyncio
import json
import re
import uuid

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.cli import main
from tasks.model.architectures import ARCHITECTURES
from tasks.model.artifacts import load_run_model
from tasks.config import ALL_ARCHITECTURES
from tasks.data.shards import load_split
from tasks.data.store import open_store
from tasks.model.training import to_model_input

PER_MODEL = ("metrics.json", "history.csv", "model.keras", "curves.png", "confusion.png")


@pytest.fixture(scope="module")
def quick_run(prefect_api, s3_server, ray_local):
    store_uri = f"s3://{s3_server.bucket}/e2e-{uuid.uuid4().hex[:8]}"
    code = main(["run", "--preset", "quick", "--store", store_uri, "--s3-endpoint", s3_server.endpoint,
                 "--run-id", "quick-e2e"])
    assert code == 0
    return open_store(store_uri, s3_server.endpoint)


def test_every_artifact_is_left_for_all_five_models(quick_run):
    keys = set(quick_run.list_keys("runs/quick-e2e/"))
    for arch in ALL_ARCHITECTURES:
        for name in PER_MODEL:
            assert f"runs/quick-e2e/{arch}/{name}" in keys, f"{arch}/{name} missing"
    for name in ("summary.json", "summary.md", "run.json", "samples.png"):
        assert f"runs/quick-e2e/{name}" in keys
    assert quick_run.get_bytes("runs/quick-e2e/cnn2/curves.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_is_table1_with_the_reports_numbers_beside_ours(quick_run):
    summary = json.loads(quick_run.get_bytes("runs/quick-e2e/summary.json"))
    assert [row["key"] for row in summary["table1"]] == list(ALL_ARCHITECTURES)
    cnn2 = summary["table1"][-1]
    assert cnn2["report_test_acc"] == 92.72 and cnn2["params"] == 409_034
    assert cnn2["test_acc_diff"] == pytest.approx(cnn2["test_acc"] - 92.72, abs=0.011)
    markdown = quick_run.get_bytes("runs/quick-e2e/summary.md").decode()
    for name in ("Baseline", "Baseline + 1 Hidden Layer", "Baseline + 3 Hidden Layers + Dropout",
                 "1 CNN Layer + Best MLP", "2 CNN Layers + 1 Hidden Layer"):
        assert f"| {name} |" in markdown
    record = json.loads(quick_run.get_bytes("runs/quick-e2e/run.json"))
    assert record["status"] == "completed" and record["config"]["preset"] == "quick"
    assert record["libraries"]["tensorflow"] and record["dataset_version"] == summary["dataset_version"]


def test_a_stored_model_predicts_its_stored_test_accuracy(quick_run, tmp_path):
    metrics = json.loads(quick_run.get_bytes("runs/quick-e2e/cnn2/metrics.json"))
    model = load_run_model(quick_run, "quick-e2e", "cnn2")  # safe_mode, hash checked against metrics.json
    images, labels, _ = load_split(quick_run, metrics["dataset_version"], "test", metrics["rows"]["test"])
    predicted = model.predict(to_model_input(images, (28, 28, 1)), verbose=0).argmax(1)
    assert float((predicted == labels).mean()) == metrics["test_accuracy"]


def test_prefect_ui_gets_the_table_and_summary_artifacts(quick_run):
    async def read(key):
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    # Other tests' runs share this Prefect server: find this run's artifacts by its flow run.
    summary = next(a for a in asyncio.run(read("fmnist-summary-quick")) if "Run quick-e2e:" in a.data)
    # A quick run's table and summary have their own history, apart from the full protocol's nightly one.
    table = next(a for a in asyncio.run(read("fmnist-table1-quick")) if a.flow_run_id == summary.flow_run_id)
    for nightly in ("fmnist-table1", "fmnist-summary"):
        assert not [a for a in asyncio.run(read(nightly)) if a.flow_run_id == summary.flow_run_id]
    assert "| 2 CNN Layers + 1 Hidden Layer |" in summary.data and "## Champion" in summary.data
    # For people: headers in words with units, the test accuracy first, numbers as they read in the summary.
    rows = json.loads(table.data)
    assert list(rows[0])[:4] == ["Model", "Test accuracy (%)", "Report's test accuracy (%)", "Δ vs report (points)"]
    assert [row["Model"] for row in rows] == [ARCHITECTURES[key].report_name for key in ALL_ARCHITECTURES]
    stored = {row["model"]: row for row in json.loads(quick_run.get_bytes("runs/quick-e2e/summary.json"))["table1"]}
    cnn2 = rows[-1]
    assert cnn2["Parameters"] == "409,034" and cnn2["Report's test accuracy (%)"] == "92.72"
    assert cnn2["Test accuracy (%)"] == f"{stored[cnn2['Model']]['test_acc']:.2f}"
    assert cnn2["Δ vs report (points)"] == f"{stored[cnn2['Model']]['test_acc_diff']:+.2f}"
    assert all(re.fullmatch(r"[+-]?[\d,]+(\.\d\d)?", value) for row in rows for name, value in row.items()
               if name != "Model"), rows


def test_a_finished_run_is_never_overwritten(quick_run, s3_server, capsys):
    code = main(["run", "--preset", "quick", "--store", quick_run.uri, "--s3-endpoint", s3_server.endpoint,
                 "--run-id", "quick-e2e"])
    assert code == 2
    assert "already finished" in capsys.readouterr().err


def test_the_sentinel_secret_appears_nowhere(quick_run, s3_server, prefect_api):
    """The AWS secret of this session is a sentinel: grep everything the run produced for it."""
    secret = s3_server.secret_key.encode()
    assert secret.startswith(b"fmnist-sentinel-secret-")
    # Every object in the store: shards (Parquet metadata included), models, plots, records, Tune's state.
    objects = quick_run.list_keys("")
    assert any(k.endswith(".parquet") for k in objects) and any("/tune/" in k for k in objects)
    leaked = [k for k in objects if secret in quick_run.get_bytes(k)]
    assert not leaked, f"secret found in {leaked}"

    async def every_page(read) -> list:  # the server answers at most 200 per call
        found: list = []
        while True:
            page = await read(limit=200, offset=len(found))
            found += page
            if len(page) < 200:
                return found

    async def prefect_texts():
        async with get_client() as client:
            artifacts = await every_page(client.read_artifacts)
            logs = await every_page(client.read_logs)
        return [str(a.data) for a in artifacts] + [log.message for log in logs]

    texts = asyncio.run(prefect_texts())
    assert texts and not [t for t in texts if secret.decode() in t]

    # Ray's own logs of this session (the trials ran there with the secret in their environment).
    from pathlib import Path

    ray_logs = [p for p in Path("/tmp/ray/session_latest/logs").rglob("*") if p.is_file()]
    assert ray_logs and not [p for p in ray_logs if secret in p.read_bytes()]

    # And an error from the store, with the secret in use, does not quote it.
    from tasks.errors import StoreError

    with pytest.raises(StoreError) as error:
        open_store("s3://no-such-bucket-here", s3_server.endpoint)
    assert secret.decode() not in str(error.value)
