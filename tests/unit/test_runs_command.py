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


# --- compare: paired on the same test rows (issue 17, section 1), unpaired otherwise, a damaged file named (21 X11) ---

def _metrics(arch: str, correct, rows_sha: str | None = "c" * 64) -> bytes:
    """A metrics.json as a run writes it: accuracy from the mask, the mask beside it (none: an old run's)."""
    import numpy as np

    from tasks.runs.paired import outcomes_record

    mask = np.asarray(correct, bool)
    record = {"architecture": arch, "test_accuracy": float(mask.mean()), "rows": {"test": int(mask.size)},
              "epochs": 3, "dataset_version": "v1"}
    if rows_sha:
        record["test_outcomes"] = outcomes_record(mask, rows_sha)
    return json.dumps(record).encode()


def _two_runs(tmp_path, models_a: dict[str, bytes], models_b: dict[str, bytes]) -> str:
    from tasks.data.store import open_store

    store = open_store(str(tmp_path / "artifacts"))
    for run_id, models in (("20261101-000000-aaaaaa", models_a), ("20261102-000000-bbbbbb", models_b)):
        config = {"preset": "full", "architectures": ["baseline", "mlp1", "cnn2"]}
        store.put_bytes(f"runs/{run_id}/config.json", json.dumps(config).encode())
        for arch, data in models.items():
            store.put_bytes(f"runs/{run_id}/{arch}/metrics.json", data)
        store.put_bytes(f"runs/{run_id}/run.json", b"{}")
    return str(tmp_path / "artifacts")


def _line(out: str, arch: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"| {arch} |"))


def test_compare_pairs_models_tested_on_the_same_rows(capsys, tmp_path):
    """baseline: B gains 60 rows and loses 20 (b = 20, c = 60: +0.40 points, two-sided p = 2 sum_{i>=60} C(80, i) / 2^80 = 8.58e-6); mlp1: 30 each
    way (a tie, p = 1). 10,000 rows at 80%: the independent SE would be 0.57 points and call +0.40 noise."""
    import numpy as np

    base = np.zeros(10_000, bool)
    base[:8_000] = True
    gained, tied = base.copy(), base.copy()
    gained[:20], gained[8_000:8_060] = False, True
    tied[:30], tied[8_000:8_030] = False, True
    store = _two_runs(tmp_path, {"baseline": _metrics("baseline", base), "mlp1": _metrics("mlp1", base)},
                      {"baseline": _metrics("baseline", gained), "mlp1": _metrics("mlp1", tied)})
    code, out, err = runs(capsys, "compare", "20261101-000000-aaaaaa", "20261102-000000-bbbbbb", "--store", store)
    assert code == 0, err
    assert "| b (only A right) | c (only B right) | McNemar p | beyond noise? (p < 0.05) |" in out
    assert _line(out, "baseline").startswith("| baseline | 80.00% | 80.40% | +0.40 | 0.09 | 20 | 60 | 8.58e-06 | yes (paired) |")
    assert _line(out, "mlp1") == "| mlp1 | 80.00% | 80.00% | +0.00 | 0.08 | 30 | 30 | 1 | no (paired) |"
    assert "Unpaired (" not in out


def test_compare_of_old_runs_or_other_rows_is_unpaired_and_says_why(capsys, tmp_path):
    import numpy as np

    mask = np.arange(10_000) % 10 != 0  # 90%
    better = mask.copy()
    better[:300] = True  # 30 more rows right: +0.30 points
    store = _two_runs(tmp_path, {"baseline": _metrics("baseline", mask, rows_sha=None),
                                 "mlp1": _metrics("mlp1", mask)},
                      {"baseline": _metrics("baseline", better), "mlp1": _metrics("mlp1", better, rows_sha="d" * 64)})
    code, out, _ = runs(capsys, "compare", "20261101-000000-aaaaaa", "20261102-000000-bbbbbb", "--store", store)
    assert code == 0
    assert _line(out, "baseline") == "| baseline | 90.00% | 90.30% | +0.30 | 0.42 | — | — | — | no, unpaired (0.7 SE) |"
    assert "baseline: A's metrics.json predates per-image outcomes" in out
    assert "mlp1: tested on different test rows" in out and "| no, unpaired (0.7 SE) |" in _line(out, "mlp1")


def test_compare_names_a_damaged_metrics_file(capsys, tmp_path):
    """Issue 21 X11: a model whose metrics.json is damaged is named with its path, not called "not finished"."""
    import numpy as np

    mask = np.ones(10_000, bool)
    store = _two_runs(tmp_path, {"baseline": _metrics("baseline", mask), "cnn2": b"{cut sh"},
                      {"baseline": _metrics("baseline", mask)})
    code, out, _ = runs(capsys, "compare", "20261101-000000-aaaaaa", "20261102-000000-bbbbbb", "--store", store)
    assert code == 0
    line = _line(out, "cnn2")
    assert line.startswith("| cnn2 | damaged | — | — | — | — | — | — | damaged: ") and "not finished" not in line
    assert f"{store}/runs/20261101-000000-aaaaaa/cnn2/metrics.json: not JSON" in line
