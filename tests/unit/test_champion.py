"""Champion promotion on a store (a folder here; tests/integration/test_champion_s3.py runs the same on SeaweedFS):
better promotes, worse does not, races have one winner; the McNemar gate on per-image outcomes (issue 17) with the
margin rule for champions recorded without them; slots per (architecture, recipe family). `fmnist champion` on a
damaged pointer: tests/cli."""

import json
import threading

import numpy as np
import pytest

from tasks.runs.champion import champions_table, decide, decisions_markdown, margin_rows, promote, read_champions
from tasks.runs.paired import outcomes_record

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
    assert pointer["architectures"]["mlp1/report"]["model_key"] == "runs/run-a/mlp1/model.keras"


def test_better_by_the_margin_promotes_and_worse_or_within_margin_does_not(store):
    promote(store, "run-a", {"cnn2": metrics("cnn2", 0.920)}, margin=0.002)
    within = promote(store, "run-b", {"cnn2": metrics("cnn2", 0.921)}, margin=0.002)
    assert not any(d.promoted for d in within) and "does not beat" in within[0].reason
    worse = promote(store, "run-c", {"cnn2": metrics("cnn2", 0.90)}, margin=0.002)
    assert not any(d.promoted for d in worse)
    assert read_champions(store)["architectures"]["cnn2/report"]["run_id"] == "run-a"
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
    assert pointer["architectures"]["cnn2/report"]["run_id"] == winner == pointer["overall"]["run_id"]
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
    assert [d.slot for d in again] == ["cnn2/report", "mlp1/report", "overall"]
    assert all(d.promoted for d in again), [d.reason for d in again]
    assert all("already champion (this run)" in d.reason for d in again)
    assert "| cnn2/report | yes | — | — | — | already champion (this run)" in decisions_markdown(again)
    assert store.get_bytes(CHAMPION_KEY) == before  # no revision bump, no new promoted_at
    assert read_champions(store)["revision"] == 1


def test_held_slots_and_a_new_one_in_one_run(store):
    """A run that holds cnn2 and now also beats mlp1's champion: one write, cnn2's entry untouched."""
    promote(store, "run-a", {"cnn2": metrics("cnn2", 0.92)}, margin=0.002)
    promote(store, "run-b", {"mlp1": metrics("mlp1", 0.85)}, margin=0.002)
    held = read_champions(store)["architectures"]["cnn2/report"]
    decisions = promote(store, "run-a", {"cnn2": metrics("cnn2", 0.92), "mlp1": metrics("mlp1", 0.88)}, margin=0.002)
    assert [(d.slot, d.promoted) for d in decisions] == [("cnn2/report", True), ("mlp1/report", True),
                                                         ("overall", True)]
    pointer = read_champions(store)
    assert pointer["revision"] == 3 and pointer["architectures"]["cnn2/report"] == held
    assert pointer["architectures"]["mlp1/report"]["run_id"] == "run-a"


def test_accuracy_is_compared_in_whole_test_rows(store):
    """0.811 -> 0.813 with margin 0.002 on 10,000 rows is 8,110 -> 8,130 correct, a margin of 20 rows: promoted
    (in floats, 0.811 + 0.002 is 0.8130000000000001 and 0.813 would be refused)."""
    promote(store, "run-a", {"cnn2": metrics("cnn2", 0.811)}, margin=0.002)
    short = promote(store, "run-b", {"cnn2": metrics("cnn2", 0.8129)}, margin=0.002)
    assert not short[0].promoted and "8,129 of 10,000" in short[0].reason and "20 rows" in short[0].reason
    enough = promote(store, "run-c", {"cnn2": metrics("cnn2", 0.813)}, margin=0.002)
    assert enough[0].promoted, enough[0].reason
    assert "8,130 of 10,000" in enough[0].reason and "8,110" in enough[0].reason
    assert read_champions(store)["architectures"]["cnn2/report"]["run_id"] == "run-c"


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


