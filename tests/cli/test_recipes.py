"""`fmnist run --recipe best` as a user types it, before anything starts: no stored recipe, a damaged one."""

from __future__ import annotations

import json

from tests.cli_user import run_fmnist


def test_recipe_best_without_a_stored_recipe_says_so_before_anything_starts(tmp_path):
    result = run_fmnist(["fmnist", "run", "--preset", "quick", "--recipe", "best", "--architectures", "cnn2"],
                        tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"fmnist run: error: --recipe best: no stored recipe for cnn2 in {tmp_path / 'artifacts' / 'recipes' / 'quick'} "
        "(preset 'quick'); run `fmnist search --preset quick --architectures cnn2` first, or use --recipe report")
    assert not (tmp_path / "artifacts" / "runs").exists()


def test_a_damaged_stored_recipe_names_the_file(tmp_path):
    folder = tmp_path / "artifacts" / "recipes" / "quick"
    folder.mkdir(parents=True)
    (folder / "cnn2.json").write_text(json.dumps({"recipe": {"augmentation": "rotate"}}))
    result = run_fmnist(["fmnist", "run", "--preset", "quick", "--recipe", "best", "--architectures", "cnn2"],
                        tmp_path, timeout=120)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"fmnist run: error: {folder / 'cnn2.json'}: not a valid recipe: augmentation")
    assert "found 'rotate'" in line
