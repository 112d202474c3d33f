"""How often the champion gate promotes a challenger that is no better than the champion (issue 17, section 2).

Trains each architecture given with the project's trainer (tasks.model.training: the seed protocol's split, the
per-epoch order, `fit_epochs`, `evaluate`; no Ray, nothing written to a store) under seeds 0..k-1 with the report's
recipe, each model tested on all 10,000 test rows, and keeps which rows each got right. Then every ordered pair
(champion, challenger) goes through the project's own `tasks.runs.champion.decide` twice:

- the McNemar gate: both entries carry their per-image outcomes (what a run writes now; `--promotion-alpha`);
- the old margin rule: the champion's entry without outcomes, as in a pointer written before them, so `decide`
  falls back to `--promotion-margin`.

Two kinds of "equal" challenger, both from the real masks:

1. Exchangeable: for a pair of real masks, each row that exactly one of the two got right is given to one of them
   by a fair coin (rows both or neither got right stay). Champion and challenger are then equally accurate by
   construction, with the real number of discordant rows: the false-promotion rate the gate is designed to bound.
2. Another seed of the same recipe, as trained. Equal in expectation over seeds, but each trained model has its own
   true accuracy: the split-half check (each model's accuracy on test rows 0-4,999 against rows 5,000-9,999, across
   seeds) says how much of the seed-to-seed spread is the models and not the test rows.

Pairs share models (each seed is in 2 (k - 1) ordered pairs), so a count is not that many independent trials; the
"expected" column is each rule's rate given the pairs' discordant counts if the two were equal (the exact test's
size; for the margin, the normal tail at the pair's paired SE). Last, each model of the best architecture given
challenges each model of the worst: the gate must still promote a clearly better model.

    .venv/bin/python benchmarks/champion_gate.py [--models baseline:10,mlp1:6] [--seeds 20] [--masks FILE]
        [--output champion_gate.md]

Masks are kept in FILE-<architecture>-<epochs>e.npz (FILE defaults to one in the system's temporary folder): run
again with the same FILE to recompute the figures without training.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, write_result  # noqa: E402

SWAPS_PER_PAIR = 5  # exchangeable challengers drawn per ordered pair
SLOT = "bench"  # the architecture both sides of a pair are entered as: one slot, whatever their layers


@dataclass(frozen=True)
class Models:
    architecture: str
    epochs: int
    masks: np.ndarray  # (seeds, rows) bool
    rows_sha256: str
    seconds: np.ndarray

    @property
    def accuracies(self) -> np.ndarray:
        return self.masks.mean(1)


# --- training: the project's trainer, one model per seed ---------------------------------------------------------

def train_masks(architecture: str, seeds: list[int], epochs: int, arrays: dict) -> Models:
    from tasks.model.architectures import ARCHITECTURES
    from tasks.model.recipes import report_recipe
    from tasks.model.spec import TrialSpec
    from tasks.model.training import evaluate, fit_epochs, seed_protocol_split, starting_state, trial_data
    from tasks.runs.paired import OUTCOMES_FIELD, read_outcomes

    split = ARCHITECTURES[architecture].validation_split
    masks, seconds, digest = [], [], ""
    for seed in seeds:
        started = time.perf_counter()
        spec = TrialSpec(run_id="bench", experiment="tune", dataset_version="bench", store="memory",
                         architecture=architecture, recipe=report_recipe(epochs=epochs), seed=seed, patience=epochs,
                         steps_per_execution=32, eval_batch_size=1024, cpus_per_trial=1)
        model, _, _ = starting_state(spec, None, seed_protocol_split(len(arrays["train"][0]), split))
        data = trial_data(arrays, split, model.input_shape[1:])
        fit_epochs(model, data, spec, 0, None, lambda row, state: None)
        outcomes = read_outcomes(evaluate(model, data)[OUTCOMES_FIELD])
        masks.append(outcomes.correct)
        digest = outcomes.rows_sha256
        seconds.append(time.perf_counter() - started)
        print(f"{architecture} seed {seed}: {100 * outcomes.accuracy:.2f}% in {seconds[-1]:.1f} s", flush=True)
    return Models(architecture, epochs, np.array(masks), digest, np.array(seconds))


def load_or_train(cache: str, architecture: str, epochs: int, seeds: int, arrays) -> Models:
    """The cached masks when there are enough, else trained now and cached."""
    path = Path(f"{cache}-{architecture}-{epochs}e.npz")
    if path.exists():
        found = np.load(path, allow_pickle=False)
        if len(found["masks"]) >= seeds:
            print(f"masks of {architecture} ({epochs} epochs) from {path}", flush=True)
            return Models(architecture, epochs, found["masks"][:seeds], str(found["rows_sha256"]),
                          found["seconds"][:seeds])
    models = train_masks(architecture, list(range(seeds)), epochs, arrays())
    np.savez_compressed(path, architecture=architecture, epochs=epochs, masks=models.masks,
                        rows_sha256=models.rows_sha256, seconds=models.seconds)
    return models


# --- the gate, through decide() -------------------------------------------------------------------------------------

def metrics_of(architecture: str, mask: np.ndarray, digest: str) -> dict:
    """A metrics.json as a run's trial writes it, as far as decide() reads it."""
    from tasks.runs.paired import OUTCOMES_FIELD, outcomes_record

    return {"architecture": architecture, "test_accuracy": float(mask.mean()), "rows": {"test": int(mask.size)},
            "model_sha256": "0" * 64, "dataset_version": "bench", "recipe_name": "report",
            OUTCOMES_FIELD: outcomes_record(mask, digest)}