def test_a_valid_pointer_from_before_recipe_families_is_read_as_family_unknown(store):
    """A pointer keyed by architecture alone (before families): its slot reads as 'cnn2/unknown' (its recipe was not
    recorded), a report run takes the empty 'cnn2/report' slot, and the overall entry, which has no outcomes, is
    judged by the margin rule, saying so; the file is written back with the new keys."""
    store.put_bytes(CHAMPION_KEY, json.dumps(_valid_pointer()).encode())
    read = read_champions(store)
    assert list(read["architectures"]) == ["cnn2/unknown"] and read["architectures"]["cnn2/unknown"]["family"] == "unknown"
    assert {k: v for k, v in read["overall"].items() if k in _valid_pointer()["overall"]} == _valid_pointer()["overall"]
    assert "not recorded (promoted before recipes were)" in champions_table(store.uri, read)
    decisions = promote(store, "run-b", {"cnn2": metrics("cnn2", 0.95)}, margin=0.002)
    assert [(d.slot, d.promoted, d.rule) for d in decisions] == [("cnn2/report", True, ""), ("overall", True, "margin")]
    assert "no champion yet" in decisions[0].reason
    assert "the champion's entry has no per-image outcomes" in decisions[1].reason and "margin rule" in decisions[1].reason
    written = json.loads(store.get_bytes(CHAMPION_KEY))
    assert written["revision"] == 2 and sorted(written["architectures"]) == ["cnn2/report", "cnn2/unknown"]


def test_absent_pointer_is_no_champion_yet(store):
    assert read_champions(store) == {}




# --- the McNemar gate (issue 17, section 2): pure decide() on per-image outcomes --------------------------------------

ROWS_SHA = "a" * 64  # the identity of the 10,000 test rows both sides were tested on


