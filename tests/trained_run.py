"""One tiny trained run shared by the predict and runs tests: `fmnist run` as a user types it, in a fresh folder.

`fmnist run --architectures baseline`: one model of the full protocol (all 60,000 train rows, early stopping; about
a minute on 2 cores), the cheapest run that competes and becomes the champion (models/champion.json): a quick or
custom run never does, even on all 10,000 test rows (issue 27). Cached per test session (the modules that use it import it); the folder is removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from tests.cli_user import run_fmnist

TRAIN_COMMAND = "fmnist run --architectures baseline"


@functools.cache
def trained_folder() -> Path:
    """The folder `fmnist run` ran in: ./artifacts holds one finished run with a champion."""
    folder = Path(tempfile.mkdtemp(prefix="fmnist-trained-"))
    atexit.register(shutil.rmtree, folder, True)
    result = run_fmnist(TRAIN_COMMAND, folder, timeout=600)
    assert result.returncode == 0, f"`{TRAIN_COMMAND}` exit {result.returncode}\n{result.stderr[-3000:]}"
    return folder


def trained_run_id() -> str:
    (run,) = [p.name for p in (trained_folder() / "artifacts" / "runs").iterdir() if p.is_dir()]
    return run


def copy_store(source: Path, store, skip_models: bool = False) -> None:
    """Every object of a local store into another store (S3 too), Tune's state left out."""
    for path in sorted(source.rglob("*")):
        key = path.relative_to(source).as_posix()
        if (path.is_file() and "/tune/" not in key and not path.name.startswith(".")
                and not (skip_models and path.name == "model.keras")):
            store.put_bytes(key, path.read_bytes())
