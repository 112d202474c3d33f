"""What a person reads in the logs of `fmnist run` / `fmnist search` run as typed (issue 20 §6): none of Tune's own
output (its configuration box, "View detailed results here", a TensorBoard hint, blank lines), a line saying the
trials start as soon as they do, then one line per epoch of every trial, a search's included. The search's Prefect
artifacts (its leaderboard and Table 1) read through Prefect's client: percentages and recipes in words."""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass

import pytest

from tests.cli.test_progress import flow_run_logs
from tests.cli_user import run_fmnist

TUNE_NOISE = ("Configuration for experiment", "View detailed results here", "To visualize your results with "
              "TensorBoard", "tensorboard --logdir", "╭", "╰")
RECORD = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+ +\| (.+?) - (.*)$")


@dataclass(frozen=True)
class Record:
    seconds: float  # of the day
    source: str  # "Task run 'train-8f5'"
    message: str  # its first line


def records(output: str) -> list[Record]:
    """The Prefect log records printed on the console, in order (a record's further lines are not parsed)."""
    found = []
    for line in output.splitlines():
        match = RECORD.match(line)
        if match:
            h, m, s, ms, source, message = match.groups()
            found.append(Record(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000, source, message))
    return found


def assert_no_tune_output(output: str) -> None:
    noise = [line for line in output.splitlines() if any(text in line for text in TUNE_NOISE)]
    assert not noise, noise
    assert "" not in [line.strip() for line in output.splitlines()], "a blank line:\n" + output[-3000:]


def index_of(found: list[Record], pattern: str) -> int:
    return next(i for i, r in enumerate(found) if re.search(pattern, r.message))


@pytest.mark.slow
def test_a_run_logs_its_start_at_once_then_one_line_per_epoch_and_nothing_of_tunes(tmp_path):
    result = run_fmnist("fmnist run --preset quick --architectures baseline,mlp1", tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_tune_output(result.stderr)
    found = records(result.stderr)
    start = index_of(found, r"^2 trials starting on \d+ CPUs? \(1 CPU each, up to \d at a time\)")
    assert found[start].source.startswith("Task run 'train-")
    # Within 5 s of the step before training (publishing the dataset) ending: the train task's first line.
    assert found[start].seconds - found[start - 1].seconds <= 5.0, found[start - 1: start + 1]
    assert start < index_of(found, r": epoch 1/2 ")
    for arch in ("baseline", "mlp1"):
        for epoch in (1, 2):
            lines = [r.message for r in found if r.message.startswith(f"{arch}: epoch {epoch}/2 val_accuracy")]
            assert len(lines) == 1, (arch, epoch, lines)


@pytest.mark.slow
def test_a_search_logs_every_epoch_of_every_trial_and_its_artifacts_read_as_percent_and_words(tmp_path, prefect_api):
    run_id = f"logs-search-{os.getpid()}"
    result = run_fmnist(f"fmnist search --preset quick --architectures baseline --num-samples 4 --seeds 1 "
                        f"--run-id {run_id}", tmp_path, {"PREFECT_API_URL": prefect_api}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_tune_output(result.stderr)
    found = records(result.stderr)
    assert index_of(found, r"^4 trials starting on ") < index_of(found, r"^baseline \w+: epoch 1/")
    leaderboard = json.loads((tmp_path / "artifacts" / "runs" / run_id / "search" / "leaderboard.json").read_text())
    assert len(leaderboard) == 4
    ui_logs = flow_run_logs(run_id)  # what the Prefect UI shows
    assert not [m for m in ui_logs if not m.strip() or any(text in m for text in TUNE_NOISE)]
    for row in leaderboard:  # every trial, stopped early by ASHA or not: one line per epoch it trained
        for epoch in range(1, row["epochs"] + 1):
            prefix = f"baseline {row['trial_id']}: epoch {epoch}/"
            assert len([r for r in found if r.message.startswith(prefix)]) == 1, (prefix, result.stderr[-3000:])
            assert len([m for m in ui_logs if m.startswith(prefix)]) == 1, prefix

    artifacts = search_artifacts(run_id)
    board = json.loads(artifacts["fmnist-search-leaderboard-quick"].data)
    assert list(board[0])[:3] == ["Architecture", "Final validation accuracy (%)", "Best validation accuracy (%)"]
    best = max(leaderboard, key=lambda row: row["val_accuracy"])
    assert board[0]["Final validation accuracy (%)"] == f"{100 * best['val_accuracy']:.2f}"  # best first, in %
    assert all(re.fullmatch(r"\d{1,3}\.\d\d", row["Final validation accuracy (%)"]) for row in board)
    assert all(re.fullmatch(r"Adam(W wd \d\.\de-\d+)?, lr \d\.\de-\d+ (constant|cosine|one-cycle), batch \d+, "
                            r"(smoothing 0\.\d\d|no smoothing), (no augmentation|shifts|shifts and flips)"
                            r"(, dropout 0\.\d\d)?, \d+ epochs", row["Recipe"]) for row in board), board
    table = json.loads(artifacts["fmnist-search-table1-quick"].data)
    assert list(table[0])[:2] == ["Model", "Test accuracy (%, mean ± std over seeds)"]
    assert re.fullmatch(r"\d{1,3}\.\d\d ± 0\.00", table[0]["Test accuracy (%, mean ± std over seeds)"])
    assert table[0]["Report's test accuracy (%)"] == "84.60" and table[0]["Parameters"] == "7,850"


def search_artifacts(run_id: str) -> dict:
    """The artifacts of the search flow run of `run_id`, by key (the session's server holds other tests' too)."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    async def read() -> dict:
        async with get_client() as client:
            summaries = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fmnist-search-summary-quick"])))
            (summary,) = [a for a in summaries if f"Search {run_id}:" in a.data]
            found = await client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[summary.flow_run_id])))
        return {a.key: a for a in found}

    return asyncio.run(read())
