"""`fmnist champion` as a user types it, on a damaged champion pointer."""

from __future__ import annotations

from tasks.data.store import open_store
from tasks.keys import CHAMPION_KEY
from tests.cli_user import run_fmnist


def test_fmnist_champion_on_a_damaged_pointer_exits_2_with_one_line(tmp_path):
    store_dir = tmp_path / "artifacts"
    open_store(str(store_dir)).put_bytes(CHAMPION_KEY, b"[]")
    result = run_fmnist(["fmnist", "champion", "--store", str(store_dir)], tmp_path, timeout=120)
    assert result.returncode == 2, result
    assert result.stdout == ""  # not "no champion yet"
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"fmnist champion: error: {store_dir}/models/champion.json is not a readable "
                                    "champion pointer: expected a JSON object, found a list; restore it from a backup")


def test_fmnist_champion_shows_each_slots_recipe_and_the_figures_it_was_promoted_on(tmp_path):
    """Issue 17: which recipe serves, its accuracy "as tested when promoted", and McNemar's b, c, p beside it."""
    import numpy as np

    from tasks.runs.champion import promote
    from tasks.runs.paired import outcomes_record

    def scored(mask: np.ndarray, recipe_name: str) -> dict:
        return {"architecture": "cnn2", "test_accuracy": float(mask.mean()), "rows": {"test": mask.size},
                "model_sha256": "0" * 64, "dataset_version": "v1", "recipe_name": recipe_name,
                "test_outcomes": outcomes_record(mask, "e" * 64)}

    champion, better = np.zeros(10_000, bool), np.zeros(10_000, bool)
    champion[:9_000], better[:8_900], better[9_000:9_200] = True, True, True  # b = 100, c = 200
    store_dir = tmp_path / "artifacts"
    store = open_store(str(store_dir))
    promote(store, "night-1", {"cnn2": scored(champion, "report")}, margin=0.002)
    promote(store, "search-1", {"cnn2": scored(better, "search")}, margin=0.002)
    result = run_fmnist(["fmnist", "champion", "--store", str(store_dir)], tmp_path, timeout=120)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert "| slot | architecture | recipe | test accuracy as tested when promoted | promoted on | run | model |" in lines
    assert "| cnn2/report | cnn2 | report | 90.00% | first in its slot | night-1 | runs/night-1/cnn2/model.keras |" in lines
    assert "| cnn2/searched | cnn2 | searched (search) | 91.00% | first in its slot | search-1 |" in result.stdout
    overall = next(line for line in lines if line.startswith("| overall |"))
    assert "| searched (search) | 91.00% | McNemar over run night-1: b = 100, c = 200, one-sided p = " in overall
