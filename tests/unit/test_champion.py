"""Champion promotion on a store (a folder here; tests/integration/test_champion_s3.py runs the same on SeaweedFS):
better promotes, worse does not, races have one winner. `fmnist champion` on a damaged pointer: tests/cli."""

import json
import threading

import pytest

from tasks.runs.champion import decisions_markdown, margin_rows, promote, read_champions

from tasks.keys import CHAMPION_KEY
from tasks.errors import ChampionFileError


def metrics(arch: str, accuracy: float, test_rows: int = 10_000) -> dict:
    return {"architecture": arch, "test_accuracy": accuracy, "rows": {"test": test_rows},
            "model_sha256": "0" * 64, "dataset_version": "v1"}


def test_first_full_run_becomes_champion(store):
    decisions = promote(store, "run-a", {"cnn2": metrics("cnn2", 0.92), "mlp1": metrics("mlp1", 0.88)}, margin=0.002)
    assert all(d.promoted for d in decisions)
    pointer = read_champions(store)
    assert pointer["overall"]["architecture"] == "cnn2" and pointer["overall"]["run_id"] == "run-a"
    assert pointer["architectures"]["mlp1"]["model_key"] == "runs/run-a/mlp1/model.keras"


def test_better_by_the_margin_promotes_and_worse_or_within_margin_does_not(store):
    promote(store, "run-a", {"cnn2": metrics("cnn2", 0.920)}, margin=0.002)
    within = promote(store, "run-b", {"cnn2": metrics("cnn2", 0.921)}, margin=0.002)
    assert not any(d.promoted for d in within) and "does not beat" in within[0].reason
    worse = promote(store, "run-c", {"cnn2": metrics("cnn2", 0.90)}, margin=0.002)
    assert not any(d.promoted for d in worse)
    assert read_champions(store)["architectures"]["cnn2"]["run_id"] == "run-a"
    better = promote(store, "run-d", {"cnn2": metrics("cnn2", 0.925)}, margin=0.002)
    assert all(d.promoted for d in better)
    assert read_champions(store)["overall"]["run_id"] == "run-d"


def test_a_quick_run_never_competes(store):
    decisions = promote(store, "quick", {"cnn2": metrics("cnn2", 0.99, test_rows=1000)}, margin=0.0)
    assert not any(d.promoted for d in decisions) and "1,000 of 10,000" in decisions[0].reason
    assert not store.exists(CHAMPION_KEY)


