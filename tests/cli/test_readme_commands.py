"""The README's commands, run as a user types them: from a fresh empty folder, with the defaults the README relies on
(no --store, no PREFECT_API_URL: the temporary Prefect server), in a subprocess, reading only what a user sees.

`test_every_readme_command_is_covered` keeps the rule: a command added to the README without a test here (or a
stated reason it cannot run on this machine) fails the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Every command line of the README's bash blocks → the test that runs it, or why it cannot run here.
COVERAGE: dict[str, str] = {
    "bash .ci/setup && .venv/bin/fmnist run": "test_first_command_as_typed (the set-up is what CI's .ci/run runs; the "
                                               "run part runs as typed, quick: the full protocol takes 15 min and is "
                                               "benchmarks/full_run.py)",
    "bash .ci/setup && .venv/bin/python -m pytest -q": "CI: .ci/run is exactly this",
    "fmnist prepare": "test_prepare_as_typed",
    "fmnist run --preset quick": "test_quick_run_as_typed",
    "fmnist run [--preset full|quick]": "synopsis: test_quick_run_as_typed, test_first_command_as_typed",
    "fmnist run --resume RUN_ID": "test_reliability.py::test_a_killed_run_resumes_without_redoing_finished_work "
                                  "(`fmnist run --resume ID` alone, from the run's folder)",
    "fmnist deploy": "test_deploy_as_typed",
    ".venv/bin/fmnist deploy": "test_deploy_as_typed",
    "fmnist deploy --pool NAME": "synopsis: test_pool_deployment.py::test_fmnist_deploy_pool_then_a_worker_runs_it_as_typed",
    ".venv/bin/fmnist deploy --pool": "test_pool_deployment.py::test_fmnist_deploy_pool_then_a_worker_runs_it_as_typed",
    ".venv/bin/prefect worker start --pool": "test_pool_deployment.py::test_fmnist_deploy_pool_then_a_worker_runs_it_as_typed "
                                             "(then the worker runs a run triggered on the deployment, from another folder)",
    "fmnist champion": "test_quick_run_as_typed (then `fmnist champion` in the same folder)",
    "fmnist search [--preset full|quick]": "synopsis: test_search_as_typed",
    "fmnist run --recipe best": "synopsis: test_search_as_typed (`--preset quick --recipe best`, after the search)",
    "fmnist search --preset quick --architectures baseline,mlp1": "test_search_as_typed",
    "fmnist run --preset quick --recipe best --architectures baseline,mlp1": "test_search_as_typed",
    ".venv/bin/fmnist deploy --flow search --pool fmnist": "not here as typed (an 8-hour budget on a pool's worker); "
                                                           "the same deployment from the UI form: test_search.py::"
                                                           "test_the_search_runs_from_the_prefect_ui_form; --pool: "
                                                           "test_pool_deployment.py",
    "fmnist search --time-budget 8h": "not here: the five on all rows take hours on 2 CPUs; --time-budget is tested "
                                      "in test_search.py::test_the_time_budget_ends_the_search_cleanly_with_what_it_has",
    "fmnist run --help": "test_help_as_typed",
    "AWS_ACCESS_KEY_ID=": "test_run_flow.py::quick_run (the same options against SeaweedFS, keys from the environment)",
    "fmnist run --ray-address auto": "not here: needs a running Ray cluster with GPUs; placement of 0.2-GPU trials "
                                     "is tested on logical GPUs in test_cluster.py",
    "fmnist run --ray-address ray://": "not here: needs cluster.yaml's cluster on AWS",
    "PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/prefect server start": "Prefect's own command; the tests use "
                                                                             "a real server (prefect_test_harness)",
    "export PREFECT_API_URL=": "a shell assignment",
    "ray up cluster.yaml": "not here: AWS; test_cluster.py runs the checks `ray up` runs on cluster.yaml",
    "ray dashboard cluster.yaml": "not here: AWS",
    "ray down cluster.yaml": "not here: AWS",
    "ray dashboard cluster.yaml &": "not here: AWS",
    "RAY_ADDRESS=http://127.0.0.1:8265 ray job submit": "not here: AWS",
    "ray attach cluster.yaml": "not here: AWS",
    "pip install": "pip's own command",
    "fmnist predict IMAGE…": "synopsis: test_predict_and_runs_as_typed",
    "fmnist predict shirt.png": "test_predict_and_runs_as_typed (in the folder where `fmnist run` left ./artifacts)",
    "fmnist predict photos/ --top 3 --json": "test_predict_and_runs_as_typed",
    "fmnist predict /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz": "test_predict_and_runs_as_typed",
    "fmnist runs [--store URI] [--limit N]": "synopsis: test_predict_and_runs_as_typed",
    "fmnist runs": "test_predict_and_runs_as_typed (test_runs_command.py: both backends, unfinished runs)",
    "fmnist runs show RUN_ID": "test_predict_and_runs_as_typed (with the trained run's id)",
    "fmnist runs compare RUN_A RUN_B": "test_predict_and_runs_as_typed (the trained run with itself; differences "
                                       "between runs: test_runs_command.py)",
}


def readme_commands() -> list[str]:
    """The command lines of the README's ```bash blocks: comments dropped, continuation lines joined."""
    commands, in_bash, pending = [], False, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash" and not in_bash
            continue
        if not in_bash:
            continue
        text = re.sub(r"\s+#.*$", "", line).strip() if not line.strip().startswith("#") else ""
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text = (pending + text).strip()
        pending = ""
        if text:
            commands.append(re.sub(r"\s+", " ", text))
    return commands


