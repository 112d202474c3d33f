"""`fmnist runs`, `runs show`, `runs compare` on a local folder and on S3 (SeaweedFS), from one real trained run.

Beside the trained run, each store gets (metadata only, written here): a second finished run, a copy of the first
whose accuracies are moved by known amounts (so that compare has one difference beyond noise and one within it),
an unfinished run (config.json and one model's metrics, no run.json) and a running search (a live lease).
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from tasks.data.store import LocalStore, S3Store, Store
from tests.trained_run import copy_store, trained_folder, trained_run_id
from tests.unit.test_runs_command import runs

SECOND, UNFINISHED, RUNNING = "20301231-235959-abcdef", "my-unfinished-run", "20200101-000000-123456"


def _moved(metrics: dict, lost: int, gained: int) -> dict:
    """The metrics of a model that got `lost` of the rows this one got right wrong, and `gained` of its wrong rows
    right: its accuracy and its per-image outcomes move together, so compare pairs them (b = lost, c = gained)."""
    import numpy as np

    from tasks.runs.paired import outcomes_record, read_outcomes

    outcomes = read_outcomes(metrics["test_outcomes"])
    correct = outcomes.correct.copy()
    correct[np.flatnonzero(correct)[:lost]] = False
    correct[np.flatnonzero(~outcomes.correct)[:gained]] = True
    return {**metrics, "test_accuracy": float(correct.mean()),
            "test_outcomes": outcomes_record(correct, outcomes.rows_sha256)}


def _populate(store: Store) -> None:
    """The trained run, its champion pointer, and the three runs above (metadata only)."""
    source = trained_folder() / "artifacts"
    copy_store(source, store)
    run = trained_run_id()
    config = json.loads(store.get_bytes(f"runs/{run}/config.json"))
    metrics = json.loads(store.get_bytes(f"runs/{run}/baseline/metrics.json"))
    # SECOND: baseline + 2.00 points (250 rows gained, 50 lost: beyond noise), mlp1 there only (not comparable).
    store.put_bytes(f"runs/{SECOND}/config.json",
                    json.dumps({**config, "run_id": SECOND, "architectures": ["baseline", "mlp1"],
                                "recipe": "wide"}).encode())
    store.put_bytes(f"runs/{SECOND}/baseline/metrics.json",
                    json.dumps(_moved(metrics, lost=50, gained=250)).encode())
    store.put_bytes(f"runs/{SECOND}/mlp1/metrics.json",
                    json.dumps({**metrics, "architecture": "mlp1", "test_accuracy": 0.8}).encode())
    store.put_bytes(f"runs/{SECOND}/run.json", b"{}")
    # UNFINISHED: a hand-given id, claimed, baseline finished, mlp1 not.
    store.put_bytes(f"runs/{UNFINISHED}/config.json",
                    json.dumps({**config, "run_id": UNFINISHED, "architectures": ["baseline", "mlp1"]}).encode())
    store.put_bytes(f"runs/{UNFINISHED}/baseline/metrics.json",
                    json.dumps(_moved(metrics, lost=40, gained=50)).encode())  # +0.10 points, within noise
    # RUNNING: an `fmnist search` (its config.json says kind 'search' and has the search's fields), claimed; its lease
    # held by this live process.
    store.put_bytes(f"runs/{RUNNING}/config.json",
                    json.dumps({**config, "kind": "search", "run_id": RUNNING, "num_samples": 16, "seeds": 3}).encode())
    store.put_bytes(f"runs/{RUNNING}/lease.json", json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                              "id": "x", "renewed_at": time.time()}).encode())


@pytest.fixture(params=["local", "s3"])
def populated(request, tmp_path) -> list[str]:
    """--store (and --s3-endpoint) of a store holding the four runs."""
    from tasks.data.store import open_store

    if request.param == "local":
        uri, endpoint = str(tmp_path / "artifacts"), None
    else:
        uri, endpoint = request.getfixturevalue("s3_store_uri"), request.getfixturevalue("s3_server").endpoint
    _populate(open_store(uri, endpoint))
    return ["--store", uri] + (["--s3-endpoint", endpoint] if endpoint else [])


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Every key the store is asked for (get, read, head), on both backends."""
    keys: list[str] = []
    for cls in (LocalStore, S3Store):
        for name in ("get_bytes", "read_versioned", "exists", "modified_at", "list_keys", "list_prefixes"):
            original = getattr(cls, name)

            def wrapped(self, key="", _original=original, _name=name):
                keys.append(f"{_name} {key}")
                return _original(self, key)
            monkeypatch.setattr(cls, name, wrapped)
    return keys


