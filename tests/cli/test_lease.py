"""Two `fmnist run --run-id X` at once, as a user starts them: one runs, the other is refused in one line."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.cli_user import finish, start_fmnist, stop_group


@pytest.mark.slow
def test_two_runs_given_the_same_run_id_at_once_one_is_refused_in_one_line(tmp_path, prefect_api):
    env = {"PREFECT_API_URL": prefect_api}
    command = ["fmnist", "run", "--preset", "quick", "--architectures", "baseline", "--run-id", "same-night"]
    processes = [start_fmnist(command, tmp_path, env) for _ in range(2)]
    try:
        outputs = [(result.stdout, result.stderr) for result in (finish(p, 600) for p in processes)]
    finally:
        for p in processes:
            if p.poll() is None:
                stop_group(p)
    codes = sorted(p.returncode for p in processes)
    assert codes == [0, 2], [o[1][-2000:] for o in outputs]
    refused = next(err for p, (_, err) in zip(processes, outputs) if p.returncode == 2)
    errors = [line for line in refused.splitlines() if line.startswith("fmnist run: error: ")]
    assert len(errors) == 1 and "run same-night is in progress" in errors[0] and "Traceback" not in refused
    run = tmp_path / "artifacts" / "runs" / "same-night"
    assert (run / "run.json").is_file() and not (run / "lease.json").exists()
    assert json.loads((run / "baseline" / "metrics.json").read_text())["resumed_from_epoch"] == 0


def _files(run: Path) -> dict[str, int]:
    """Every file under a run's folder (lease and the store's temporary and lock files aside), with its mtime in ns."""
    return {str(path.relative_to(run)): path.stat().st_mtime_ns for path in run.rglob("*")
            if path.is_file() and path.name != "lease.json" and ".tmp-" not in path.name
            and not path.name.endswith(".lock")}


@pytest.mark.slow
def test_a_run_whose_lease_is_taken_mid_training_stops_writes_nothing_more_and_says_who_took_it(tmp_path,
                                                                                             prefect_api):
    """Issue 17 §3's fencing, as a user sees it: while `fmnist run` trains (after its first checkpoint), another
    process takes the run's lease (here written straight into lease.json, as a claimant that judged the holder gone
    would write it). Within a renewal interval the run stops its trial, publishes no model, metrics, summary or
    run.json, and its last line says who took it over, exit 2."""
    ttl_s = 4.0  # renewed every second
    env = {"PREFECT_API_URL": prefect_api, "FMNIST_LEASE_TTL_S": str(ttl_s)}
    command = ["fmnist", "run", "--preset", "quick", "--architectures", "baseline", "--run-id", "stolen",
               "--max-epochs", "60", "--patience", "60"]
    process = start_fmnist(command, tmp_path, env)
    run = tmp_path / "artifacts" / "runs" / "stolen"
    try:
        deadline = time.monotonic() + 300
        while not any(path.name.startswith("checkpoint_") for path in (run / "tune").rglob("*")):
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.1)
        (run / "lease.json").write_text(json.dumps({"host": "thief-host", "pid": 4242, "id": "thief",
                                                    "renewed_at": time.time()}))
        stolen_at = time.monotonic()
        before = _files(run)
        result = finish(process, 300)
    finally:
        if process.poll() is None:
            stop_group(process)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr[-3000:]
    assert re.fullmatch(r"fmnist run: error: run stolen was taken over by pid 4242 on thief-host at "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; nothing more was written by this process", last), last
    after = _files(run)
    written = sorted(key for key, mtime in after.items() if before.get(key) != mtime)
    # Nothing the run publishes, and no checkpoint. Tune's own bookkeeping under tune/ (experiment state, the
    # trial's result and error files) is still saved by Tune's loop as it stops: not yet fenced (issue 17 §3 asks
    # for it; it needs Tune's storage filesystem wrapped), and listed here so that a change shows.
    tune_bookkeeping = re.compile(r"tune/([^/]+[-_]state-[^/]+\.json|[^/]+/(error\.(pkl|txt)|events\.out\.tfevents\.[^/]+"
                                  r"|params\.(json|pkl)|progress\.csv|result\.json))")
    assert [key for key in written if not tune_bookkeeping.fullmatch(key)] == [], f"written after the theft: {written}"
    assert not any("checkpoint_" in key for key in written)
    assert not (run / "baseline").exists() and not (run / "run.json").exists() and not (run / "summary.md").exists()
    assert json.loads((run / "lease.json").read_text())["id"] == "thief"  # the taker's lease is left alone
    print(f"stopped {result.seconds - (stolen_at - process.started):.1f} s after the theft")