def promoted(champion: np.ndarray, challenger: np.ndarray, digest: str, args: argparse.Namespace,
             with_outcomes: bool) -> bool:
    """Whether decide() promotes the challenger into the champion's slot (the same architecture's, report family)."""
    from tasks.runs.champion import decide
    from tasks.runs.paired import OUTCOMES_FIELD

    pointer, _ = decide({}, "champion-run", {SLOT: metrics_of(SLOT, champion, digest)}, args.margin, args.alpha)
    if not with_outcomes:  # a pointer written before outcomes were recorded
        for entry in [*pointer["architectures"].values(), pointer["overall"]]:
            entry.pop(OUTCOMES_FIELD, None)
    _, decisions = decide(pointer, "challenger-run", {SLOT: metrics_of(SLOT, challenger, digest)}, args.margin,
                          args.alpha)
    return decisions[0].promoted


def exchangeable(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two equally accurate models with a's and b's discordant rows: each such row goes to one of them by a coin."""
    discordant = a != b
    to_first = rng.random(a.size) < 0.5
    first = np.where(discordant, to_first, a)
    second = np.where(discordant, ~to_first, b)
    return first, second


def exact_size(n: int, alpha: float) -> float:
    """P(the one-sided exact McNemar test rejects at alpha | b + c = n, the two equal)."""
    from tasks.runs.paired import binomial_upper_tail

    critical = next((c for c in range(n + 1) if binomial_upper_tail(c, n) < alpha), None)
    return 0.0 if critical is None else binomial_upper_tail(critical, n)


def normal_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class Rates:
    pairs: int
    gate: int
    margin: int
    gate_expected: float
    margin_expected: float


def rates(models: Models, args: argparse.Namespace, swap: bool) -> Rates:
    """Each rule's promotions over the ordered pairs of seeds; `swap`: exchangeable challengers drawn from them."""
    from tasks.runs.champion import margin_rows
    from tasks.runs.paired import Outcomes, paired

    rng = np.random.default_rng(args.swap_seed)
    draws = []
    for i, j in itertools.permutations(range(len(models.masks)), 2):
        a, b = models.masks[i], models.masks[j]
        draws += [exchangeable(a, b, rng) for _ in range(SWAPS_PER_PAIR)] if swap else [(a, b)]
    digest = models.rows_sha256
    stats = [paired(Outcomes(digest, a), Outcomes(digest, b)) for a, b in draws]
    needed = margin_rows(args.margin, models.masks.shape[1]) / models.masks.shape[1]
    return Rates(len(draws),
                 sum(promoted(a, b, digest, args, True) for a, b in draws),
                 sum(promoted(a, b, digest, args, False) for a, b in draws),
                 statistics.mean(exact_size(p.b + p.c, args.alpha) for p in stats),
                 statistics.mean(normal_tail((needed - 0.5 / p.rows) / p.standard_error) for p in stats))


def split_half_r(models: Models) -> float:
    """Correlation across seeds of each model's accuracy on the first and the second half of the test rows: about 0
    if the seeds' differences were test-row noise, near 1 if the models truly differ."""
    half = models.masks.shape[1] // 2
    return float(np.corrcoef(models.masks[:, :half].mean(1), models.masks[:, half:].mean(1))[0, 1])


def power(weak: Models, strong: Models, args: argparse.Namespace) -> tuple[int, int, float]:
    """(promoted, pairs, mean gain in points): each model of `strong` challenging each model of `weak`."""
    pairs = [(a, b) for a in weak.masks for b in strong.masks]
    wins = sum(promoted(a, b, weak.rows_sha256, args, True) for a, b in pairs)
    return wins, len(pairs), float(statistics.mean(100 * (b.mean() - a.mean()) for a, b in pairs))


# --- the report -----------------------------------------------------------------------------------------------------

def _row(kind: str, rule: str, promoted_count: int, pairs: int, expected: float) -> str:
    return f"| {kind} | {rule} | {promoted_count} of {pairs} | {100 * promoted_count / pairs:.1f}% | {100 * expected:.1f}% |"


def section(models: Models, args: argparse.Namespace, swapped: Rates, seeds: Rates) -> list[str]:
    from tasks.runs.paired import Outcomes, paired

    acc = 100 * models.accuracies
    stats = [paired(Outcomes(models.rows_sha256, a), Outcomes(models.rows_sha256, b))
             for a, b in itertools.combinations(models.masks, 2)]
    independent = statistics.mean(math.sqrt(2 * p * (1 - p) / models.masks.shape[1]) for p in models.accuracies)
    margin = f"old margin rule ({args.margin:g} = {round(args.margin * models.masks.shape[1])} rows)"
    gate = f"McNemar gate (one-sided exact, p < {args.alpha:g})"
    return [
        f"## {models.architecture}, {models.epochs} epochs",
        "",
        f"The report's recipe for {models.epochs} epochs on all 60,000 train rows, seeds 0-{len(acc) - 1}, "
        f"{statistics.mean(models.seconds):.1f} s per model: test accuracy {acc.min():.2f}-{acc.max():.2f}% (mean "
        f"{acc.mean():.2f}%, sd {acc.std(ddof=1):.2f}). Between two seeds: "
        f"{statistics.mean(p.b + p.c for p in stats):.0f} discordant rows on average, |Δ| "
        f"{statistics.mean(abs(p.delta) for p in stats) * 100:.2f} points, paired SE "
        f"{100 * statistics.mean(p.standard_error for p in stats):.3f} points against the independent-samples SE "
        f"{100 * independent:.3f}. Split-half correlation of the seeds' accuracies: r = {split_half_r(models):.2f}.",
        "",
        "| challenger | rule | promoted | rate | expected if equal |",
        "|---|---|---:|---:|---:|",
        _row(f"equal (exchangeable, {SWAPS_PER_PAIR} draws per ordered pair)", gate, swapped.gate, swapped.pairs,
             swapped.gate_expected),
        _row(f"equal (exchangeable, {SWAPS_PER_PAIR} draws per ordered pair)", margin, swapped.margin, swapped.pairs,
             swapped.margin_expected),
        _row("another seed, same recipe", gate, seeds.gate, seeds.pairs, seeds.gate_expected),
        _row("another seed, same recipe", margin, seeds.margin, seeds.pairs, seeds.margin_expected),
        "",
    ]


def reading(groups: list[Models], found: list[tuple[Rates, Rates]]) -> list[str]:
    """What the tables say, from their own figures."""
    swapped = [f"{100 * s.gate / s.pairs:.1f}%" for s, _ in found]
    margins = [f"{100 * s.margin / s.pairs:.1f}%" for s, _ in found]
    seeds = [f"{100 * d.gate / d.pairs:.1f}%" for _, d in found]
    rs = [f"{split_half_r(m):.2f}" for m in groups]
    names = " and ".join(m.architecture for m in groups)
    return [
        "**Reading.** An equal challenger (exchangeable: the same accuracy by construction, the real number of "
        f"discordant rows) is promoted by the McNemar gate in {' and '.join(swapped)} of the draws ({names}), "
        "matching the exact test's size in the last column (at most alpha for every b + c), against "
        f"{' and '.join(margins)} under the old margin. Another seed of the same recipe is promoted in "
        f"{' and '.join(seeds)} of the pairs: more than alpha, because two seeds are two models whose accuracies "
        f"truly differ (split-half r = {' and '.join(rs)}: a seed that is ahead on one half of the test rows tends "
        "to be ahead on the other), and the gate asks whether this model is better than that one, which for the "
        "luckier seed is often true. Keeping a luckier seed of the same recipe out as well would need the seeds' "
        "own spread (several seeds per recipe, as `fmnist search` retrains its winners), not a test on one pair.",
        ""]


def report(args: argparse.Namespace, groups: list[Models]) -> str:
    lines = ["# Champion gate: how often an equal challenger is promoted", "", f"Machine: {machine()}",
             f"`benchmarks/champion_gate.py --models {args.models} --seeds {args.seeds}`; models trained with the "
             "project's trainer (`fit_epochs`, `evaluate`), one CPU thread, each tested on all 10,000 test rows; "
             "every decision made by `tasks.runs.champion.decide`.", ""]
    found = []
    for models in groups:
        swapped, seeds = rates(models, args, swap=True), rates(models, args, swap=False)
        found.append((swapped, seeds))
        lines += section(models, args, swapped, seeds)
    lines += reading(groups, found)
    if len(groups) > 1:
        weak, strong = sorted(groups, key=lambda m: m.accuracies.mean())[::len(groups) - 1]
        wins, pairs, gain = power(weak, strong, args)
        lines += [f"A clearly better challenger: each {strong.architecture} model against each {weak.architecture} "
                  f"champion, {gain:+.2f} points on average: the gate promoted {wins} of {pairs}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="baseline:10,mlp1:6", help="ARCH:EPOCHS, comma-separated")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--margin", type=float, default=0.002)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--swap-seed", type=int, default=0, help="seed of the exchangeable challengers' coins")
    parser.add_argument("--masks", default=os.path.join(tempfile.gettempdir(), "fmnist-champion-gate"))
    parser.add_argument("--output", default="champion_gate.md")
    args = parser.parse_args()
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")  # one core: the machine is shared

    @functools.cache
    def arrays() -> dict:
        from tasks.data.dataset import fetch_dataset
        from tasks.model.training import configure_backend

        configure_backend(1)
        raw = fetch_dataset()
        return {"train": (raw.train_images, raw.train_labels), "test": (raw.test_images, raw.test_labels)}

    groups = []
    for item in args.models.split(","):
        architecture, _, epochs = item.partition(":")
        groups.append(load_or_train(args.masks, architecture, int(epochs or 6), args.seeds, arrays))
    text = report(args, groups)
    print(text)
    print("written to", write_result(args.output, text))


if __name__ == "__main__":
    main()
