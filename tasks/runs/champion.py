"""Champion promotion: the best model per (architecture, recipe family) and overall, in models/champion.json.

A run's model replaces a champion only when it is better on the same test rows by McNemar's exact test: of the
rows exactly one of the two got right, b only the champion and c only the challenger, the one-sided p-value
P(C >= c | b + c rows, a fair coin each) must be below `alpha` (--promotion-alpha, 0.05). A challenger as good as
the champion is then promoted at most alpha of the time (benchmarks/results/champion_gate.md measures it), where
the old margin of 20 rows, below the paired standard error of two models' difference, let about one in five
through (issue 17). The two per-image outcomes come from the challenger's metrics.json and the champion's entry;
where one is missing (an entry written before they were recorded) or the two were tested on different rows, the
old rule decides and the reason says so: whole counts of correct test rows, the challenger ahead by at least
`margin` as whole rows (ceil(margin x rows): in floats, 0.811 + 0.002 > 0.813).

Slots: one per architecture and recipe family ('report': the report's protocol; 'searched': a recipe `fmnist
search` found, in a search's retrained winner or a `--recipe best` run), so a searched model never shuts the report
recipe's nightly runs out of their slot; and one 'overall' slot across all. An entry records its recipe, its run,
its per-image outcomes (so the next challenger can be paired with it) and the figures it was promoted on. A
pointer written before families keys its slots by architecture alone; those entries are read as family 'unknown'
(their recipe was not recorded, and a search's winner may hold one), keyed 'ARCH/unknown' from then on, and no new
model competes for them.

Only runs of the full preset's protocol, unchanged, evaluated on the whole test set (10,000 rows) compete: a quick
or custom run never takes a slot (issue 27). The overall candidate is the run's best model on validation. Besides
McNemar against the champion, the window promotes: the slot's recent models (tasks.runs.history) better than the
ones before them, where a lucky champion is not in the way (the year's figures: benchmarks/results/nights.md). A run
that already holds a slot (resumed after promotion, a retried task) is reported as its champion and the pointer is
left as it is. The pointer is updated with a compare-and-swap (If-Match on S3, a lock locally): when two runs
promote at once, the loser re-reads the winner's pointer and decides again. A pointer that is there but unreadable
(garbage, cut short, a key missing) is a ChampionFileError naming the file and the repair; a run none of whose
models can compete never reads it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import ChampionFileError, StoreError
from tasks.records import quoted, read_record
from tasks.keys import RunPaths
from tasks.data.store import Store
from tasks.keys import CHAMPION_KEY
from tasks.runs.history import WINDOW_ALPHA, Window, read_recent, window
from tasks.runs.paired import (DEFAULT_ALPHA, OUTCOMES_FIELD, Outcomes, OutcomesError, Paired, gate_promotes,
                               outcomes_match_accuracy, paired, read_outcomes)

FULL_TEST_ROWS = 10_000
OVERALL = "overall"
Family = Literal["report", "searched", "unknown"]
REPORT, SEARCHED, UNKNOWN = "report", "searched", "unknown"


@dataclass(frozen=True)
class Decision:
    slot: str  # 'ARCH/FAMILY' (cnn2/report, cnn2/searched), or "overall"
    promoted: bool
    reason: str
    candidate_accuracy: float
    champion_accuracy: float | None
    rule: str = ""  # what decided: 'mcnemar', 'margin'; '' when nothing was compared (first, held, not competing)
    b: int | None = None  # test rows only the champion got right (McNemar)
    c: int | None = None  # test rows only the challenger got right
    p_value: float | None = None  # one-sided exact McNemar: P(C >= c) if the two were equally accurate

    competing: bool = True  # False: the run's protocol or test rows keep it out of every slot
    window: Window | None = None  # the slot's recent models, where they promoted it (rule 'window')

    @property
    def outcome(self) -> str:
        """In a log line: 'promoted', 'kept' (the champion stays), or 'not competing' (never "kept" for a slot the
        run could not take, which may be empty)."""
        if self.promoted:
            return "promoted"
        return "kept" if self.competing else "not competing"


def family_of(metrics: dict) -> str:
    """'report' for the report's recipe; 'searched' for one `fmnist search` found (recipe_name 'search': a search's
    retrained winner; 'best': `fmnist run --recipe best`). A metrics.json without recipe_name predates recipes."""
    return REPORT if metrics.get("recipe_name", REPORT) == REPORT else SEARCHED


def slot_of(architecture: str, family: str) -> str:
    return f"{architecture}/{family}"


def _promotion(decision: Decision, champion: dict | None, alpha: float) -> dict:
    """The figures an entry was promoted on, kept beside its accuracy (which, as the best of the models tested so
    far, is biased up: `fmnist champion` says "as tested when promoted")."""
    figures = {"rule": decision.rule or "first", "over_run": champion["run_id"] if champion else None,
               "b": decision.b, "c": decision.c, "p_value": decision.p_value,
               "alpha": alpha if decision.rule in ("mcnemar", "window") else None}
    return {**figures, "window": asdict(decision.window)} if decision.window else figures


def _entry(run_id: str, metrics: dict, decision: Decision, champion: dict | None, alpha: float) -> dict:
    return {
        "run_id": run_id,
        "architecture": metrics["architecture"],
        "family": family_of(metrics),
        "recipe_name": metrics.get("recipe_name", REPORT),
        "recipe": metrics.get("recipe"),
        "test_accuracy": metrics["test_accuracy"],
        "val_accuracy": metrics.get("final_val_accuracy"),  # what `predict champion:ARCH` chooses a family by
        "model_key": RunPaths(run_id).model(metrics["architecture"]),
        "model_sha256": metrics.get("model_sha256"),
        "dataset_version": metrics.get("dataset_version"),
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "promotion": _promotion(decision, champion, alpha),
        OUTCOMES_FIELD: metrics.get(OUTCOMES_FIELD),  # the next challenger is paired with these
    }


def correct_rows(accuracy: float, rows: int = FULL_TEST_ROWS) -> int:
    """How many test rows were classified correctly: accuracy is correct / rows, so this undoes it exactly."""
    return round(accuracy * rows)


def margin_rows(margin: float, rows: int = FULL_TEST_ROWS) -> int:
    """The margin as whole rows, rounded up ("at least"); rounding to 6 places first drops float noise
    (0.0007 x 10,000 is 7.000000000000001 in floats, and must be 7)."""
    return math.ceil(round(margin * rows, 6))


def _holds(champion: dict | None, run_id: str, metrics: dict) -> bool:
    """This run's model of this architecture is already the slot's champion."""
    return bool(champion) and champion["run_id"] == run_id and champion["architecture"] == metrics["architecture"]


def _outcomes(record: dict) -> tuple[Outcomes | None, str]:
    """A metrics.json's or an entry's per-image outcomes, or None and why there are none to pair."""
    try:
        found = read_outcomes(record.get(OUTCOMES_FIELD))
    except OutcomesError as exc:
        return None, f"unreadable per-image outcomes ({exc})"
    if found is None:
        return None, "no per-image outcomes (recorded before they were)"
    if not outcomes_match_accuracy(found, record["test_accuracy"]):
        return None, "per-image outcomes that disagree with its test accuracy"
    return found, ""


def _pairing(champion: dict, metrics: dict) -> tuple[Paired | None, str]:
    """The champion against the challenger on the same test rows, or None and why they cannot be paired."""
    theirs, why = _outcomes(champion)
    if theirs is None:
        return None, f"the champion's entry has {why}"
    ours, why = _outcomes(metrics)
    if ours is None:
        return None, f"this model has {why}"
    if not theirs.same_rows(ours):
        return None, "the two were tested on different test rows"
    return paired(theirs, ours), ""


def _by_margin(slot: str, versus: str, why: str, accuracy: float, held: float, margin: float) -> Decision:
    """The rule before per-image outcomes: ahead by at least the margin, in whole test rows."""
    ours, theirs, needed = correct_rows(accuracy), correct_rows(held), margin_rows(margin)
    rule = f"{why}, so the margin rule decides: {needed} rows ({100 * margin:.2f} points)"
    if ours >= theirs + needed:
        return Decision(slot, True, f"{versus}: beats it by at least the margin; {rule}", accuracy, held, "margin")
    return Decision(slot, False, f"{versus}: does not beat it by the margin; {rule}", accuracy, held, "margin")


def _by_mcnemar(slot: str, versus: str, pair: Paired, accuracy: float, held: float, alpha: float) -> Decision:
    """Better on the same rows by McNemar's exact test, one-sided (the question is "is the challenger better?"):
    an equal challenger passes at most alpha of the time."""
    p = pair.p_value("greater")
    figures = (f"b = {pair.b:,} rows only the champion got right, c = {pair.c:,} only this model; McNemar exact "
               f"one-sided p = {p:.3g}")
    if gate_promotes(pair.b, pair.c, alpha):  # p < alpha, decided as benchmarks/nights.py replays it
        return Decision(slot, True, f"{versus}: better on the same test rows ({figures} < {alpha:g})", accuracy,
                        held, "mcnemar", pair.b, pair.c, p)
    return Decision(slot, False, f"{versus}: not shown better on the same test rows ({figures}, needs p < "
                                 f"{alpha:g})", accuracy, held, "mcnemar", pair.b, pair.c, p)


def _by_window(decision: Decision, pair: Paired, found: Window | None, alpha: float, champion_run: str) -> Decision:
    """Not shown better than the champion, whose recorded accuracy is lucky by selection; promoted all the same
    when the slot's newest models are better than the ones before them (tasks.runs.history: nobody chose those on
    the test rows), the champion is not shown better than this model (the same gate, the other way round) and the
    champion is older than the window (else the window would promote each of the newer models in turn)."""
    if found is None or not found.better or gate_promotes(pair.c, pair.b, alpha):
        return decision
    if champion_run in found.newer + found.older:  # promoted within the window: it already is its newer models
        return decision
    reason = (f"{decision.reason}; but the slot's last {len(found.newer)} models ({', '.join(found.newer)}) are "
              f"ahead of the {len(found.older)} before them by {100 * found.delta:+.2f} points (paired, one-sided "
              f"p = {found.p_better:.2g} < {WINDOW_ALPHA:g}) and the champion is not shown better than this model")
    return replace(decision, promoted=True, reason=reason, rule="window", window=found)


def _judge(slot: str, run_id: str, metrics: dict, champion: dict | None, margin: float, alpha: float,
           full_protocol: bool = True, recent: list[dict] | None = None) -> Decision:
    accuracy = metrics["test_accuracy"]
    held = champion["test_accuracy"] if champion else None
    if not full_protocol:
        return Decision(slot, False, "not the full protocol (a quick or custom run, or one with other rows, epochs, "
                                     "batch size, patience or seed): only full-protocol runs compete", accuracy, held,
                        competing=False)
    if not competes(metrics):
        return Decision(slot, False, f"evaluated on {metrics['rows']['test']:,} of {FULL_TEST_ROWS:,} test rows: "
                                     "only full-test-set runs compete", accuracy, held, competing=False)
    if champion is None:
        return Decision(slot, True, "no champion yet", accuracy, None)
    if _holds(champion, run_id, metrics):
        return Decision(slot, True, f"already champion (this run): {100 * accuracy:.2f}%", accuracy, held)
    versus = (f"{correct_rows(accuracy):,} of {FULL_TEST_ROWS:,} test rows correct ({100 * accuracy:.2f}%) against "
              f"{correct_rows(held):,} ({100 * held:.2f}%, run {champion['run_id']})")
    pair, why = _pairing(champion, metrics)
    if pair is None:
        return _by_margin(slot, versus, why, accuracy, held, margin)
    decision = _by_mcnemar(slot, versus, pair, accuracy, held, alpha)
    if decision.promoted or recent is None or family_of(metrics) != REPORT:
        return decision
    return _by_window(decision, pair, window(recent, run_id, metrics), alpha, champion["run_id"])


def overall_candidate(metrics_by_arch: dict[str, dict]) -> dict:
    """The run's candidate for `overall`: its model with the best final-epoch VALIDATION accuracy (the epoch it was
    tested at). Chosen on test accuracy, the best of five would then be tested on the rows that chose it: with five
    equal models, 15 % false promotions at a nominal 5 % (issue 27)."""
    return max(metrics_by_arch.values(), key=lambda m: m.get("final_val_accuracy", 0.0))


def nightly_models(metrics_by_arch: dict[str, dict]) -> dict[str, dict]:
    """A full run's report-recipe models by slot, and its overall candidate: what tasks.runs.history keeps."""
    models = {slot_of(m["architecture"], REPORT): m for m in metrics_by_arch.values()
              if competes(m) and family_of(m) == REPORT}
    return {**models, OVERALL: overall_candidate(models)} if models else {}


