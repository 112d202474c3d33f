"""Champion promotion: the best model per architecture and overall, in models/champion.json.

A run's model replaces the champion only when its test accuracy beats the
champion's by at least `margin`. Only runs evaluated on the whole test set
(10,000 rows) compete, so a quick run never displaces a real one. Accuracies
are compared as whole counts of correctly classified test rows, and the margin
as whole rows (ceil(margin x rows)): in floats, 0.811 + 0.002 > 0.813, and a
gain of exactly the margin would be refused. A run that already holds a slot
(resumed after promotion, a retried task) is reported as its champion and the
pointer is left as it is. The pointer is updated with a compare-and-swap
(If-Match on S3, a lock locally): when two runs promote at once, the loser
re-reads the winner's pointer and decides again. A pointer that is there but
unreadable (garbage, cut short, a key missing) is a ChampionFileError naming the
file and the repair; a run none of whose models can compete never reads it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import ChampionFileError, StoreError
from tasks.records import quoted, read_record
from tasks.keys import RunPaths
from tasks.data.store import Store
from tasks.keys import CHAMPION_KEY

FULL_TEST_ROWS = 10_000
OVERALL = "overall"


@dataclass(frozen=True)
class Decision:
    slot: str  # an architecture, or "overall"
    promoted: bool
    reason: str
    candidate_accuracy: float
    champion_accuracy: float | None


def _entry(run_id: str, metrics: dict) -> dict:
    return {
        "run_id": run_id,
        "architecture": metrics["architecture"],
        "test_accuracy": metrics["test_accuracy"],
        "model_key": RunPaths(run_id).model(metrics["architecture"]),
        "model_sha256": metrics.get("model_sha256"),
        "dataset_version": metrics.get("dataset_version"),
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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


def _judge(slot: str, run_id: str, metrics: dict, champion: dict | None, margin: float) -> Decision:
    accuracy = metrics["test_accuracy"]
    held = champion["test_accuracy"] if champion else None
    if not competes(metrics):
        return Decision(slot, False, f"evaluated on {metrics['rows']['test']:,} of {FULL_TEST_ROWS:,} test rows: "
                                     "only full-test-set runs compete", accuracy, held)
    if champion is None:
        return Decision(slot, True, "no champion yet", accuracy, None)
    if _holds(champion, run_id, metrics):
        return Decision(slot, True, f"already champion (this run): {100 * accuracy:.2f}%", accuracy, held)
    ours, theirs, needed = correct_rows(accuracy), correct_rows(held), margin_rows(margin)
    versus = (f"{ours:,} of {FULL_TEST_ROWS:,} test rows correct ({100 * accuracy:.2f}%) against {theirs:,} "
              f"({100 * held:.2f}%, run {champion['run_id']})")
    if ours >= theirs + needed:
        return Decision(slot, True, f"{versus}: beats it by at least the margin, {needed} rows "
                                    f"({100 * margin:.2f} points)", accuracy, held)
    return Decision(slot, False, f"{versus}: does not beat it by the margin, {needed} rows "
                                 f"({100 * margin:.2f} points)", accuracy, held)


def decide(pointer: dict, run_id: str, metrics_by_arch: dict[str, dict], margin: float) -> tuple[dict, list[Decision]]:
    """The new pointer and one decision per architecture and overall (pure: no I/O).
    The pointer itself comes back, unchanged, when nothing new was promoted (slots this run holds stay as they are)."""
    champions = dict(pointer.get("architectures", {}))
    decisions = []
    for arch, metrics in metrics_by_arch.items():
        decision = _judge(arch, run_id, metrics, champions.get(arch), margin)
        decisions.append(decision)
        if decision.promoted and not _holds(champions.get(arch), run_id, metrics):
            champions[arch] = _entry(run_id, metrics)
    best = max(metrics_by_arch.values(), key=lambda m: m["test_accuracy"])
    overall = _judge(OVERALL, run_id, best, pointer.get(OVERALL), margin)
    decisions.append(overall)
    new_overall = pointer.get(OVERALL)
    if overall.promoted and not _holds(new_overall, run_id, best):
        new_overall = _entry(run_id, best)
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


class ChampionPointer(BaseModel):
    """models/champion.json: its revision (one more per promotion), each architecture's champion, the overall one."""

    model_config = ConfigDict(strict=True, extra="allow")

    revision: int = Field(ge=1)
    architectures: dict[str, ChampionEntry]
    overall: ChampionEntry | None

    @model_validator(mode="after")
    def _slots_hold_their_architecture(self) -> "ChampionPointer":
        # decide() looks champions up by slot: a mismatched entry would be compared with the wrong model.
        for slot, entry in self.architectures.items():
            if entry.architecture != slot:
                raise ValueError(f"entry {slot!r} holds architecture {entry.architecture!r}")
        return self


def _pointer_naming(loc: tuple[str | int, ...]) -> str:
    """entry 'cnn2' for a slot (entry 'overall' for the overall champion), its keys after it in quotes."""
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
    return pointer.model_dump(mode="json")  # decide() works on the JSON it writes back


def read_champions(store: Store) -> dict:
    data, _ = store.read_versioned(CHAMPION_KEY)
    return parse_pointer(store, data)


def competes(metrics: dict) -> bool:
    """Only a model evaluated on the whole test set can take a slot."""
    return metrics["rows"]["test"] == FULL_TEST_ROWS


def promote(store: Store, run_id: str, metrics_by_arch: dict[str, dict], margin: float,
            attempts: int = 10) -> list[Decision]:
    """Compare with the current champions and swap the pointer in if anything was promoted."""
    if not any(competes(m) for m in metrics_by_arch.values()):
        # Every decision is a refusal whatever the pointer says: not reading it keeps a damaged one from failing
        # quick runs (their decisions show no champion accuracy).
        return decide({}, run_id, metrics_by_arch, margin)[1]
    for _ in range(attempts):
        data, token = store.read_versioned(CHAMPION_KEY)
        current = parse_pointer(store, data)
        pointer, decisions = decide(current, run_id, metrics_by_arch, margin)
        if pointer is current:
            return decisions  # nothing new: refused everywhere, or this run already holds what it won
        if store.put_if_version(CHAMPION_KEY, json.dumps(pointer, indent=2).encode(), token):
            return decisions
        # Another run changed the pointer between our read and our write: decide again against theirs.
    raise StoreError(f"{store.url_for(CHAMPION_KEY)}: changed by other runs {attempts} times while promoting run "
                     f"{run_id}; nothing was promoted, run `fmnist champion` and retry")


def decisions_markdown(decisions: list[Decision]) -> str:
    lines = ["## Champion", "", "| slot | promoted | reason |", "|---|---|---|"]
    lines += [f"| {d.slot} | {'yes' if d.promoted else 'no'} | {d.reason} |" for d in decisions]
    return "\n".join(lines) + "\n"


def decisions_json(decisions: list[Decision]) -> list[dict]:
    return [asdict(d) for d in decisions]
