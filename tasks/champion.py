"""Champion promotion: the best model per architecture and overall, in models/champion.json.

A run's model replaces the champion only when its test accuracy beats the
champion's by at least `margin`. Only runs evaluated on the whole test set
(10,000 rows) compete, so a quick run never displaces a real one. The pointer
is updated with a compare-and-swap (If-Match on S3, a lock locally): when two
runs promote at once, the loser re-reads the winner's pointer and decides again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from tasks.errors import StoreError
from tasks.store import Store

CHAMPION_KEY = "models/champion.json"
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
        "model_key": f"runs/{run_id}/{metrics['architecture']}/model.keras",
        "model_sha256": metrics.get("model_sha256"),
        "dataset_version": metrics.get("dataset_version"),
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _judge(slot: str, metrics: dict, champion: dict | None, margin: float) -> Decision:
    accuracy = metrics["test_accuracy"]
    held = champion["test_accuracy"] if champion else None
    if metrics["rows"]["test"] != FULL_TEST_ROWS:
        return Decision(slot, False, f"evaluated on {metrics['rows']['test']:,} of {FULL_TEST_ROWS:,} test rows: "
                                     "only full-test-set runs compete", accuracy, held)
    if champion is None:
        return Decision(slot, True, "no champion yet", accuracy, None)
    if accuracy >= held + margin:
        return Decision(slot, True, f"{100 * accuracy:.2f}% beats {100 * held:.2f}% (run {champion['run_id']}) "
                                    f"by at least the margin {100 * margin:.2f} points", accuracy, held)
    return Decision(slot, False, f"{100 * accuracy:.2f}% does not beat {100 * held:.2f}% (run {champion['run_id']}) "
                                 f"by the margin {100 * margin:.2f} points", accuracy, held)


def decide(pointer: dict, run_id: str, metrics_by_arch: dict[str, dict], margin: float) -> tuple[dict, list[Decision]]:
    """The new pointer and one decision per architecture and overall (pure: no I/O)."""
    champions = dict(pointer.get("architectures", {}))
    decisions = []
    for arch, metrics in metrics_by_arch.items():
        decision = _judge(arch, metrics, champions.get(arch), margin)
        decisions.append(decision)
        if decision.promoted:
            champions[arch] = _entry(run_id, metrics)
    best = max(metrics_by_arch.values(), key=lambda m: m["test_accuracy"])
    overall = _judge(OVERALL, best, pointer.get(OVERALL), margin)
    decisions.append(overall)
    new_pointer = {"revision": pointer.get("revision", 0) + 1, "architectures": champions,
                   OVERALL: _entry(run_id, best) if overall.promoted else pointer.get(OVERALL)}
    return new_pointer, decisions


def read_champions(store: Store) -> dict:
    data, _ = store.read_versioned(CHAMPION_KEY)
    return json.loads(data) if data else {}


def promote(store: Store, run_id: str, metrics_by_arch: dict[str, dict], margin: float,
            attempts: int = 10) -> list[Decision]:
    """Compare with the current champions and swap the pointer in if anything was promoted."""
    for _ in range(attempts):
        data, token = store.read_versioned(CHAMPION_KEY)
        pointer, decisions = decide(json.loads(data) if data else {}, run_id, metrics_by_arch, margin)
        if not any(d.promoted for d in decisions):
            return decisions
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