def decide(pointer: dict, run_id: str, metrics_by_arch: dict[str, dict], margin: float,
           alpha: float = DEFAULT_ALPHA, full_protocol: bool = True,
           recent: dict[str, list[dict]] | None = None) -> tuple[dict, list[Decision]]:
    """The new pointer and one decision per architecture (in its recipe family's slot) and overall (pure: no I/O).
    The pointer itself comes back, unchanged, when nothing new was promoted (slots this run holds stay as they are).
    `full_protocol`: the run trained the full preset's protocol unchanged; no other run takes any slot.
    `recent`: the slots' recent models (tasks.runs.history), for the window rule."""
    champions = dict(pointer.get("architectures", {}))
    recent = recent or {}
    decisions = []
    for metrics in metrics_by_arch.values():
        slot = slot_of(metrics["architecture"], family_of(metrics))
        decision = _judge(slot, run_id, metrics, champions.get(slot), margin, alpha, full_protocol, recent.get(slot))
        decisions.append(decision)
        if decision.promoted and not _holds(champions.get(slot), run_id, metrics):
            champions[slot] = _entry(run_id, metrics, decision, champions.get(slot), alpha)
    best = overall_candidate(metrics_by_arch)
    overall = _judge(OVERALL, run_id, best, pointer.get(OVERALL), margin, alpha, full_protocol, recent.get(OVERALL))
    decisions.append(overall)
    new_overall = pointer.get(OVERALL)
    if overall.promoted and not _holds(new_overall, run_id, best):
        new_overall = _entry(run_id, best, overall, new_overall, alpha)
    if champions == pointer.get("architectures", {}) and new_overall == pointer.get(OVERALL):
        return pointer, decisions
    new_pointer = {"revision": pointer.get("revision", 0) + 1, "architectures": champions, OVERALL: new_overall}
    return new_pointer, decisions


