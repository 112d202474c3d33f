"""The README's commands: every command line of its bash blocks has a test that runs it as typed
(tests/cli/test_readme_commands.py and the modules COVERAGE names) or a stated reason it cannot run here; and the
terminal's handling of an expected error's traceback, which those commands rely on.

`test_every_readme_command_is_covered` keeps the rule: a command added to the README without a test (or a stated
reason it cannot run on this machine) fails the suite.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Every command line of the README's bash blocks → the test that runs it, or why it cannot run here. A test named
# without a path is in tests/cli/test_readme_commands.py; other paths are under tests/.
COVERAGE: dict[str, str] = {
    "bash .ci/setup && .venv/bin/fmnist run": "test_first_command_as_typed (the set-up is what CI's .ci/run runs; the "
                                               "run part runs as typed, quick: the full protocol takes 15 min and is "
                                               "benchmarks/full_run.py)",
    "bash .ci/setup && .venv/bin/python -m pytest -q": "CI: .ci/run is exactly this",
    ".venv/bin/python -m pytest -q tests/unit": "the unit tier, while working: this test is in it",
    "fmnist prepare": "test_prepare_as_typed",
    "fmnist run --preset quick": "test_quick_run_as_typed",
    "fmnist run [--preset full|quick]": "synopsis: test_quick_run_as_typed, test_first_command_as_typed",
    "fmnist run --resume RUN_ID": "cli/test_reliability.py::test_a_killed_run_resumes_without_redoing_finished_work "
                                  "(`fmnist run --resume ID` alone, from the run's folder)",
    "fmnist deploy": "test_deploy_as_typed",
    ".venv/bin/fmnist deploy": "test_deploy_as_typed",
    "fmnist deploy --pool NAME": "synopsis: cli/test_pool_deployment.py::test_fmnist_deploy_pool_then_a_worker_runs_it_as_typed",
    ".venv/bin/fmnist deploy --pool": "cli/test_pool_deployment.py::test_fmnist_deploy_pool_then_a_worker_runs_it_as_typed",
    ".venv/bin/prefect worker start --pool": "cli/test_pool_deployment.py::test_fmnist_deploy_pool_then_a_worker_runs_it_as_typed "
                                             "(then the worker runs a run triggered on the deployment, from another folder)",
    "fmnist champion": "test_quick_run_as_typed (then `fmnist champion` in the same folder)",
    "fmnist search [--preset full|quick]": "synopsis: test_search_as_typed",
    "fmnist search --resume RUN_ID": "cli/test_search_resume.py::test_a_search_killed_mid_way_finishes_with_resume_"
                                     "redoing_nothing (`fmnist search --resume ID` alone, from the search's folder)",
    "fmnist run --recipe best": "synopsis: test_search_as_typed (`--preset quick --recipe best`, after the search)",
    "fmnist search --preset quick --architectures baseline,mlp1": "test_search_as_typed",
    "fmnist run --preset quick --recipe best --architectures baseline,mlp1": "test_search_as_typed",
    ".venv/bin/fmnist deploy --flow search --pool fmnist": "not here as typed (an 8-hour budget on a pool's worker); "
                                                           "the same deployment from the UI form: integration/test_search.py::"
                                                           "test_the_search_runs_from_the_prefect_ui_form; --pool: "
                                                           "integration/test_pool_deployment.py",
    "fmnist search --time-budget 8h": "not here: the five on all rows take hours on 2 CPUs; --time-budget is tested "
                                      "in integration/test_search.py::test_the_time_budget_ends_the_search_cleanly_with_what_it_has",
    "fmnist run --help": "test_help_as_typed",
    "AWS_ACCESS_KEY_ID=": "integration/test_run_flow.py::quick_run (the same options against SeaweedFS, keys from the environment)",
    "fmnist run --ray-address auto": "not here: needs a running Ray cluster with GPUs; placement of 0.2-GPU trials "
                                     "is tested on logical GPUs in integration/test_cluster.py",
    "fmnist run --ray-address ray://": "not here: needs cluster.yaml's cluster on AWS",
    "PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/prefect server start": "Prefect's own command; the tests use "
                                                                             "a real server (prefect_test_harness)",
    "export PREFECT_API_URL=": "a shell assignment",
    "ray up cluster.yaml": "not here: AWS; unit/test_cluster_yaml.py runs the checks `ray up` runs on cluster.yaml",
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
    "fmnist runs": "test_predict_and_runs_as_typed (integration/test_runs_command.py: both backends, unfinished runs)",
    "fmnist runs show RUN_ID": "test_predict_and_runs_as_typed (with the trained run's id)",
    "fmnist runs compare RUN_A RUN_B": "test_predict_and_runs_as_typed (the trained run with itself; differences "
                                       "between runs: integration/test_runs_command.py)",
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


def test_only_the_terminal_loses_an_expected_errors_traceback():
    """The terminal's Prefect handler prints an expected error without its traceback; any other handler of the same
    record (the Prefect UI's API handler) still gets it whole."""
    import io
    import logging

    import prefect.main  # noqa: F401  (Prefect's logging set-up, which disables loggers made before it)
    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.prefect_compat import quiet_expected_tracebacks
    from tasks.errors import DatasetError, PipelineError

    terminal, other = io.StringIO(), []
    console = PrefectConsoleHandler(stream=terminal)

    class Keep(logging.Handler):
        def emit(self, record):
            other.append(logging.Formatter().format(record))

    logger = logging.getLogger("prefect.test-quiet-tracebacks")
    logger.addHandler(console)
    logger.addHandler(Keep())
    try:
        quiet_expected_tracebacks((PipelineError, KeyboardInterrupt))
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
