"""The shape of flows/: the read-only commands never import Prefect, Ray or the flows; the flows import their steps
from flows.steps only; one retry preset; the Prefect internals used are checked by flows.prefect_compat."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ("prepare", "run", "search")


def test_the_read_only_commands_never_import_prefect_ray_or_the_flows(tmp_path):
    """`fmnist runs`, `runs show` and `fmnist champion` on an empty store, in a fresh interpreter: they answer, and
    at the end neither Prefect nor Ray (nor a flow) was imported."""
    script = (
        "import sys\n"
        "from flows.cli import main\n"
        f"store = {str(tmp_path)!r}\n"
        "codes = [main(['runs', '--store', store]), main(['champion', '--store', store]),\n"
        "         main(['runs', 'show', 'nope', '--store', store])]\n"
        "assert codes == [0, 0, 2], codes\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'ray')\n"
        "                or m.startswith(('flows.run', 'flows.search', 'flows.prepare', 'flows.steps',\n"
        "                                 'flows.deploy', 'flows.cli.launch', 'flows.prefect_compat')))\n"
        "assert not loaded, loaded[:10]\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no runs in" in result.stdout and "no champion yet" in result.stdout


def _flow_imports(name: str) -> set[str]:
    tree = ast.parse((ROOT / "flows" / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {module for module in found if module.split(".")[0] == "flows"}


@pytest.mark.parametrize("name", FLOWS)
def test_a_flow_imports_its_steps_and_no_other_flow(name):
    assert _flow_imports(name) == {"flows.steps"}


def test_no_task_in_a_flow_module_and_one_retry_preset_in_steps():
    """Every `@task` is in flows/steps.py; the retry numbers are spelled there once."""
    for name in (*FLOWS, "deploy"):
        assert "@task" not in (ROOT / "flows" / f"{name}.py").read_text(), name
    steps = (ROOT / "flows" / "steps.py").read_text()
    assert steps.count("retries=") == 1 and steps.count("retry_delay_seconds=") == 1


def test_the_steps_keep_their_retries_and_retry_conditions():
    from flows import steps
    from tasks.errors import ChampionFileError, DatasetError, PipelineError, StoreError

    retried = {"fetch": steps.fetch, "shard_and_publish": steps.shard_and_publish,
               "promote_champions": steps.promote_champions, "report": steps.report,
               "report_search": steps.report_search}
    for name, step in retried.items():
        assert (step.retries, step.retry_delay_seconds) == (2, [2, 8]), name
    for step in (steps.preflight, steps.claim, steps.train, steps.search, steps.retrain):
        assert not step.retries, step.name

    class State:
        def __init__(self, error):
            self.data = error

    def retries(step, error) -> bool:
        return step.retry_condition_fn is None or step.retry_condition_fn(step, None, State(error))

    for step in (steps.fetch, steps.shard_and_publish):  # a bad source never gets better
        assert not retries(step, DatasetError("x.gz: truncated")) and retries(step, StoreError("gone"))
    assert retries(steps.promote_champions, StoreError("no answer"))
    assert not retries(steps.promote_champions, ChampionFileError("models/champion.json", "damaged"))
    assert not retries(steps.promote_champions, PipelineError("expected"))
    assert retries(steps.promote_champions, RuntimeError("a bug"))
    assert retries(steps.report, PipelineError("anything")) and retries(steps.report_search, StoreError("x"))


def test_the_prefect_compat_checks_pass_and_a_failure_is_one_line_naming_the_version():
    from importlib import metadata

    from flows import prefect_compat

    prefect_compat._check_console_handler()  # what import ran: passes on the installed Prefect
    message = str(prefect_compat._fail("its console handler is gone"))
    assert "\n" not in message and f"Prefect {metadata.version('prefect')}" in message


def test_a_trials_step_ends_cancelled_only_for_the_runners_cancel(monkeypatch):
    """A cancel from the Prefect UI reaches the driver as a TerminationSignal, wrapped by Ray's `ray.wait` in a
    SystemError. The step returns a Cancelled state for the runner's cancel (so Prefect records the task Cancelled,
    not Crashed) and the flow raises the signal again; any other SIGTERM passes through."""
    import signal

    from prefect.exceptions import TerminationSignal

    from flows import steps

    def interrupted_in_ray_wait():
        try:
            raise TerminationSignal(signal.SIGTERM)
        except TerminationSignal as signal_raised:
            raise SystemError("ray.wait: error return without exception set") from signal_raised

    def a_bug():
        raise SystemError("a bug")

    monkeypatch.setattr(steps, "cancel_intended", lambda: False)
    with pytest.raises(TerminationSignal):
        steps.trials_step(interrupted_in_ray_wait)
    with pytest.raises(SystemError):  # a SystemError of its own is not a signal
        steps.trials_step(a_bug)

    monkeypatch.setattr(steps, "cancel_intended", lambda: True)
    state = steps.trials_step(interrupted_in_ray_wait)
    assert state.is_cancelled() and "checkpoints kept" in state.message
    with pytest.raises(TerminationSignal):
        steps.unless_cancelled(state)
    assert steps.unless_cancelled({"cnn2": {}}) == {"cnn2": {}}
    assert steps.trials_step(lambda: [1, 2]) == [1, 2]


def test_the_runners_cancel_intent_is_read_where_prefects_flow_engine_reads_it():
    from flows import prefect_compat

    prefect_compat._check_control_intent()
    assert prefect_compat.cancel_intended() is False  # no runner has committed a cancel to this process