def test_two_concurrent_promotions_leave_exactly_one_winner(store):
    promote(store, "base", {"cnn2": metrics("cnn2", 0.90)}, margin=0.002)
    barrier = threading.Barrier(2)
    original = store.read_versioned
    outcomes: dict[str, bool] = {}

    first_read = threading.local()

    def read_then_wait(key):
        result = original(key)
        if not getattr(first_read, "done", False):
            first_read.done = True
            barrier.wait(timeout=10)  # both runs read the same pointer before either writes
        return result

    store.read_versioned = read_then_wait

    def contender(run_id):
        outcomes[run_id] = any(d.promoted for d in promote(store, run_id, {"cnn2": metrics("cnn2", 0.93)}, 0.002))

    threads = [threading.Thread(target=contender, args=(run,)) for run in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    store.read_versioned = original
    assert sorted(outcomes.values()) == [False, True]  # the loser re-read the winner's pointer: not better by the margin
    winner = next(run for run, won in outcomes.items() if won)
    pointer = json.loads(store.get_bytes(CHAMPION_KEY))
    assert pointer["architectures"]["cnn2"]["run_id"] == winner == pointer["overall"]["run_id"]
    assert pointer["revision"] == 2


def test_stale_version_token_is_refused(store):
    assert store.put_if_version("pointer.json", b"1", None)
    _, token = store.read_versioned("pointer.json")
    assert not store.put_if_version("pointer.json", b"x", None)
    assert store.put_if_version("pointer.json", b"2", token)
    assert not store.put_if_version("pointer.json", b"3", token)
    assert store.get_bytes("pointer.json") == b"2"


def test_a_run_that_holds_the_slot_is_reported_as_champion_and_promoting_again_changes_nothing(store):
    """Resume after promotion, a retried task: the run is still the champion, and the pointer is not rewritten."""
    run = {"cnn2": metrics("cnn2", 0.92), "mlp1": metrics("mlp1", 0.88)}
    assert all(d.promoted for d in promote(store, "run-a", run, margin=0.002))
    before = store.get_bytes(CHAMPION_KEY)
    again = promote(store, "run-a", run, margin=0.002)
    assert [d.slot for d in again] == ["cnn2", "mlp1", "overall"]
    assert all(d.promoted for d in again), [d.reason for d in again]
    assert all("already champion (this run)" in d.reason for d in again)
    assert "| cnn2 | yes | already champion (this run)" in decisions_markdown(again)
    assert store.get_bytes(CHAMPION_KEY) == before  # no revision bump, no new promoted_at
    assert read_champions(store)["revision"] == 1


def test_held_slots_and_a_new_one_in_one_run(store):
    """A run that holds cnn2 and now also beats mlp1's champion: one write, cnn2's entry untouched."""
    promote(store, "run-a", {"cnn2": metrics("cnn2", 0.92)}, margin=0.002)
    promote(store, "run-b", {"mlp1": metrics("mlp1", 0.85)}, margin=0.002)
    held = read_champions(store)["architectures"]["cnn2"]
    decisions = promote(store, "run-a", {"cnn2": metrics("cnn2", 0.92), "mlp1": metrics("mlp1", 0.88)}, margin=0.002)
    assert [(d.slot, d.promoted) for d in decisions] == [("cnn2", True), ("mlp1", True), ("overall", True)]
    pointer = read_champions(store)
    assert pointer["revision"] == 3 and pointer["architectures"]["cnn2"] == held
    assert pointer["architectures"]["mlp1"]["run_id"] == "run-a"


def test_accuracy_is_compared_in_whole_test_rows(store):
    """0.811 -> 0.813 with margin 0.002 on 10,000 rows is 8,110 -> 8,130 correct, a margin of 20 rows: promoted
    (in floats, 0.811 + 0.002 is 0.8130000000000001 and 0.813 would be refused)."""
    promote(store, "run-a", {"cnn2": metrics("cnn2", 0.811)}, margin=0.002)
    short = promote(store, "run-b", {"cnn2": metrics("cnn2", 0.8129)}, margin=0.002)
    assert not short[0].promoted and "8,129 of 10,000" in short[0].reason and "20 rows" in short[0].reason
    enough = promote(store, "run-c", {"cnn2": metrics("cnn2", 0.813)}, margin=0.002)
    assert enough[0].promoted, enough[0].reason
    assert "8,130 of 10,000" in enough[0].reason and "8,110" in enough[0].reason
    assert read_champions(store)["architectures"]["cnn2"]["run_id"] == "run-c"


@pytest.mark.parametrize(("margin", "rows"), [(0.002, 20), (0.0007, 7), (0.00015, 2), (0.0, 0), (0.01, 100)])
def test_margin_in_rows(margin, rows):
    assert margin_rows(margin, 10_000) == rows


# A damaged pointer (issue 10, item 8): one ChampionFileError naming the file, what is wrong and the repair.
def _valid_pointer() -> dict:
    entry = {"run_id": "run-a", "architecture": "cnn2", "test_accuracy": 0.92, "model_key": "runs/run-a/cnn2/model.keras",
             "model_sha256": "0" * 64, "dataset_version": "v1", "promoted_at": "2025-01-01T00:00:00Z"}
    return {"revision": 1, "architectures": {"cnn2": entry}, "overall": dict(entry)}


def _without(pointer: dict, path: tuple[str, ...]) -> bytes:
    *parents, last = path
    target = pointer
    for key in parents:
        target = target[key]
    del target[last]
    return json.dumps(pointer, indent=2).encode()


BAD_POINTERS = [
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00garbage", "not UTF-8 text at byte 0", id="garbage-bytes"),
    pytest.param(b"<html>oops</html>", "not JSON at byte 0 of 17 (Expecting value)", id="not-json"),
    pytest.param(json.dumps(_valid_pointer(), indent=2).encode()[:60], "it ends early (truncated)", id="truncated"),
    pytest.param(b"", "empty (0 bytes)", id="empty-file"),
    pytest.param(b"[]", "expected a JSON object, found a list", id="empty-list"),
    pytest.param(b"{}", "lacks 'revision'", id="empty-object"),
    pytest.param(_without(_valid_pointer(), ("architectures", "cnn2", "test_accuracy")),
                 "entry 'cnn2' lacks 'test_accuracy'", id="entry-lacks-accuracy"),
    pytest.param(_without(_valid_pointer(), ("overall",)), "lacks 'overall'", id="no-overall"),
    pytest.param(json.dumps({**_valid_pointer(), "revision": "1"}).encode(), "'revision' is a string, expected an integer",
                 id="revision-string"),
    pytest.param(json.dumps({**_valid_pointer(), "architectures": []}).encode(),
                 "'architectures' is a list, expected an object", id="architectures-list"),
]


@pytest.mark.parametrize(("content", "problem"), BAD_POINTERS)
def test_a_damaged_pointer_is_one_clear_error_and_is_left_as_it_is(store, content, problem):
    store.put_bytes(CHAMPION_KEY, content)
    for attempt in (lambda: read_champions(store),
                    lambda: promote(store, "run-b", {"cnn2": metrics("cnn2", 0.95)}, margin=0.002)):
        with pytest.raises(ChampionFileError) as caught:
            attempt()
        message = str(caught.value)
        assert message.startswith(f"{store.url_for(CHAMPION_KEY)} is not a readable champion pointer: ")
        assert problem in message, message
        assert "restore it from a backup, or delete it to start a new champion history" in message
        assert "\n" not in message
    assert store.get_bytes(CHAMPION_KEY) == content  # nothing overwritten: the user may still repair it


@pytest.mark.parametrize("content", [b"garbage", b"[]"])
def test_a_quick_run_does_not_read_the_pointer(store, content):
    """None of a quick run's models can be promoted, so a damaged pointer cannot fail it."""
    store.put_bytes(CHAMPION_KEY, content)
    decisions = promote(store, "quick", {"cnn2": metrics("cnn2", 0.99, test_rows=1000)}, margin=0.0)
    assert not any(d.promoted for d in decisions) and "1,000 of 10,000" in decisions[0].reason
    assert store.get_bytes(CHAMPION_KEY) == content


def test_a_valid_pointer_passes_the_checks(store):
    store.put_bytes(CHAMPION_KEY, json.dumps(_valid_pointer()).encode())
    assert read_champions(store) == _valid_pointer()
    decisions = promote(store, "run-b", {"cnn2": metrics("cnn2", 0.95)}, margin=0.002)
    assert all(d.promoted for d in decisions) and read_champions(store)["revision"] == 2


def test_absent_pointer_is_no_champion_yet(store):
    assert read_champions(store) == {}


