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