class ChampionEntry(BaseModel):
    """One slot of the pointer, as _entry writes it: every key present (null allowed where _entry may write null),
    the ones decide() and the CLI use of the right kind."""

    model_config = ConfigDict(strict=True, extra="allow")

    run_id: str
    architecture: str
    test_accuracy: float = Field(ge=0, le=1, description="A fraction of the test rows, from 0 to 1.")
    model_key: str
    model_sha256: Any
    dataset_version: Any
    promoted_at: Any
    # Written since slots have recipe families; an entry from before has none of them (family 'unknown').
    family: Family = UNKNOWN
    recipe_name: str | None = None
    recipe: dict[str, Any] | None = None
    promotion: dict[str, Any] | None = None
    test_outcomes: dict[str, Any] | None = None


class ChampionPointer(BaseModel):
    """models/champion.json: its revision (one more per promotion), each (architecture, recipe family) slot's
    champion keyed 'ARCH/FAMILY' (a pointer from before families: keyed 'ARCH'), the overall one."""

    model_config = ConfigDict(strict=True, extra="allow")

    revision: int = Field(ge=1)
    architectures: dict[str, ChampionEntry]
    overall: ChampionEntry | None

    @model_validator(mode="after")
    def _slots_hold_their_architecture(self) -> "ChampionPointer":
        # decide() looks champions up by slot: a mismatched entry would be compared with the wrong model.
        for slot, entry in self.architectures.items():
            if slot not in (slot_of(entry.architecture, entry.family), _legacy_slot(entry)):
                raise ValueError(f"entry {slot!r} holds {slot_of(entry.architecture, entry.family)!r}")
        return self

    def migrated(self) -> dict:
        """As JSON, a legacy slot 'cnn2' renamed 'cnn2/unknown' (its recipe was never recorded): decide() and
        every reader see one kind of key, and the next promotion writes the file back that way."""
        pointer = self.model_dump(mode="json")
        pointer["architectures"] = {slot_of(e["architecture"], e["family"]): e
                                    for e in pointer["architectures"].values()}
        return pointer