def masks(both: int, only_a: int, only_b: int, rows: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Two models' correct rows: `both` rows right in both, then `only_a` rows only A got right, `only_b` only B."""
    a, b = np.zeros(rows, bool), np.zeros(rows, bool)
    a[:both] = b[:both] = True
    a[both:both + only_a] = True
    b[both + only_a:both + only_a + only_b] = True
    return a, b


def scored(arch: str, mask: np.ndarray, recipe_name: str = "report", rows_sha: str = ROWS_SHA) -> dict:
    """A metrics.json as a run writes it now: its accuracy from the mask, the mask beside it."""
    return {**metrics(arch, float(mask.mean()), mask.size), "recipe_name": recipe_name,
            "test_outcomes": outcomes_record(mask, rows_sha)}


def champion_of(arch: str, mask: np.ndarray, recipe_name: str = "report") -> dict:
    pointer, _ = decide({}, "champ", {arch: scored(arch, mask, recipe_name)}, margin=0.002)
    return pointer


def test_an_equal_challenger_is_not_promoted_and_a_clearly_better_one_is():
    """b == c: a tie on the rows where they differ (here 300 each way) is no evidence, p = 0.52."""
    champion, equal = masks(8_500, 300, 300)
    decisions = decide(champion_of("cnn2", champion), "run-b", {"cnn2": scored("cnn2", equal)}, 0.002)[1]
    assert [(d.promoted, d.rule, d.b, d.c) for d in decisions] == [(False, "mcnemar", 300, 300)] * 2
    assert decisions[0].p_value == pytest.approx(0.5, abs=0.03)
    assert "b = 300 rows only the champion got right, c = 300 only this model" in decisions[0].reason
    assert "not shown better on the same test rows" in decisions[0].reason and "needs p < 0.05" in decisions[0].reason
    champion, better = masks(8_500, 250, 350)  # 100 rows (1 point) ahead: p ~ 3e-5
    pointer, decisions = decide(champion_of("cnn2", champion), "run-c", {"cnn2": scored("cnn2", better)}, 0.002)
    assert [(d.promoted, d.rule, d.b, d.c) for d in decisions] == [(True, "mcnemar", 250, 350)] * 2
    assert decisions[0].p_value < 1e-3 and "better on the same test rows" in decisions[0].reason
    entry = pointer["architectures"]["cnn2/report"]
    assert entry["run_id"] == "run-c" and entry["family"] == "report" and entry["recipe_name"] == "report"
    assert entry["test_outcomes"]["rows_sha256"] == ROWS_SHA  # the next challenger is paired with it
    assert entry["promotion"] == {"rule": "mcnemar", "over_run": "champ", "b": 250, "c": 350,
                                  "p_value": decisions[0].p_value, "alpha": 0.05}


def test_the_gate_is_not_the_margin():
    """25 rows ahead on 650 discordant rows passes the old 20-row margin but is noise (p ~ 0.17); 15 rows ahead
    with no row lost is far beyond noise (p = 2^-15) though under the margin."""
    champion, noisy = masks(8_000, 300, 325)
    decision = decide(champion_of("mlp1", champion), "run-b", {"mlp1": scored("mlp1", noisy)}, 0.002)[1][0]
    assert not decision.promoted and 0.1 < decision.p_value < 0.25
    champion, clean = masks(8_000, 0, 15)
    decision = decide(champion_of("mlp1", champion), "run-b", {"mlp1": scored("mlp1", clean)}, 0.002)[1][0]
    assert decision.promoted and decision.p_value == 2.0 ** -15


def test_the_level_is_the_promotion_alpha():
    champion, challenger = masks(8_000, 300, 350)  # p (one-sided) ~ 0.027
    pointer = champion_of("mlp1", champion)
    assert decide(pointer, "run-b", {"mlp1": scored("mlp1", challenger)}, 0.002, alpha=0.05)[1][0].promoted
    assert not decide(pointer, "run-b", {"mlp1": scored("mlp1", challenger)}, 0.002, alpha=0.01)[1][0].promoted


@pytest.mark.parametrize(("champion_entry_change", "challenger_change", "why"), [
    (lambda e: e.pop("test_outcomes"), lambda m: m, "the champion's entry has no per-image outcomes"),
    (lambda e: e, lambda m: m.pop("test_outcomes"), "this model has no per-image outcomes"),
    (lambda e: e, lambda m: m.update(test_outcomes=outcomes_record(np.ones(10_000, bool), "b" * 64)),
     "per-image outcomes that disagree with its test accuracy"),
    (lambda e: e, lambda m: m["test_outcomes"].update(rows_sha256="b" * 64), "tested on different test rows"),
    (lambda e: e["test_outcomes"].update(correct="%%%"), lambda m: m, "unreadable per-image outcomes"),
])
def test_without_two_outcomes_on_the_same_rows_the_margin_rule_decides_and_says_why(champion_entry_change,
                                                                                    challenger_change, why):
    champion, challenger = masks(8_000, 0, 30)  # 30 rows ahead: the margin (20 rows) promotes it
    pointer = champion_of("mlp1", champion)
    champion_entry_change(pointer["architectures"]["mlp1/report"])
    candidate = scored("mlp1", challenger)
    challenger_change(candidate)
    decision = decide(pointer, "run-b", {"mlp1": candidate}, 0.002)[1][0]
    assert decision.promoted and decision.rule == "margin" and decision.p_value is None
    assert why in decision.reason and "so the margin rule decides: 20 rows (0.20 points)" in decision.reason


def test_report_and_searched_recipes_hold_separate_slots_and_one_overall():
    """Issue 17: after a search winner (93.03%) took cnn2, a nightly report-recipe run (92.90%) was refused for cnn2
    for ever. Now it takes cnn2/report; the overall slot stays the searched model's (the report run is worse)."""
    searched, report = masks(9_200, 103, 90)
    pointer = champion_of("cnn2", searched, recipe_name="search")
    assert list(pointer["architectures"]) == ["cnn2/searched"] and pointer["overall"]["family"] == "searched"
    pointer, decisions = decide(pointer, "nightly", {"cnn2": scored("cnn2", report)}, 0.002)
    assert [(d.slot, d.promoted) for d in decisions] == [("cnn2/report", True), ("overall", False)]
    assert pointer["architectures"]["cnn2/report"]["run_id"] == "nightly"
    assert pointer["architectures"]["cnn2/searched"]["run_id"] == "champ" and pointer["overall"]["run_id"] == "champ"
    best = scored("cnn2", report, recipe_name="best")  # `fmnist run --recipe best`: the searched family
    assert decide(pointer, "best-run", {"cnn2": best}, 0.002)[1][0].slot == "cnn2/searched"


def test_champion_table_shows_family_accuracy_as_tested_and_the_figures(store):
    champion, better = masks(8_500, 250, 350)
    promote(store, "run-a", {"cnn2": scored("cnn2", champion, recipe_name="search")}, margin=0.002)
    promote(store, "run-b", {"cnn2": scored("cnn2", better, recipe_name="best")}, margin=0.002, alpha=0.05)
    table = champions_table(store.uri, read_champions(store))
    assert "test accuracy as tested when promoted" in table and "biased up" in table
    row = next(line for line in table.splitlines() if line.startswith("| cnn2/searched |"))
    assert "| searched (best) | 88.50% | McNemar over run run-a: b = 250, c = 350, one-sided p = " in row
    assert "| run-b | runs/run-b/cnn2/model.keras |" in row
    markdown = decisions_markdown(promote(store, "run-c", {"cnn2": scored("cnn2", better)}, margin=0.002))
    assert ("| Slot | Promoted | b (test rows only the champion got right) | c (only this run) | p (McNemar, one-sided) "
            "| Reason |") in markdown
    assert "| overall | no | 0 | 0 | 1 | " in markdown  # the same model's mask: no row differs


# --- issue 27: slots keyed by protocol, `overall` chosen on validation, the recent models as the alert's reference --

def _masked(arch: str, correct: np.ndarray, val: float = 0.9, family: str = "report") -> dict:
    record = outcomes_record(correct, "rows-digest")
    return {**metrics(arch, float(correct.mean())), "test_outcomes": record, "final_val_accuracy": val,
            "recipe_name": family}


def test_a_quick_or_custom_run_on_all_10000_test_rows_takes_no_slot(store):
    """Issue 27 §5: a quick model tested on every test row once became mlp1/report and overall champion."""
    decisions = promote(store, "quick-on-all-rows", {"mlp1": metrics("mlp1", 0.99)}, margin=0.0, full_protocol=False)
    assert not any(d.promoted for d in decisions) and "not the full protocol" in decisions[0].reason
    assert [d.outcome for d in decisions] == ["not competing", "not competing"]  # never "kept" for an empty slot
    assert not store.exists(CHAMPION_KEY)
    promote(store, "nightly", {"mlp1": metrics("mlp1", 0.88)}, margin=0.0)
    again = promote(store, "custom", {"mlp1": metrics("mlp1", 0.99)}, margin=0.0, full_protocol=False)
    assert [d.outcome for d in again] == ["not competing", "not competing"]
    assert read_champions(store)["overall"]["run_id"] == "nightly"


def test_the_overall_candidate_is_the_best_on_validation_not_on_test():
    """Issue 27 §4: chosen on the test rows, the best of five would be tested on the rows that chose it."""
    from tasks.runs.champion import overall_candidate

    lucky_on_test = {**metrics("mlp1", 0.93), "final_val_accuracy": 0.89}
    best_on_validation = {**metrics("cnn2", 0.92), "final_val_accuracy": 0.91}
    assert overall_candidate({"mlp1": lucky_on_test, "cnn2": best_on_validation}) is best_on_validation
    pointer, _ = decide({}, "r", {"mlp1": lucky_on_test, "cnn2": best_on_validation}, margin=0.002)
    assert pointer["overall"]["architecture"] == "cnn2" and pointer["overall"]["val_accuracy"] == 0.91


def _night(store, run_id: str, correct: np.ndarray, family: str = "report") -> dict:
    """What a full nightly run's promote step does: promote, then compare with and record the recent models."""
    from tasks.runs.champion import OVERALL, nightly_models
    from tasks.runs.history import compare_and_record

    metrics_by_arch = {"mlp1": _masked("mlp1", correct, family=family)}
    decisions = promote(store, run_id, metrics_by_arch, margin=0.002)
    models = nightly_models(metrics_by_arch)
    return {"decisions": decisions,
            "references": compare_and_record(store, run_id, models, alerting=set(models) - {OVERALL})}


def test_a_night_is_compared_with_its_slots_last_three_models_and_a_point_lower_is_a_regression(store):
    """Issue 27 §3: the reference is the slot's recent models (none chosen on the test rows), never the champion;
    this run's own entry is never its own reference; the oldest drops out; overall and searches never alert."""
    from tasks.runs.history import ALERT_MODELS, KEPT, read_recent

    rng = np.random.default_rng(0)
    p = rng.beta(0.4, 0.06, 10_000)  # rows from easy to hard, about 87 % right
    for night in range(KEPT + 1):
        _night(store, f"night-{night}", rng.random(10_000) < p)
    recent, _ = read_recent(store)
    assert [e["run_id"] for e in recent["mlp1/report"]] == [f"night-{n}" for n in range(1, KEPT + 1)]
    assert [e["run_id"] for e in recent["overall"]] == [f"night-{n}" for n in range(1, KEPT + 1)]
    steady = _night(store, "steady", rng.random(10_000) < p)["references"]
    assert set(steady) == {"mlp1/report"} and not steady["mlp1/report"].regressed  # overall: never compared
    assert steady["mlp1/report"].runs == tuple(f"night-{n}" for n in range(KEPT - ALERT_MODELS + 1, KEPT + 1))
    dropped = np.where(rng.random(10_000) < p, rng.random(10_000) > 0.02, False)  # ~1.7 points fewer rows right
    worse = _night(store, "dropped", dropped)["references"]["mlp1/report"]
    assert worse.regressed and worse.delta < -0.01 and worse.runs[-1] == "steady"
    retried = _night(store, "dropped", dropped)["references"]["mlp1/report"]
    assert "dropped" not in retried.runs  # a retried step: its own entry is not its reference
    before = read_recent(store)
    searched = _night(store, "search-1", dropped, family="search")
    assert searched["references"] == {} and read_recent(store)[0] == before[0]  # a search: no alert, not recorded


def test_a_better_recipe_is_promoted_by_the_window_over_a_lucky_champion(store):
    """Issue 27 §4: the champion was lucky on these rows; the slot's models got better (+1 point on every row's
    chance); McNemar against the lucky champion alone would wait, the window promotes on the second better night."""
    from tasks.runs.history import KEPT

    rng = np.random.default_rng(5)
    p = rng.beta(0.4, 0.06, 10_000)
    lucky = np.where(rng.random(10_000) < p, True, rng.random(10_000) < 0.06)  # ~0.8 points of luck
    promote(store, "lucky", {"mlp1": _masked("mlp1", lucky)}, margin=0.002)
    for night in range(KEPT):
        assert not any(d.promoted for d in _night(store, f"equal-{night}", rng.random(10_000) < p)["decisions"])
    better = np.minimum(p + 0.04 * p * (1 - p) / np.mean(p * (1 - p)) * 0.25, 1.0)
    ruled = []
    for night in range(3):
        decisions = _night(store, f"better-{night}", rng.random(10_000) < better)["decisions"]
        ruled += [(night, d.rule) for d in decisions if d.promoted and d.slot == "mlp1/report"]
    assert ruled and ruled[0][1] == "window", ruled
    entry = read_champions(store)["architectures"]["mlp1/report"]
    assert entry["promotion"]["rule"] == "window" and entry["promotion"]["window"]["p_better"] < 0.0005
    assert "models" in champions_table("store", read_champions(store))


def test_a_recent_models_write_whose_answer_is_lost_is_read_back_and_counted_as_landed(store):
    """The write lands, then the store answers False (a lost answer, boto3's resend getting 412): read back, the
    run's entries are there, so it landed; nothing is written twice and nothing fails."""
    from tasks.runs.history import read_recent, record_recent

    original = store.put_if_version
    calls = []

    def lands_then_says_no(key, data, token):
        calls.append(key)
        original(key, data, token)
        return False

    store.put_if_version = lands_then_says_no
    correct = np.random.default_rng(1).random(10_000) < 0.9
    assert record_recent(store, "night-1", {"mlp1/report": _masked("mlp1", correct)})
    assert len(calls) == 1 and [e["run_id"] for e in read_recent(store)[0]["mlp1/report"]] == ["night-1"]


def test_an_unreadable_recent_file_is_started_again_never_a_failed_run(store):
    from tasks.keys import RECENT_KEY
    from tasks.runs.history import read_recent

    store.put_bytes(RECENT_KEY, b"{not json")
    correct = np.random.default_rng(2).random(10_000) < 0.9
    assert _night(store, "night-1", correct)["references"] == {}
    assert [e["run_id"] for e in read_recent(store)[0]["mlp1/report"]] == ["night-1"]
