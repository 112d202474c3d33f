"""Two `fmnist run --run-id X` at once, as a user starts them: one runs, the other is refused in one line."""

from __future__ import annotations

import json

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
