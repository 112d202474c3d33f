"""The recent models of each slot (models/recent.json): the reference a regression is judged against (issue 27).

A champion is the best of the models tested so far on the same 10,000 rows, so its recorded accuracy is lucky: a
one-sided "worse than the champion" test fired on about 30 % of nights per slot with models of unchanged quality,
and every night once a searched model held `overall`. The reference here was chosen by nobody: the last
RECENT_MODELS full-protocol models of the run's own slot (report recipe, same architecture), whatever was promoted.
Tonight's model is compared with their mean outcome on each row (tasks.runs.paired.worse_than_pool_p); an alert
needs p < ALERT_ALPHA, which benchmarks/nights.py sets against a year of simulated nights (at most one false alert
per slot per year; a real drop of one point alerted on its first night). The overall slot and searches never alert:
a better model of another family, or a search that found a worse recipe than last week's, is not a regression.

The file is only this reference: unreadable, it is started again (the next nights refill it), never a failed run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from tasks.data.store import Store
from tasks.keys import RECENT_KEY
from tasks.runs.champion import REPORT, competes, family_of, slot_of
from tasks.runs.paired import OUTCOMES_FIELD, OutcomesError, read_outcomes, worse_than_pool_p

RECENT_MODELS = 3  # the pool: 3 models shrink its own noise to a third (the drop of 1.0 point: 97 % on night one)
ALERT_ALPHA = 0.001  # per slot and night: ~0.4 false alerts per slot per simulated year (benchmarks/nights.py)


@dataclass(frozen=True)
class Reference:
    """Tonight's model against the slot's recent models on the same test rows."""

    runs: tuple[str, ...]
    delta: float  # tonight's test accuracy minus the recent models' mean (a fraction)
    p_worse: float  # one-sided p for "tonight's model is worse than the recent ones"

    @property
    def regressed(self) -> bool:
        return self.p_worse < ALERT_ALPHA


def _parsed(data: bytes | None) -> dict[str, list[dict]]:
    try:
        slots = json.loads(data)["slots"] if data else {}
    except (ValueError, KeyError, TypeError):
        return {}  # only a reference: started again
    return slots if isinstance(slots, dict) else {}


def read_recent(store: Store) -> tuple[dict[str, list[dict]], str | None]:
    data, token = store.read_versioned(RECENT_KEY)
    return _parsed(data), token


def reference(entries: list[dict], run_id: str, metrics: dict) -> Reference | None:
    """Tonight's model against the slot's recent models (this run's own entry left out: a resumed run is not its
    own reference), or None when there are none on the same rows."""
    try:
        ours = read_outcomes(metrics.get(OUTCOMES_FIELD))
        pool = [read_outcomes(e.get(OUTCOMES_FIELD)) for e in entries if e.get("run_id") != run_id]
    except OutcomesError:
        return None
    pool = [p for p in pool if p is not None and ours is not None and p.same_rows(ours)]
    if ours is None or not pool:
        return None
    p_worse = worse_than_pool_p(ours.correct, np.stack([p.correct for p in pool]))
    delta = ours.accuracy - float(np.mean([p.accuracy for p in pool]))
    return Reference(tuple(e["run_id"] for e in entries if e.get("run_id") != run_id), delta, p_worse)


def _with(slots: dict[str, list[dict]], run_id: str, models: dict[str, dict]) -> dict[str, list[dict]]:
    updated = dict(slots)
    for slot, metrics in models.items():
        kept = [e for e in slots.get(slot, []) if e.get("run_id") != run_id]
        entry = {"run_id": run_id, "test_accuracy": metrics["test_accuracy"],
                 OUTCOMES_FIELD: metrics.get(OUTCOMES_FIELD)}
        updated[slot] = (kept + [entry])[-RECENT_MODELS:]
    return updated


def _landed(slots: dict[str, list[dict]], run_id: str, models: dict[str, dict]) -> bool:
    return all(any(e.get("run_id") == run_id for e in slots.get(slot, [])) for slot in models)


def record_recent(store: Store, run_id: str, models: dict[str, dict], attempts: int = 10) -> bool:
    """Add this run's models to their slots' recent models (the oldest dropped past RECENT_MODELS), by a
    conditional write. A write whose answer was lost, or that another run raced, is read back: the run's entries
    there mean it landed. False when other runs kept winning (the reference misses one night; nothing fails)."""
    for _ in range(attempts):
        slots, token = read_recent(store)
        if _landed(slots, run_id, models):
            return True
        if store.put_if_version(RECENT_KEY, json.dumps({"slots": _with(slots, run_id, models)}).encode(), token):
            return True
    return _landed(read_recent(store)[0], run_id, models)


def compare_with_recent(store: Store, run_id: str, metrics_by_arch: dict[str, dict]) -> dict[str, Reference]:
    """A full run of the report's protocol: each model against its slot's recent models (before this run's), then
    this run's models recorded as the newest. Returns the slots that had a reference."""
    models = {slot_of(m["architecture"], REPORT): m for m in metrics_by_arch.values()
              if competes(m) and family_of(m) == REPORT}
    slots, _ = read_recent(store)
    found = {slot: reference(slots.get(slot, []), run_id, metrics) for slot, metrics in models.items()}
    record_recent(store, run_id, models)
    return {slot: ref for slot, ref in found.items() if ref is not None}