def test_every_readme_command_is_covered():
    commands = readme_commands()
    assert "fmnist run --preset quick" in commands and len(commands) > 10
    uncovered = [c for c in commands if not any(c.startswith(prefix) for prefix in COVERAGE)]
    assert not uncovered, f"README commands with no test here (add one, or the reason it cannot run): {uncovered}"


def user_env(**extra: str) -> dict[str, str]:
    """A user's shell: the venv's commands on PATH, no Prefect server configured, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def as_typed(command: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, shell=True, cwd=cwd, env=env or user_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`{command}` did not finish within {timeout:.0f} s; output so far:\n"
                             f"{(exc.stdout or b'')[-3000:]!r}\n{(exc.stderr or b'')[-3000:]!r}") from None


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"`{result.args}` exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def fresh_folder(tmp_path) -> Path:
    folder = tmp_path / "user"
    folder.mkdir()
    return folder


def test_prepare_as_typed(fresh_folder):
    out = ok(as_typed("fmnist prepare", fresh_folder))
    manifests = list((fresh_folder / "artifacts" / "datasets" / "fashion-mnist").glob("*/manifest.json"))
    assert len(manifests) == 1 and f"MB in {fresh_folder / 'artifacts'}" in out


@pytest.mark.slow
def test_quick_run_as_typed(fresh_folder):
    out = ok(as_typed("fmnist run --preset quick", fresh_folder))
    runs = [p for p in (fresh_folder / "artifacts" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    run = runs[0]
    for arch in ("baseline", "mlp1", "mlp3_dropout", "cnn1_mlp", "cnn2"):
        assert (run / arch / "metrics.json").is_file() and (run / arch / "model.keras").is_file(), arch
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["store"] == str(fresh_folder / "artifacts")  # resolved once, absolute
    assert record["config"]["max_epochs"] == 2 and record["config"]["train_rows"] == 3000
    assert f"artifacts: {run}/" in out

    champions = ok(as_typed("fmnist champion", fresh_folder, timeout=60))
    assert champions.startswith(f"no champion yet in {fresh_folder / 'artifacts'}")


@pytest.mark.slow
def test_search_as_typed(fresh_folder):
    """The README's quick search, then the run with the recipes it stored, in the same fresh folder."""
    out = ok(as_typed("fmnist search --preset quick --architectures baseline,mlp1", fresh_folder, timeout=900))
    runs = [p for p in (fresh_folder / "artifacts" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and f"artifacts: {runs[0]}/" in out
    rows = json.loads((runs[0] / "search" / "leaderboard.json").read_text())
    assert len(rows) == 12  # the quick preset's 6 recipes for each of the two
    assert "Table 1, the winning recipes beside the report" in out and " ± " in out
    for arch in ("baseline", "mlp1"):
        assert json.loads((fresh_folder / "artifacts" / "recipes" / "quick" / f"{arch}.json").read_text())["run_id"] == runs[0].name

    ok(as_typed("fmnist run --preset quick --recipe best --architectures baseline,mlp1", fresh_folder))
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
    ok(as_typed(".venv/bin/fmnist run --preset quick --architectures baseline", fresh_folder))
    assert list((fresh_folder / "artifacts" / "runs").glob("*/baseline/metrics.json"))


def test_help_as_typed(fresh_folder):
    from tasks.config import PipelineConfig

    from flows.cli import NOT_OPTIONS

    out = ok(as_typed("fmnist run --help", fresh_folder, timeout=60))
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
    env = user_env(PREFECT_API_URL=prefect_api, AWS_ENDPOINT_URL=s3_server.endpoint)
    process = subprocess.Popen(command, shell=True, cwd=fresh_folder, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)

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
        os.killpg(process.pid, signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
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
    result = as_typed(f"fmnist {command} --source {source}", fresh_folder, timeout=120)
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
    for command, env in ((f"fmnist prepare --debug --source {source}", user_env()),
                         (f"fmnist prepare --source {source}", user_env(FMNIST_DEBUG="1"))):
        result = as_typed(command, fresh_folder, timeout=60, env=env)
        assert result.returncode == 2 and "Traceback" in result.stderr and "truncated .gz" in result.stderr


def test_only_the_terminal_loses_an_expected_errors_traceback():
    """The terminal's Prefect handler prints an expected error without its traceback; any other handler of the same
    record (the Prefect UI's API handler) still gets it whole."""
    import io
    import logging

    import prefect.main  # noqa: F401  (Prefect's logging set-up, which disables loggers made before it)
    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.cli import _quiet_expected_tracebacks
    from tasks.errors import DatasetError

    terminal, other = io.StringIO(), []
    console = PrefectConsoleHandler(stream=terminal)

    class Keep(logging.Handler):
        def emit(self, record):
            other.append(logging.Formatter().format(record))

    logger = logging.getLogger("prefect.test-quiet-tracebacks")
    logger.addHandler(console)
    logger.addHandler(Keep())
    try:
        _quiet_expected_tracebacks()
        for error in (DatasetError("x.gz: truncated"), RuntimeError("a bug")):
            try:
                raise error
            except Exception:
                logger.error("failed", exc_info=True)
    finally:
        logger.handlers.clear()
    printed = terminal.getvalue()
    assert printed.count("Traceback") == 1 and "RuntimeError: a bug" in printed  # a bug keeps its traceback
    assert all("Traceback" in text for text in other)


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

    out = ok(as_typed("fmnist predict shirt.png", folder, timeout=120))
    (line,) = out.splitlines()
    name, cls, probability = line.split("\t")
    assert name == "shirt.png" and 0 < float(probability) <= 1
    document = json.loads(ok(as_typed("fmnist predict photos/ --top 3 --json", folder, timeout=120)))
    assert [p["input"] for p in document["predictions"]] == [f"photos/{i}.png" for i in range(3)]
    assert all(len(p["top"]) == 3 for p in document["predictions"]) and document["model"]["run_id"] == run
    out = ok(as_typed("fmnist predict /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", folder, timeout=120))
    recorded = json.loads((folder / "artifacts" / "models" / "champion.json").read_text())["overall"]["test_accuracy"]
    assert out.splitlines()[-1].startswith(f"accuracy: {100 * recorded:.2f}% (") and len(out.splitlines()) == 10_001

    listing = ok(as_typed("fmnist runs", folder, timeout=60))
    assert f"| {run} |" in listing and "| finished |" in listing and "% ** |" in listing
    assert "Table 1" in ok(as_typed(f"fmnist runs show {run}", folder, timeout=60))
    assert "| baseline |" in ok(as_typed(f"fmnist runs compare {run} {run}", folder, timeout=60))

    # Bad input, as a user sees it: one line on stderr (no TensorFlow notices before it), exit 2.
    (folder / "notes.txt").write_text("not a picture")
    for command, expected in (("fmnist predict notes.txt", "notes.txt: not an image"),
                              ("fmnist predict shirt.png --model nosuchrun/baseline", "no run 'nosuchrun'")):
        result = as_typed(command, folder, timeout=60)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        (error,) = result.stderr.strip().splitlines()
        assert error.startswith("fmnist predict: error: ") and expected in error
