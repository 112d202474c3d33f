"""A search killed part-way, finished by `fmnist search --resume ID` as a user types it (issue 18 §3).

The real fault: SIGKILL of the search's whole process group (the flow, its local Ray and trials, Prefect's temporary
server) while the second architecture's trials run, the first one searched. The resume must redo nothing finished:
the first architecture is not searched again, the second's finished trials are kept as they were, and it ends with
exactly the samples asked for.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tasks.data.store import open_store
from tests.cli_user import finish, live_processes, start_fmnist, stop_group
from tests.trial_processes import wait_for

pytestmark = pytest.mark.slow

RUN_ID = "killed-search"
SAMPLES = 4


def fmnist(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return start_fmnist(["fmnist", *args], cwd, env, merge_stderr=True)


def saved_trials(experiment: Path) -> dict[str, str]:
    """{trial id: status} as Tune's newest saved experiment state has them ({} before the first save)."""
    states = sorted(experiment.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        saved = json.loads(states[-1].read_text())
    except (ValueError, FileNotFoundError):  # being replaced while we read
        return {}
    trials = [json.loads(state) for state, _ in saved.get("trial_data", [])]
    return {trial["trial_id"]: trial["status"] for trial in trials}


def one_finished_and_one_checkpointed(experiment: Path) -> bool:
    """The experiment's saved state holds a finished trial and a running one that has a checkpoint."""
    trials = saved_trials(experiment)
    running = [tid for tid, status in trials.items() if status == "RUNNING"]
    checkpointed = any(next(experiment.glob(f"{tid}_*/checkpoint_*"), None) for tid in running)
    return "TERMINATED" in trials.values() and checkpointed


def results_of(experiment: Path, trial_ids: list[str]) -> dict[str, bytes]:
    """Each trial's result.json (every epoch it reported), as Tune wrote it."""
    return {tid: next(experiment.glob(f"{tid}_*/result.json")).read_bytes() for tid in trial_ids}


def test_a_search_killed_mid_way_finishes_with_resume_redoing_nothing(tmp_path, prefect_api, fashion_dir):
    env = {"PREFECT_API_URL": prefect_api, "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    folder = tmp_path / "artifacts"
    search = folder / "runs" / RUN_ID / "search"
    # One trial at a time, 4 epochs each (ASHA's rungs at epochs 1 and 3): a kill finds mlp1 part-way.
    first = fmnist("search", "--preset", "quick", "--run-id", RUN_ID, "--architectures", "baseline,mlp1",
                   "--num-samples", str(SAMPLES), "--max-epochs", "4", "--max-concurrent", "1", "--seeds", "1",
                   env=env, cwd=tmp_path)
    try:
        wait_for(lambda: (search / "baseline.rows.json").exists() and one_finished_and_one_checkpointed(search / "mlp1"),
                 420, "baseline searched, and an mlp1 trial finished and another checkpointed in Tune's saved state")
        finished_before = [tid for tid, status in saved_trials(search / "mlp1").items() if status == "TERMINATED"]
        kept_results = results_of(search / "mlp1", finished_before)
    finally:
        stop_group(first)  # SIGKILL: the flow process, its local Ray and its trials, Prefect's temporary server
        first.wait(timeout=30)
    baseline_rows = (search / "baseline.rows.json").read_bytes()
    baseline_state = sorted(p.name for p in (search / "baseline").glob("experiment_state-*.json"))
    assert not (folder / "runs" / RUN_ID / "run.json").exists()
    wait_for(lambda: not live_processes(first.pid), 30, "the killed search's processes (its local Ray) to be gone")

    second = fmnist("search", "--resume", RUN_ID, env=env, cwd=tmp_path)
    output = finish(second, 600).stdout
    assert second.returncode == 0, output[-3000:]
    assert "search baseline: searched already by this search" in output
    assert f"resuming search {RUN_ID}" in output and "search mlp1" in output

    assert (search / "baseline.rows.json").read_bytes() == baseline_rows  # not searched again
    assert sorted(p.name for p in (search / "baseline").glob("experiment_state-*.json")) == baseline_state
    assert results_of(search / "mlp1", finished_before) == kept_results  # finished trials not trained again
    leaderboard = json.loads((search / "leaderboard.json").read_text())
    mlp1 = [row for row in leaderboard if row["architecture"] == "mlp1"]
    assert len(mlp1) == SAMPLES and set(finished_before) <= {row["trial_id"] for row in mlp1}
    assert len([row for row in leaderboard if row["architecture"] == "baseline"]) == SAMPLES
    store = open_store(str(folder))
    assert store.exists(f"runs/{RUN_ID}/run.json") and store.exists(f"runs/{RUN_ID}/mlp1/metrics.json")
    summary = json.loads(store.get_bytes(f"runs/{RUN_ID}/summary.json"))
    assert summary["trials"] == 2 * SAMPLES
