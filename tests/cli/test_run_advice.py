"""Advice and look-ups as a user types them (issue 21 X10): `fmnist run --resume ID` for a run that is not there is
one line saying so, and leaves no empty ./artifacts behind. The advice lines themselves: tests/unit/test_run_advice.py."""

from __future__ import annotations

from tests.cli_user import fresh_folder, run_fmnist


def test_resuming_a_run_that_is_not_there_creates_nothing():
    folder = fresh_folder()
    result = run_fmnist("fmnist run --resume f9", folder, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr[-2000:]
    assert last.startswith(f"fmnist run: error: --resume f9: no such run: store {folder / 'artifacts'}: no such folder")
    assert "give --store" in last and "Traceback" not in result.stderr
    assert list(folder.iterdir()) == []
