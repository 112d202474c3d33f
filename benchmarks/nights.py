"""A year of nights, simulated (issue 27): the champion gate and the regression alert over a series, not one run.

Every night trains a new model per slot; over a year the gate looks at the same 10,000 test rows 365 times. Real
models cannot be trained 73,000 times, so nights are drawn from a row model fitted to real masks:

- `benchmarks/results/nights_rows.npz`: for 20 seeds of baseline (10 epochs) and mlp1 (6 epochs), trained on all
  60,000 rows by benchmarks/champion_gate.py and tested on all 10,000, how many of the 20 got each test row right
  (and each seed's accuracy).
- The row model: each row i has its own chance p_i that a model gets it right; the distribution of p over rows is
  fitted to those counts by maximum likelihood on a grid of 41 values (the NPMLE of a binomial mixture, by EM), and
  each row draws its p from its posterior given its count. Models are then independent draws given p: it matches
  the real pairs' discordant rows (mlp1: 5.9 % simulated, 6.0 % real).
- "Equally good": every night's model drawn from the same p (the issue's exchangeable challengers). "With the
  seeds' spread": each model also gets its own logit shift, sized to the real seeds' accuracy spread beyond the
  rows' noise (mlp1: 0.28 points): two seeds are then truly different models, as split-half checks showed.
- Better or worse: p shifted on the logit scale until the mean moves by the given points.

Each night goes through the project's own decisions, vectorised over the replays: the champion gate
(`tasks.runs.paired.gate_promotes`, what `tasks.runs.champion.decide` promotes by, at --promotion-alpha's default),
the window (`pools_z` of the slot's last WINDOW_NEWER models against the WINDOW_OLDER before them, below
WINDOW_ALPHA, with the champion not shown better: the same gate the other way round) and the alert
(`worse_than_pool_p` against the slot's last ALERT_MODELS models, below ALERT_ALPHA): tasks.runs.history's levels.

    .venv/bin/python benchmarks/nights.py [--replays 200] [--nights 365] [--output nights.md]

tests/unit/test_nights.py replays mlp1 (the architecture with more discordant rows) against the goals.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tasks.runs.history import (ALERT_ALPHA, ALERT_MODELS, KEPT, WINDOW_ALPHA, WINDOW_NEWER,  # noqa: E402
                                WINDOW_OLDER)
from tasks.runs.paired import DEFAULT_ALPHA, gate_promotes, normal_tail, pools_z, worse_than_pool_p  # noqa: E402

ROWS_FILE = Path(__file__).resolve().parent / "results" / "nights_rows.npz"
GRID = np.linspace(0.0, 1.0, 41)
WINDOW = 7  # nights a better challenger has to be promoted in


@dataclass(frozen=True)
class RowModel:
    architecture: str
    p: np.ndarray  # (rows,) float32: each test row's chance to be right
    seed_sd: float  # the real seeds' spread of true accuracy beyond the rows' noise (a fraction)
    real_discordance: float  # mean share of rows two real seeds disagree on


def _npmle(right: np.ndarray, seeds: int, iterations: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Grid weights of p maximising the likelihood of the per-row counts, and the (counts x grid) likelihoods."""
    likelihood = np.array([[math.comb(seeds, k) * g ** k * (1 - g) ** (seeds - k) for g in GRID]
                           for k in range(seeds + 1)])
    counts = np.bincount(right, minlength=seeds + 1)
    weights = np.full(GRID.size, 1 / GRID.size)
    for _ in range(iterations):
        posterior = likelihood * weights
        posterior /= posterior.sum(axis=1, keepdims=True)
        weights = (counts[:, None] * posterior).sum(axis=0) / counts.sum()
    return weights, likelihood


def fit_row_model(architecture: str, rng: np.random.Generator, rows_file: Path = ROWS_FILE) -> RowModel:
    found = np.load(rows_file)
    seeds, right = int(found["seeds"]), found[f"{architecture}_right"].astype(np.int64)
    accuracy = found[f"{architecture}_accuracy"]
    weights, likelihood = _npmle(right, seeds)
    posterior = likelihood[right] * weights
    posterior /= posterior.sum(axis=1, keepdims=True)
    chosen = (rng.random(right.size)[:, None] > posterior.cumsum(axis=1)).sum(axis=1)
    p = GRID[np.minimum(chosen, GRID.size - 1)].astype(np.float32)
    k = right / seeds
    discordance = float(np.mean(2 * k * (1 - k) * seeds / (seeds - 1)))  # unbiased per-row pairwise disagreement
    rows_noise = float(np.sum(p * (1 - p))) / p.size ** 2
    seed_sd = math.sqrt(max(0.0, float(np.var(accuracy, ddof=1)) - rows_noise))
    return RowModel(architecture, p, seed_sd, discordance)