def _legacy_slot(entry: ChampionEntry) -> str | None:
    """A pointer written before families keyed a slot by its architecture alone (and its entry has no family)."""
    return entry.architecture if entry.family == UNKNOWN else None


def _pointer_naming(loc: tuple[str | int, ...]) -> str:
    """entry 'cnn2/report' for a slot (entry 'overall' for the overall champion), its keys after it in quotes."""
    if len(loc) >= 2 and loc[0] == "architectures":
        return f"entry {loc[1]!r} {quoted(loc[2:])}".rstrip()
    if loc[:1] == (OVERALL,):
        return f"entry {OVERALL!r} {quoted(loc[1:])}".rstrip()
    return quoted(loc)


def parse_pointer(store: Store, data: bytes | None) -> dict:
    """The pointer these bytes hold: {} when there is no file (no champion yet), else a checked pointer or a
    ChampionFileError naming the file, what is wrong and the repair."""
    if data is None:
        return {}
    pointer = read_record(ChampionPointer, data, name=_pointer_naming,
                          error=lambda problem: ChampionFileError(store.url_for(CHAMPION_KEY), problem))
    return pointer.migrated()  # decide() works on the JSON it writes back


def read_champions(store: Store) -> dict:
    data, _ = store.read_versioned(CHAMPION_KEY)
    return parse_pointer(store, data)


def competes(metrics: dict) -> bool:
    """Only a model evaluated on the whole test set can take a slot."""
    return metrics["rows"]["test"] == FULL_TEST_ROWS


