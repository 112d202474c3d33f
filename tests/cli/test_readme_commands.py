"""The README's commands, run as a user types them (tests/cli_user.py): from a fresh empty folder, with the defaults
the README relies on (no --store, no PREFECT_API_URL: the temporary Prefect server), in a subprocess, reading only
what a user sees.

tests/unit/test_readme_commands.py keeps the rule: a command added to the README without a test here (or in the
module its COVERAGE names, or a stated reason it cannot run on this machine) fails the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_user import VENV_BIN, ok, run_fmnist, start_fmnist, stop_group


@pytest.fixture
def fresh_folder(tmp_path) -> Path:
    folder = tmp_path / "user"
    folder.mkdir()
    return folder


def test_prepare_as_typed(fresh_folder):
    out = ok(run_fmnist("fmnist prepare", fresh_folder))
    manifests = list((fresh_folder / "artifacts" / "datasets" / "fashion-mnist").glob("*/manifest.json"))
    assert len(manifests) == 1 and f"MB in {fresh_folder / 'artifacts'}" in out


@pytest.mark.slow
def test_quick_run_as_typed(fresh_folder):
    out = ok(run_fmnist("fmnist run --preset quick", fresh_folder))
    runs = [p for p in (fresh_folder / "artifacts" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    for arch in ("baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2"):
        assert (run / arch / "metrics.json").is_file() and (run / arch / "model.keras").is_file(), arch
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["store"] == str(fresh_folder / "artifacts")  # resolved once, absolute
    assert record["config"]["max_epochs"] == 2 and record["config"]["train_rows"] == 3000
    assert f"artifacts: {run}/" in out

    champions = ok(run_fmnist("fmnist champion", fresh_folder, timeout=60))
    assert champions.startswith(f"no champion yet in {fresh_folder / 'artifacts'}")


@pytest.mark.slow
def test_search_as_typed(fresh_folder):
    """The README's quick search, then the run with the recipes it stored, in the same fresh folder."""
    out = ok(run_fmnist("fmnist search --preset quick --architectures baseline,mlp1", fresh_folder, timeout=900))
    runs = [p for p in (fresh_folder / "artifacts" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and f"artifacts: {runs[0]}/" in out
    rows = json.loads((runs[0] / "search" / "leaderboard.json").read_text())
    assert len(rows) == 12  # the quick preset's 6 recipes for each of the two
    assert "Table 1, the winning recipes beside the report" in out and " ± " in out
    for arch in ("baseline", "mlp1"):
        assert json.loads((fresh_folder / "artifacts" / "recipes" / "quick" / f"{arch}.json").read_text())["run_id"] == runs[0].name

    ok(run_fmnist("fmnist run --preset quick --recipe best --architectures baseline,mlp1", fresh_folder))
    best = [p for p in (fresh_folder / "artifacts" / "runs").iterdir() if p.is_dir() and p != runs[0]]
    assert len(best) == 1
    for arch in ("baseline", "mlp1"):
        stored = json.loads((fresh_folder / "artifacts" / "recipes" / "quick" / f"{arch}.json").read_text())["recipe"]
        metrics = json.loads((best[0] / arch / "metrics.json").read_text())
        assert metrics["recipe_name"] == "best" and metrics["recipe"]["learning_rate"] == stored["learning_rate"]


def test_first_command_as_typed(fresh_folder):
    """README command 1 runs `.venv/bin/fmnist run` from the clone's root: here from a fresh folder that holds a
    `.venv` link to the venv, one model, quick (the full protocol is the benchmark)."""
    (fresh_folder / ".venv").symlink_to(VENV_BIN.parent)
    ok(run_fmnist(".venv/bin/fmnist run --preset quick --architectures baseline", fresh_folder))
    assert list((fresh_folder / "artifacts" / "runs").glob("*/baseline/metrics.json"))


def test_help_as_typed(fresh_folder):
    from tasks.config import PipelineConfig

    from flows.cli.options import NOT_OPTIONS

    out = ok(run_fmnist("fmnist run --help", fresh_folder, timeout=60))
    for name, field in PipelineConfig.model_fields.items():
        assert field.description, f"{name} has no description (the UI form and --help show it)"
        assert ("--" + name.replace("_", "-") in out) == (name not in NOT_OPTIONS), name
    assert "--resume" in out and "--debug" in out


def test_deploy_as_typed(fresh_folder, prefect_api, s3_server):
    """`fmnist deploy --timezone Europe/Berlin --store s3://my-bucket/fmnist` against a real Prefect server: the
    bucket is this test's, the endpoint from AWS_ENDPOINT_URL. It registers the deployment, serves, and stops on
    Ctrl-C (SIGINT to its process group, as a terminal sends it)."""
    from prefect import get_client
    import asyncio

    name = f"nightly-typed-{os.getpid()}"
    command = f"fmnist deploy --timezone Europe/Berlin --store s3://{s3_server.bucket}/fmnist --name {name}"
    env = {"PREFECT_API_URL": prefect_api, "AWS_ENDPOINT_URL": s3_server.endpoint}
    process = start_fmnist(command, fresh_folder, env, merge_stderr=True)

    async def registered():
        async with get_client() as client:
            try:
                return await client.read_deployment_by_name(f"fmnist-run/{name}")
            except Exception:
                return None

    try:
        deadline, deployment = time.monotonic() + 120, None
        while deployment is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(1)
            deployment = asyncio.run(registered())
        assert deployment is not None, f"deployment not registered within 120 s (exit {process.poll()})"
        schedule = deployment.schedules[0].schedule
        assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "Europe/Berlin")
        assert deployment.parameters["config"]["store"] == f"s3://{s3_server.bucket}/fmnist"
        assert deployment.parameters["config"]["max_epochs"] is None  # left to the preset the form chooses
    finally:
        stop_group(process, signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stop_group(process)
            output, _ = process.communicate(timeout=10)
            raise AssertionError(f"`fmnist deploy` ignored Ctrl-C for 60 s:\n{output[-3000:]}") from None
    assert "Traceback" not in output, output[-3000:]


# --- a bad source is one line: the holdout the issue names, checked before Prefect starts ------------------------

def _copy_dataset(fashion_dir: Path, folder: Path) -> Path:
    folder.mkdir()
    for file in fashion_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def _html(path: Path) -> None:
    path.write_bytes(b"<!DOCTYPE html><html><body>Not found</body></html>")


def _wrong_magic(path: Path) -> None:
    import gzip

    content = bytearray(gzip.decompress(path.read_bytes()))
    content[3] = 0x02
    path.write_bytes(gzip.compress(bytes(content)))


def _wrong_hash(path: Path) -> None:
    import gzip

    content = bytearray(gzip.decompress(path.read_bytes()))
    content[-1] = (content[-1] + 1) % 10  # still a valid label: only the hash tells
    path.write_bytes(gzip.compress(bytes(content)))


BAD_SOURCES = {
    "truncated": (_truncate, "truncated .gz"),
    "html": (_html, "expected gzip data"),
    "wrong-magic": (_wrong_magic, "IDX field 'magic'"),
    "wrong-hash": (_wrong_hash, "does not match Fashion-MNIST"),
    "missing-file": (Path.unlink, "expected t10k-labels-idx1-ubyte.gz"),
}


@pytest.mark.parametrize("command", ["prepare", "run --preset quick"])
@pytest.mark.parametrize("fault", sorted(BAD_SOURCES))
def test_a_bad_source_is_one_line_and_no_traceback(fresh_folder, fashion_dir, fault, command):
    source = _copy_dataset(fashion_dir, fresh_folder.parent / "source")
    damage, expected = BAD_SOURCES[fault]
    damage(source / "t10k-labels-idx1-ubyte.gz")
    started = time.monotonic()
    result = run_fmnist(f"fmnist {command} --source {source}", fresh_folder, timeout=120)
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fmnist {command.split()[0]}: error: ") and expected in lines[0], lines
    assert "t10k-labels-idx1-ubyte" in lines[0]
    assert seconds < 30, f"the error came after {seconds:.0f} s: checked after Prefect started?"
    assert not (fresh_folder / "artifacts" / "datasets").exists()


def test_debug_shows_the_traceback(fresh_folder, fashion_dir):
    source = _copy_dataset(fashion_dir, fresh_folder.parent / "source")
    _truncate(source / "train-labels-idx1-ubyte.gz")
    for command, env in ((f"fmnist prepare --debug --source {source}", {}),
                         (f"fmnist prepare --source {source}", {"FMNIST_DEBUG": "1"})):
        result = run_fmnist(command, fresh_folder, env, timeout=60)
        assert result.returncode == 2 and "Traceback" in result.stderr and "truncated .gz" in result.stderr


def test_predict_and_runs_as_typed(raw_dataset):
    """The README's predict and runs commands, in the fresh folder where `fmnist run` (tests/trained_run.py) left
    ./artifacts with one run whose baseline is the champion, beside a user's own pictures."""
    from PIL import Image

    from tests.trained_run import trained_folder, trained_run_id

    folder, run = trained_folder(), trained_run_id()
    # A shirt photographed on white, 10x the size, in colour (test image 4 is a shirt); a folder of three photos.
    Image.fromarray(255 - raw_dataset.test_images[4]).resize((280, 280)).convert("RGB").save(folder / "shirt.png")
    (folder / "photos").mkdir(exist_ok=True)
    for i in range(3):
        Image.fromarray(raw_dataset.test_images[i]).save(folder / "photos" / f"{i}.png")

    out = ok(run_fmnist("fmnist predict shirt.png", folder, timeout=120))
    (line,) = out.splitlines()
    name, cls, probability = line.split("\t")
    assert name == "shirt.png" and 0 < float(probability) <= 1
    document = json.loads(ok(run_fmnist("fmnist predict photos/ --top 3 --json", folder, timeout=120)))
    assert [p["input"] for p in document["predictions"]] == [f"photos/{i}.png" for i in range(3)]
    assert all(len(p["top"]) == 3 for p in document["predictions"]) and document["model"]["run_id"] == run
    out = ok(run_fmnist("fmnist predict /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", folder, timeout=120))
    recorded = json.loads((folder / "artifacts" / "models" / "champion.json").read_text())["overall"]["test_accuracy"]
    assert out.splitlines()[-1].startswith(f"accuracy: {100 * recorded:.2f}% (") and len(out.splitlines()) == 10_001

    listing = ok(run_fmnist("fmnist runs", folder, timeout=60))
    assert f"| {run} |" in listing and "| finished |" in listing and "% ** |" in listing
    assert "Table 1" in ok(run_fmnist(f"fmnist runs show {run}", folder, timeout=60))
    assert "| baseline |" in ok(run_fmnist(f"fmnist runs compare {run} {run}", folder, timeout=60))

    # Bad input, as a user sees it: one line on stderr (no TensorFlow notices before it), exit 2.
    (folder / "notes.txt").write_text("not a picture")
    for command, expected in (("fmnist predict notes.txt", "notes.txt: not an image"),
                              ("fmnist predict shirt.png --model nosuchrun/baseline", "no run 'nosuchrun'")):
        result = run_fmnist(command, folder, timeout=60)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        (error,) = result.stderr.strip().splitlines()
        assert error.startswith("fmnist predict: error: ") and expected in error