def shifted(p: np.ndarray, points: float) -> np.ndarray:
    """p moved on the logit scale (rows at 0 or 1 stay) until its mean moves by `points` (0.5 = half a point)."""
    inner = (p > 0) & (p < 1)
    logit = np.log(np.where(inner, p, 0.5) / np.where(inner, 1 - p, 0.5))
    low, high = -6.0, 6.0
    for _ in range(60):
        middle = (low + high) / 2
        moved = np.where(inner, 1 / (1 + np.exp(-(logit + middle))), p)
        low, high = (middle, high) if moved.mean() < p.mean() + points / 100 else (low, middle)
    return moved.astype(np.float32)


@dataclass
class Year:
    promotions: np.ndarray  # per replay: promotions of a model no better than the champion
    alerts: np.ndarray  # per replay: regression alerts
    first_promotion: np.ndarray  # per replay: the first night (from the change) a promotion happened, -1 if none
    first_alert: np.ndarray  # per replay: the first night (from the change) an alert fired, -1 if none
    bias: np.ndarray  # per replay at the end: the champion's recorded accuracy minus its true accuracy (a fraction)


def replay(model: RowModel, replays: int, nights: int, rng: np.random.Generator, *, change_at: int | None = None,
           points: float = 0.0, seed_spread: bool = False, alpha: float = DEFAULT_ALPHA) -> Year:
    """`replays` independent series of `nights` nights of one slot. The champion at the start is an unselected
    model (a first champion); the slot's recent models are KEPT unselected nights before the first. Each night
    promotes as tasks.runs.champion does (McNemar against the champion, or the window of the recent models when
    the champion is not shown better) and alerts as tasks.runs.history does. From night `change_at` on, the
    nightly models are `points` better (or worse, negative)."""
    before, after = model.p, shifted(model.p, points) if points else model.p
    spread = model.seed_sd / max(float(np.mean(model.p * (1 - model.p))), 1e-9) if seed_spread else 0.0

    def night(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shift = rng.normal(0.0, spread, (replays, 1)).astype(np.float32) if spread else None
        chance = p if shift is None else np.where((p > 0) & (p < 1), 1 / (1 + (1 / np.maximum(p, 1e-6) - 1) *
                                                                          np.exp(-shift)), p)
        true = np.broadcast_to(chance, (replays, p.size)).mean(axis=1)
        return rng.random((replays, p.size), dtype=np.float32) < chance, true

    champion, champion_true = night(before)
    recent = [night(before)[0] for _ in range(KEPT)]  # the slot's models of the nights before the first
    champion_night = np.full(replays, -KEPT - 1)  # the first champion: older than those
    year = Year(np.zeros(replays, int), np.zeros(replays, int), np.full(replays, -1), np.full(replays, -1),
                np.zeros(replays))
    for t in range(nights):
        changed = change_at is not None and t >= change_at
        tonight, true = night(after if changed else before)
        b, c = (champion & ~tonight).sum(axis=1), (tonight & ~champion).sum(axis=1)
        newer, older = np.stack(recent[-(WINDOW_NEWER - 1):] + [tonight]), np.stack(recent[:-(WINDOW_NEWER - 1)])
        by_window = ((normal_tail(pools_z(newer, older)) < WINDOW_ALPHA) & ~gate_promotes(c, b, alpha)
                     & (champion_night < t - KEPT))  # a champion from within the window: no window promotion
        promoted = gate_promotes(b, c, alpha) | by_window
        alerted = worse_than_pool_p(tonight, np.stack(recent[-ALERT_MODELS:])) < ALERT_ALPHA
        year.promotions += promoted & (true <= champion_true)
        year.alerts += alerted
        if changed:
            since = t - change_at
            year.first_promotion[(year.first_promotion < 0) & promoted] = since
            year.first_alert[(year.first_alert < 0) & alerted] = since
        champion[promoted], champion_true[promoted], champion_night[promoted] = tonight[promoted], true[promoted], t
        recent = recent[1:] + [tonight]
    year.bias = champion.mean(axis=1) - champion_true
    return year


@dataclass(frozen=True)
class Figures:
    architecture: str
    false_promotions: float  # per slot per year, equally good challengers
    false_alerts: float
    bias_points: float  # the champion's recorded minus true accuracy after a year, in points
    better_fresh: float  # +0.5 points: share promoted within WINDOW nights, over a first (unselected) champion
    better_after_year: float  # the same over the champion a year of equal nights left
    drop_alerted: float  # -1.0 point: share alerted on its first night
    spread_false_promotions: float  # with the seeds' own spread: promotions of a truly no-better model per year
    spread_false_alerts: float


def figures(architecture: str, replays: int, nights: int, seed: int = 0) -> Figures:
    rng = np.random.default_rng(seed)
    model = fit_row_model(architecture, rng)
    equal = replay(model, replays, nights, rng)
    fresh = replay(model, replays, WINDOW, rng, change_at=0, points=0.5)
    late = replay(model, replays, nights + WINDOW, rng, change_at=nights, points=0.5)
    drop = replay(model, replays, 1, rng, change_at=0, points=-1.0)
    spread = replay(model, replays, nights, rng, seed_spread=True)
    scale = 365 / nights
    return Figures(architecture, float(equal.promotions.mean() * scale), float(equal.alerts.mean() * scale),
                   float(100 * equal.bias.mean()), float(np.mean(fresh.first_promotion >= 0)),
                   float(np.mean(late.first_promotion >= 0)), float(np.mean(drop.first_alert == 0)),
                   float(spread.promotions.mean() * scale), float(spread.alerts.mean() * scale))


def _verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def markdown(results: list[Figures], replays: int, nights: int, machine: str) -> str:
    lines = [f"# A year of nights, simulated", "", f"Machine: {machine}",
             f"`benchmarks/nights.py --replays {replays} --nights {nights}`: {replays} replays of {nights} nights per "
             f"slot, rows from `results/nights_rows.npz` (20 real seeds each), decisions by the project's gate "
             f"(McNemar exact one-sided, alpha {DEFAULT_ALPHA}; or the last {WINDOW_NEWER} models against the "
             f"{WINDOW_OLDER} before them, p < {WINDOW_ALPHA}) and alert (last {ALERT_MODELS} models, p < "
             f"{ALERT_ALPHA}).", "",
             "| architecture | false promotions / slot / year | false alerts / slot / year | champion's recorded − true "
             "accuracy after a year (points) | +0.5 points promoted within 7 nights (first champion) | +0.5 points "
             "promoted within 7 nights (after a year) | −1.0 point alerted on its first night | with the seeds' "
             "spread: promotions of a no-better model / year | with the seeds' spread: alerts / year |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in results:
        lines.append(f"| {f.architecture} | {f.false_promotions:.2f} | {f.false_alerts:.2f} | {f.bias_points:+.2f} | "
                     f"{100 * f.better_fresh:.0f} % | {100 * f.better_after_year:.0f} % | {100 * f.drop_alerted:.0f} % "
                     f"| {f.spread_false_promotions:.2f} | {f.spread_false_alerts:.2f} |")
    worst = lambda name, pick: pick(getattr(f, name) for f in results)  # noqa: E731
    lines += ["", "Goals (issue 27), on the worst architecture:", "",
              f"- ≤ 1 false promotion per slot per year: {worst('false_promotions', max):.2f} — "
              f"{_verdict(worst('false_promotions', max) <= 1)}",
              f"- ≤ 1 false regression alert per slot per year: {worst('false_alerts', max):.2f} — "
              f"{_verdict(worst('false_alerts', max) <= 1)}",
              f"- +0.5 points promoted within 7 nights in ≥ 80 %: {100 * worst('better_fresh', min):.0f} % over a "
              f"first champion — {_verdict(worst('better_fresh', min) >= 0.8)}; "
              f"{100 * worst('better_after_year', min):.0f} % over a champion a year old — "
              f"{_verdict(worst('better_after_year', min) >= 0.8)}",
              f"- a drop of 1.0 point alerted on its first night in ≥ 90 %: {100 * worst('drop_alerted', min):.0f} % "
              f"— {_verdict(worst('drop_alerted', min) >= 0.9)}",
              f"- the champion's recorded accuracy within 0.1 point of its true accuracy after a year: "
              f"{worst('bias_points', max):+.2f} points — {_verdict(worst('bias_points', max) <= 0.1)} (stated in "
              f"the README)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--output", default="nights.md")
    args = parser.parse_args()
    from common import machine, write_result

    results = [figures(arch, args.replays, args.nights) for arch in ("baseline", "mlp1")]
    text = markdown(results, args.replays, args.nights, machine())
    print(text)
    print(f"written to {write_result(args.output, text)}")


if __name__ == "__main__":
    main()
