"""`fmnist runs` on folders written here (metadata only): an empty or missing store, many runs, a damaged metadata
file; and the standard error of a difference. From one real trained run, on a folder and on S3:
tests/integration/test_runs_command.py."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from tasks.runs.runlist import Difference, ModelResult


def runs(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["runs", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_standard_error_of_a_difference():
    a, b = ModelResult("x", 0.90, 10_000, 1, None), ModelResult("x", 0.91, 10_000, 1, None)
    difference = Difference("x", a, b)
    assert difference.standard_error == pytest.approx(((0.9 * 0.1 + 0.91 * 0.09) / 10_000) ** 0.5)
    assert difference.standard_error == pytest.approx(0.00414, abs=1e-5) and difference.beyond_noise is True
    assert Difference("x", a, ModelResult("x", 0.905, 10_000, 1, None)).beyond_noise is False


def test_a_missing_store_folder_is_an_error_and_an_empty_one_says_so(capsys, tmp_path):
    code, _, err = runs(capsys, "--store", str(tmp_path / "nothing"))
    assert code == 2 and "no such folder" in err and not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    code, out, _ = runs(capsys, "--store", str(tmp_path / "empty"))
    assert code == 0 and out.startswith("no runs in")


def test_many_runs_are_sorted_by_their_start_and_limited(capsys, tmp_path):
    from tasks.data.store import open_store

    store = open_store(str(tmp_path / "artifacts"))
    for day in range(1, 26):
        run_id = f"202611{day:02d}-120000-{day:06x}"
        store.put_bytes(f"runs/{run_id}/config.json", json.dumps({"preset": "full", "architectures": []}).encode())
    code, out, _ = runs(capsys, "--store", str(tmp_path / "artifacts"))
    rows = [line for line in out.splitlines() if line.startswith("| 2026")]
    assert code == 0 and len(rows) == 20 and rows[0].startswith("| 20261125-") and rows[-1].startswith("| 20261106-")
    assert "5 older runs not shown: --limit 25 shows all" in out


def test_a_damaged_metadata_file_is_a_note_and_the_listing_still_prints(capsys, tmp_path):
    from tasks.data.store import open_store

    store = open_store(str(tmp_path / "artifacts"))
    store.put_bytes("runs/20261101-000000-aaaaaa/config.json", b'{"preset": "full", "architectures": ["baseline"]}')
    store.put_bytes("runs/20261101-000000-aaaaaa/baseline/metrics.json", b"{cut sh")
    store.put_bytes("runs/20261102-000000-bbbbbb/config.json", b"<html>")
    code, out, _ = runs(capsys, "--store", str(tmp_path / "artifacts"))
    assert code == 0 and "(2 of 2)" in out
    assert "20261101-000000-aaaaaa: " in out and "baseline/metrics.json: not JSON" in out
    assert "20261102-000000-bbbbbb: " in out and "config.json: not JSON" in out
