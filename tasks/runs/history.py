"""The recent models of each slot (models/recent.json): references that nobody chose on the test rows (issue 27).

A champion is the best of the models tested so far on the same 10,000 rows, so its recorded accuracy is lucky
(+0.3 points after a simulated year): a one-sided "worse than the champion" test fired on about 30 % of nights per
slot with models of unchanged quality, and every night once a searched model held `overall`; and a truly better
recipe had to beat that luck to be promoted (42 % within a week). The recent models of a full nightly run's slots
are kept here, whatever was promoted, as two references:

- the alert: tonight's model against the slot's last ALERT_MODELS models (`worse_than_pool_p` below ALERT_ALPHA);
- the window: the slot's last WINDOW_NEWER models (tonight's included) against the WINDOW_OLDER before them
  (`pools_z`): a recipe, library or data change that made the slot's models better shows there, where no
  champion's luck is in the way; tasks.runs.champion promotes tonight's model on it (below WINDOW_ALPHA) when it
  is also not worse than the champion.

The levels are set against a year of simulated nights (benchmarks/nights.py): at most one false alert and one
false promotion per slot per year, a drop of one point alerted on its first night, half a point promoted within a
week. The overall slot and searches never alert: a better model of another family, or a search that found a worse
recipe than last week's, is not a regression. The file is only references: unreadable, it is started again (the
next nights refill it), never a failed run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tasks.data.store import Store
from tasks.keys import RECENT_KEY
from tasks.runs.paired import (OUTCOMES_FIELD, Outcomes, OutcomesError, normal_tail, pools_z, read_outcomes,
                               worse_than_pool_p)

ALERT_MODELS = 3  # the alert's pool: 3 models shrink its own noise to a third (a one-point drop: 98 % on night one)
ALERT_ALPHA = 0.001  # per slot and night: ~0.4 false alerts per slot per simulated year
WINDOW_NEWER, WINDOW_OLDER = 4, 6  # the window: the last 4 nights (tonight's included) against the 6 before them
WINDOW_ALPHA = 0.0003  # per slot and night: with the gate's own, ~0.9 false promotions per slot per year
KEPT = WINDOW_NEWER - 1 + WINDOW_OLDER  # models kept per slot: what tonight's window and alert need


@dataclass(frozen=True)
class Reference:
    """Tonight's model against the slot's recent models on the same test rows."""

    runs: tuple[str, ...]
    delta: float  # tonight's test accuracy minus the recent models' mean (a fraction)
    p_worse: float  # one-sided p for "tonight's model is worse than the recent ones"

    @property
    def regressed(self) -> bool:
        return self.p_worse < ALERT_ALPHA


@dataclass(frozen=True)
class Window:
    """The slot's newest models (tonight's included) against the ones before them on the same test rows."""

    newer: tuple[str, ...]
    older: tuple[str, ...]
    delta: float  # the newer models' mean accuracy minus the older ones' (a fraction)
    p_better: float  # one-sided p for "the newer models are better"

    @property
    def better(self) -> bool:
        return self.p_better < WINDOW_ALPHA


def _parsed(data: bytes | None) -> dict[str, list[dict]]:
    try:
        slots = json.loads(data)["slots"] if data else {}
    except (ValueError, KeyError, TypeError):
        return {}  # only references: started again
    return slots if isinstance(slots, dict) else {}


def read_recent(store: Store) -> tuple[dict[str, list[dict]], str | None]:
    data, token = store.read_versioned(RECENT_KEY)
    return _parsed(data), token


def _pool(entries: list[dict], run_id: str, ours: Outcomes) -> list[tuple[str, Outcomes]]:
    """The slot's recent models on the same rows as ours, oldest first; this run's own entry left out (a resumed
    or retried run is not its own reference)."""
    pool = []
    for entry in entries:
        try:
            found = read_outcomes(entry.get(OUTCOMES_FIELD))
        except OutcomesError:
            continue
        if entry.get("run_id") != run_id and found is not None and found.same_rows(ours):
            pool.append((entry["run_id"], found))
    return pool


def _ours(metrics: dict) -> Outcomes | None:
    try:
        return read_outcomes(metrics.get(OUTCOMES_FIELD))
    except OutcomesError:
        return None


def reference(entries: list[dict], run_id: str, metrics: dict) -> Reference | None:
    """Tonight's model against the slot's last ALERT_MODELS models, or None when there are none on its rows."""
    ours = _ours(metrics)
    pool = _pool(entries, run_id, ours)[-ALERT_MODELS:] if ours is not None else []
    if ours is None or not pool:
        return None
    p_worse = worse_than_pool_p(ours.correct, np.stack([found.correct for _, found in pool]))
    delta = ours.accuracy - float(np.mean([found.accuracy for _, found in pool]))
    return Reference(tuple(run for run, _ in pool), delta, p_worse)


def window(entries: list[dict], run_id: str, metrics: dict) -> Window | None:
    """Tonight's model and the slot's WINDOW_NEWER - 1 before it against the WINDOW_OLDER before those, or None
    until the slot has that many models on the same rows."""
    ours = _ours(metrics)
    pool = _pool(entries, run_id, ours) if ours is not None else []
    if ours is None or len(pool) < KEPT:
        return None
    newer = pool[-(WINDOW_NEWER - 1):] + [(run_id, ours)]
    older = pool[-KEPT:-(WINDOW_NEWER - 1)]
    z = pools_z(np.stack([o.correct for _, o in newer]), np.stack([o.correct for _, o in older]))
    delta = float(np.mean([o.accuracy for _, o in newer]) - np.mean([o.accuracy for _, o in older]))
    return Window(tuple(r for r, _ in newer), tuple(r for r, _ in older), delta, normal_tail(z))


def _with(slots: dict[str, list[dict]], run_id: str, models: dict[str, dict]) -> dict[str, list[dict]]:
    updated = dict(slots)
    for slot, metrics in models.items():
        kept = [e for e in slots.get(slot, []) if e.get("run_id") != run_id]
        entry = {"run_id": run_id, "architecture": metrics["architecture"], "test_accuracy": metrics["test_accuracy"],
                 OUTCOMES_FIELD: metrics.get(OUTCOMES_FIELD)}
        updated[slot] = (kept + [entry])[-KEPT:]
    return updated


def _landed(slots: dict[str, list[dict]], run_id: str, models: dict[str, dict]) -> bool:
    return all(any(e.get("run_id") == run_id for e in slots.get(slot, [])) for slot in models)


def record_recent(store: Store, run_id: str, models: dict[str, dict], attempts: int = 10) -> bool:
    """Add this run's models to their slots' recent models (the oldest dropped past KEPT), by a conditional write.
    A write whose answer was lost, or that another run raced, is read back: the run's entries there mean it
    landed. False when other runs kept winning (the references miss one night; nothing fails)."""
    for _ in range(attempts):
        slots, token = read_recent(store)
        if _landed(slots, run_id, models):
            return True
        if store.put_if_version(RECENT_KEY, json.dumps({"slots": _with(slots, run_id, models)}).encode(), token):
            return True
    return _landed(read_recent(store)[0], run_id, models)


def compare_and_record(store: Store, run_id: str, models: dict[str, dict],
                       alerting: Iterable[str]) -> dict[str, Reference]:
    """A full nightly run: the models of the `alerting` slots against their slots' recent models (as they were
    before this run), then every model of `models` recorded as its slot's newest."""
    slots, _ = read_recent(store)
    found = {slot: reference(slots.get(slot, []), run_id, models[slot]) for slot in alerting if slot in models}
    record_recent(store, run_id, models)
    return {slot: ref for slot, ref in found.items() if ref is not None}