def test_runs_lists_newest_first_with_status_accuracy_and_champions(capsys, populated, reads):
    code, out, err = runs(capsys, *populated)
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    ids = [row.split(" | ")[0][2:] for row in rows]
    trained = trained_run_id()
    assert ids[0] == SECOND and ids[-1] == RUNNING and set(ids) == {SECOND, trained, UNFINISHED, RUNNING}
    by_id = dict(zip(ids, rows))
    accuracy = json.loads((trained_folder() / "artifacts" / "runs" / trained / "baseline" / "metrics.json")
                          .read_text())["test_accuracy"]
    assert f"| finished | 10,000 | {100 * accuracy:.2f}% ** |" in by_id[trained]  # the overall champion
    assert "| full | wide | finished |" in by_id[SECOND]
    assert "| report | resumable |" in by_id[UNFINISHED] and by_id[UNFINISHED].endswith(" | — |")  # mlp1 pending
    assert "| search | running |" in by_id[RUNNING]
    assert "4 of 4" in out and "** overall champion" in out
    # Metadata only: one listing of runs/ (a delimiter listing), never a model, Tune's state or a full key listing.
    assert not [k for k in reads if k.endswith("model.keras") or "/tune" in k or k.startswith("list_keys")], reads
    assert [k for k in reads if k.startswith("list_prefixes")] == ["list_prefixes runs/"]


def test_limit_pages_and_says_how_many_more(capsys, populated):
    code, out, _ = runs(capsys, *populated, "--limit", "2")
    assert code == 0 and "(2 of 4)" in out and "2 older runs not shown: --limit 4 shows all" in out
    assert RUNNING not in out


def test_show_prints_the_summary_of_a_finished_run(capsys, populated):
    code, out, _ = runs(capsys, "show", trained_run_id(), *populated)
    assert code == 0 and out.startswith(f"run {trained_run_id()}: finished")
    assert "Table 1, ours beside the report's" in out and "| Baseline | " in out and " | 7,850 | " in out


def test_the_store_may_come_before_or_after_show_and_compare(capsys, populated):
    """`fmnist runs --store X show ID` and `fmnist runs show ID --store X` read the same store."""
    before = runs(capsys, *populated, "show", UNFINISHED)
    after = runs(capsys, "show", UNFINISHED, *populated)
    assert before == after and before[0] == 0
    assert runs(capsys, *populated, "compare", SECOND, UNFINISHED)[0] == 0


def test_show_of_an_unfinished_run_says_what_finished_and_how_to_resume(capsys, populated, reads):
    code, out, _ = runs(capsys, "show", UNFINISHED, *populated)
    assert code == 0 and out.startswith(f"run {UNFINISHED}: resumable")
    assert "1 of 2 models finished" in out and "| mlp1 | — | not finished | — |" in out
    assert f"fmnist run --resume {UNFINISHED} --store " in out
    assert not [k for k in reads if k.endswith("model.keras") or "/tune" in k]


def test_compare_shows_differences_with_their_standard_error(capsys, populated):
    """The trained run recorded which test rows its model got right: compare pairs it with the runs written from it
    (b rows only A got right, c only B) and decides by McNemar's test."""
    code, out, _ = runs(capsys, "compare", trained_run_id(), SECOND, *populated)
    assert code == 0
    baseline = next(line for line in out.splitlines() if line.startswith("| baseline |"))
    assert "| +2.00 |" in baseline and "| 50 | 250 |" in baseline and baseline.endswith("| yes (paired) |")
    assert "| mlp1 | — | 80.00% | — | — | — | — | — | not finished in both |" in out
    code, out, _ = runs(capsys, "compare", trained_run_id(), UNFINISHED, *populated)
    baseline = next(line for line in out.splitlines() if line.startswith("| baseline |"))
    assert "| +0.10 |" in baseline and "| 40 | 50 |" in baseline and baseline.endswith("| no (paired) |")


@pytest.mark.parametrize("args, expected", [
    (["show", "nosuch"], "run 'nosuch': no such run in"),
    (["compare", "nosuch", SECOND], "run 'nosuch': no such run in"),
])
def test_an_unknown_run_is_one_line_and_exit_2(capsys, populated, args, expected):
    code, out, err = runs(capsys, *args, *populated)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("fmnist runs: error: ") and expected in err and "fmnist runs --store" in err


