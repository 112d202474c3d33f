"""A bad option or environment variable, as a user types it: one line, exit 2, before anything is claimed or Prefect
starts."""

from __future__ import annotations

import pytest

from tests.cli_user import run_fmnist


def _one_error_line(result, command: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout == "" and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"fmnist {command}: error: "), line
    return line


def test_a_batch_no_recipe_can_train_with_is_one_line_before_anything_is_claimed(tmp_path):
    """Before: the config took 1-65,536 and a recipe 8-8,192, so the run was claimed and every trial failed with a
    raw ValidationError."""
    result = run_fmnist("fmnist run --batch-size 4", tmp_path, timeout=120)
    line = _one_error_line(result, "run")
    assert "config field 'batch_size'" in line and "greater than or equal to 8" in line and "(found '4')" in line
    assert result.seconds < 30, f"the error came after {result.seconds:.0f} s: after Prefect started?"
    assert not (tmp_path / "artifacts" / "runs").exists()


@pytest.mark.parametrize("name, value, expected", [
    ("FMNIST_RAY_CONNECT_TIMEOUT_S", "soon", "expected a number of seconds above 0, found 'soon'"),
    ("FMNIST_PROGRESS", "fancy", "expected one of 'auto', 'plain', found 'fancy'"),
])
def test_a_bad_environment_variable_is_one_line_naming_it(tmp_path, name, value, expected):
    result = run_fmnist("fmnist run --preset quick --architectures baseline", tmp_path, env={name: value}, timeout=120)
    line = _one_error_line(result, "run")
    assert line.endswith(f"environment variable {name}: {expected}"), line
    assert not (tmp_path / "artifacts" / "runs").exists()