def promote(store: Store, run_id: str, metrics_by_arch: dict[str, dict], margin: float,
            attempts: int = 10, alpha: float = DEFAULT_ALPHA, full_protocol: bool = True) -> list[Decision]:
    """Compare with the current champions and swap the pointer in if anything was promoted."""
    if not full_protocol or not any(competes(m) for m in metrics_by_arch.values()):
        # Every decision is a refusal whatever the pointer says: not reading it keeps a damaged one from failing
        # quick runs (their decisions show no champion accuracy).
        return decide({}, run_id, metrics_by_arch, margin, alpha, full_protocol)[1]
    recent = read_recent(store)[0]
    for _ in range(attempts):
        data, token = store.read_versioned(CHAMPION_KEY)
        current = parse_pointer(store, data)
        pointer, decisions = decide(current, run_id, metrics_by_arch, margin, alpha, recent=recent)
        if pointer is current:
            return decisions  # nothing new: refused everywhere, or this run already holds what it won
        if store.put_if_version(CHAMPION_KEY, json.dumps(pointer, indent=2).encode(), token):
            return decisions
        # Another run changed the pointer between our read and our write: decide again against theirs.
    raise StoreError(f"{store.url_for(CHAMPION_KEY)}: changed by other runs {attempts} times while promoting run "
                     f"{run_id}; nothing was promoted, run `fmnist champion` and retry")


def _figure(value: int | float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def decisions_markdown(decisions: list[Decision]) -> str:
    """The summary's table: b and c (rows only the champion, only the challenger got right) and McNemar's p beside
    each decision; '—' where no outcomes were paired (a first champion, a held slot, the margin rule)."""
    lines = ["## Champion", "", "| Slot | Promoted | b (test rows only the champion got right) | c (only this run) "
             "| p (McNemar, one-sided) | Reason |", "|---|---|---:|---:|---:|---|"]
    lines += [f"| {d.slot} | {'yes' if d.promoted else 'no'} | {_figure(d.b, ',')} | {_figure(d.c, ',')} | "
              f"{_figure(d.p_value, '.3g')} | {d.reason} |" for d in decisions]
    return "\n".join(lines) + "\n"


def recipe_of(entry: dict) -> str:
    """An entry's recipe family as a user reads it: 'report', 'searched (best)', 'not recorded'."""
    family = entry.get("family", UNKNOWN)
    if family == UNKNOWN:
        return "not recorded (promoted before recipes were)"
    name = entry.get("recipe_name")
    return family if not name or name == family else f"{family} ({name})"


def promoted_on(entry: dict) -> str:
    """The figures an entry was promoted on: McNemar's b, c and p over the champion it replaced, or the rule."""
    promotion = entry.get("promotion") or {}
    over = f" over run {promotion['over_run']}" if promotion.get("over_run") else ""
    if promotion.get("rule") == "mcnemar":
        return (f"McNemar{over}: b = {promotion['b']:,}, c = {promotion['c']:,}, one-sided p = "
                f"{promotion['p_value']:.3g} < {promotion['alpha']:g}")
    if promotion.get("rule") == "window" and promotion.get("window"):
        found = promotion["window"]
        return (f"the slot's last {len(found['newer'])} models {100 * found['delta']:+.2f} points over the "
                f"{len(found['older'])} before them (p = {found['p_better']:.2g}){over}, not shown worse than it")
    if promotion.get("rule") == "margin":
        return f"margin rule{over} (no per-image outcomes to pair)"
    return "first in its slot" if promotion.get("rule") == "first" else "not recorded"


def champions_table(store_uri: str, pointer: dict) -> str:
    """What `fmnist champion` prints: each slot's champion, its recipe family, its test accuracy as tested when it
    was promoted, and the McNemar figures it was promoted on."""
    if not pointer:
        return f"no champion yet in {store_uri} (a full run promotes its models)"
    lines = [f"champions in {store_uri} (revision {pointer['revision']}):",
             "| slot | architecture | recipe | test accuracy as tested when promoted | promoted on | run | model |",
             "|---|---|---|---:|---|---|---|"]
    slots = {**pointer.get("architectures", {}), OVERALL: pointer.get(OVERALL)}
    lines += [f"| {slot} | {e['architecture']} | {recipe_of(e)} | {100 * e['test_accuracy']:.2f}% | {promoted_on(e)} "
              f"| {e['run_id']} | {e['model_key']} |" for slot, e in slots.items() if e]
    lines.append("A champion's accuracy is the best of the models tested so far on the same test rows, so it is "
                 "biased up: expect a little less on new images.")
    return "\n".join(lines)


def decisions_json(decisions: list[Decision]) -> list[dict]:
    return [asdict(d) for d in decisions]
