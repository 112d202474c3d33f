"""A store that can be read but not written (issue 21, X8), as a user meets it: `fmnist prepare` filled the folder,
then it became read-only (a read-only mount, a snapshot, a shared volume). Before the write check, `fmnist run` ended
after 27 s with 6 tracebacks and `OSError: [Errno 30] Read-only file system: '…/runs'` from the lease's first write.

The folder is made read-only with a real read-only bind mount (root can write through chmod, so permissions would
prove nothing); where mounting is not allowed the test is skipped and says so.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_user import ok, run_fmnist


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    ok(run_fmnist("fmnist prepare", tmp_path, timeout=300))
    store = tmp_path / "artifacts"
    bound = subprocess.run(["mount", "--bind", str(store), str(store)], capture_output=True, text=True)
    if bound.returncode != 0 or shutil.which("mount") is None:
        pytest.skip(f"cannot make a read-only bind mount here: {bound.stderr.strip()}")
    try:
        remounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(store)], capture_output=True, text=True)
        if remounted.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {remounted.stderr.strip()}")
        yield store
    finally:
        subprocess.run(["umount", str(store)], capture_output=True, timeout=30)


def test_fmnist_run_on_a_read_only_store_says_choose_a_writable_store_before_prefect_starts(read_only_store):
    before = sorted(p.relative_to(read_only_store) for p in read_only_store.rglob("*"))
    result = run_fmnist("fmnist run --preset quick --architectures baseline", read_only_store.parent, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fmnist run: error: the store {read_only_store} cannot be written ("), last
    assert "Read-only file system" in last and last.endswith("choose a writable --store"), last
    assert "Traceback" not in result.stderr
    assert "prefect" not in result.stderr.lower()  # refused before Prefect's temporary server started
    assert result.seconds < 20, result.seconds
    assert sorted(p.relative_to(read_only_store) for p in read_only_store.rglob("*")) == before
