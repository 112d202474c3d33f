"""Two models scored on the same test rows, compared as the pairs they are (issue 17, sections 1 and 2).

Every tested model records which test rows it got right (`test_outcomes` in its metrics.json: one bit per row,
numpy packbits, base64) and the identity of those rows (a SHA-256 of their pixels and labels), so that two records
are known to describe the same rows. Two models on the same rows differ only on the rows one got right and the
other wrong: b (only A right) and c (only B right). On them:

- McNemar's exact test: under "A and B are equally accurate" each discordant row is a fair coin, so c ~ Bin(b + c,
  1/2). Exact binomial tails in integers (no scipy in the project's lock): a p-value never rests on a normal
  approximation, which is poor for small b + c.
- The paired standard error of B − A, from the per-row differences (−1, 0, +1). Both runs see the same hard
  images, so it is about half the independent-samples one (issue 17: 0.255 against 0.510 points for two mlp1 seeds).
- The independent-samples SE, sqrt(p1 q1 / n1 + p2 q2 / n2), for runs tested on different rows or recorded before
  outcomes were (it is the only honest figure there).

Pure: no I/O; numpy only to pack and unpack the bits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

OUTCOMES_FIELD = "test_outcomes"  # the key in metrics.json (and in a champion's entry)
ENCODING = "packbits-big-base64"  # np.packbits(correct, bitorder="big"), base64; row i is bit i
DEFAULT_ALPHA = 0.05  # "beyond noise" in `fmnist runs compare`, and the champion gate's default level
Alternative = Literal["two-sided", "greater"]


class OutcomesError(ValueError):
    """A test_outcomes record that is there but cannot be read (its words say what is off, not which file)."""


# --- the record ---------------------------------------------------------------------------------------------------

def rows_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """The identity of a set of test rows, in order: SHA-256 of their uint8 pixels, then their labels as uint8.
    Two runs tested on the first N rows of the same Fashion-MNIST get the same digest whatever the dataset
    version's shard layout; a different N, order or content gets another."""
    digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def outcomes_record(correct: np.ndarray, rows_digest: str) -> dict[str, Any]:
    """What metrics.json stores: 10,000 rows are 1,250 bytes packed, 1,668 characters of base64."""
    bits = np.asarray(correct, dtype=bool).ravel()
    return {"rows": int(bits.size), "rows_sha256": rows_digest, "correct_count": int(bits.sum()),
            "encoding": ENCODING, "correct": base64.b64encode(np.packbits(bits, bitorder="big").tobytes()).decode()}


@dataclass(frozen=True)
class Outcomes:
    """Which test rows one model got right, and which rows those were."""

    rows_sha256: str
    correct: np.ndarray  # bool, one per test row, in the test set's order

    @property
    def rows(self) -> int:
        return int(self.correct.size)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct.size else 0.0

    def same_rows(self, other: "Outcomes") -> bool:
        return self.rows == other.rows and self.rows_sha256 == other.rows_sha256


def _decoded_bits(text: Any, rows: int) -> np.ndarray:
    if not isinstance(text, str):
        raise OutcomesError("'correct' is not a base64 string")
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise OutcomesError("'correct' is not valid base64") from None
    if len(packed) != math.ceil(rows / 8):
        raise OutcomesError(f"'correct' holds {len(packed)} bytes, {math.ceil(rows / 8)} expected for {rows} rows")
    return np.unpackbits(np.frombuffer(packed, np.uint8), count=rows, bitorder="big").astype(bool)


def read_outcomes(record: Any) -> Outcomes | None:
    """The record's outcomes; None when there is none (a model tested before they were recorded); OutcomesError
    when it is there but damaged or disagrees with itself (so a hand-edited or cut record is never paired)."""
    if record is None:
        return None
    if not isinstance(record, dict):
        raise OutcomesError(f"is {type(record).__name__}, expected an object")
    rows, digest = record.get("rows"), record.get("rows_sha256")
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise OutcomesError("'rows' is not a positive whole number")
    if not isinstance(digest, str) or not digest:
        raise OutcomesError("'rows_sha256' is missing")
    if record.get("encoding", ENCODING) != ENCODING:
        raise OutcomesError(f"'encoding' is {record.get('encoding')!r}, expected {ENCODING!r}")
    correct = _decoded_bits(record.get("correct"), rows)
    count = record.get("correct_count")
    if count is not None and count != int(correct.sum()):
        raise OutcomesError(f"'correct' has {int(correct.sum())} rows set, 'correct_count' says {count}")
    return Outcomes(digest, correct)


def outcomes_match_accuracy(outcomes: Outcomes, accuracy: float) -> bool:
    """The bits agree with the accuracy recorded beside them (to a whole row): a mask copied onto another model's
    record, or an accuracy edited by hand, is not paired."""
    return int(outcomes.correct.sum()) == round(accuracy * outcomes.rows)


# --- the statistics -----------------------------------------------------------------------------------------------

def binomial_upper_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Bin(n, 1/2), exact: the sum of C(n, i) for i >= k, in integers, over 2^n. Each term comes
    from the last (C(n, i+1) = C(n, i) (n - i) / (i + 1)), so n of 10,000 costs milliseconds."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    term = math.comb(n, k)
    total = 0
    for i in range(k, n + 1):
        total += term
        term = term * (n - i) // (i + 1)
    return total / 2 ** n  # int / int: correctly rounded even for numbers past a float's range


def mcnemar_p(b: int, c: int, alternative: Alternative = "two-sided") -> float:
    """McNemar's exact test on b rows only A got right and c rows only B got right.
    'two-sided': A and B differ; twice the smaller tail, at most 1. 'greater': B is better than A, P(C >= c)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, found b={b}, c={c}")
    n = b + c
    if alternative == "greater":
        return binomial_upper_tail(c, n)
    if alternative != "two-sided":
        raise ValueError(f"alternative {alternative!r}: expected 'two-sided' or 'greater'")
    return min(1.0, 2 * binomial_upper_tail(max(b, c), n))


@lru_cache(maxsize=None)
def promotion_threshold(discordant: int, alpha: float) -> int:
    """The fewest rows c (of b + c = `discordant`) the challenger alone must get right for McNemar's exact one-sided
    p = P(C >= c) to fall below alpha; discordant + 1 when no c does. The tail falls as c grows: a bisection."""
    low, high = 0, discordant + 1  # P(C >= high) = 0 < alpha; find the least c with P(C >= c) < alpha
    while low < high:
        middle = (low + high) // 2
        if binomial_upper_tail(middle, discordant) < alpha:
            high = middle
        else:
            low = middle + 1
    return low


def gate_promotes(b: Any, c: Any, alpha: float) -> Any:
    """The champion gate on discordant counts (ints, or numpy arrays of them: the simulated nights of
    benchmarks/nights.py decide through this same function): McNemar's exact one-sided p < alpha."""
    if np.ndim(b) == 0:
        return bool(c >= promotion_threshold(int(b) + int(c), alpha))
    thresholds = np.vectorize(lambda n: promotion_threshold(int(n), alpha), otypes=[np.int64])(np.add(b, c))
    return np.asarray(c) >= thresholds


def pools_z(newer: np.ndarray, older: np.ndarray) -> Any:
    """How far the models of `newer` are ahead of the models of `older` on the same rows, in standard errors: the
    per-row difference d = X/J - Y/K between their mean outcomes (X of J newer models right, Y of K older), its
    mean over the rows against its standard error. `newer`: (J, ..., rows) bool; `older`: (K, ..., rows) bool;
    none of them selected on these rows. The same rows' noise is shared, so the standard error is the paired one
    (about half the independent one), and each pool's own share shrinks as 1/J, 1/K. Sums of small integers
    (X, Y, XY, X², Y²), so a year of simulated nights (benchmarks/nights.py) replays in seconds."""
    newer, older = np.asarray(newer, dtype=bool), np.asarray(older, dtype=bool)
    j, k, rows = newer.shape[0], older.shape[0], newer.shape[-1]
    small = np.uint8 if max(j, k) ** 2 <= 255 else np.int32  # X², XY, Y² fit: a quarter of the memory traffic
    x, y = newer.sum(axis=0, dtype=small), older.sum(axis=0, dtype=small)

    def total_of(values: np.ndarray) -> np.ndarray:
        return values.sum(axis=-1, dtype=np.int64)

    total = total_of(x) / j - total_of(y) / k  # the sum of d
    squares = total_of(x * x) / j**2 - 2 * total_of(x * y) / (j * k) + total_of(y * y) / k**2
    variance = np.maximum((squares - total**2 / rows) / (rows - 1), 1e-24)
    z = (total / rows) / np.sqrt(variance / rows)
    return float(z) if np.ndim(z) == 0 else z


def normal_tail(z: Any) -> Any:
    """P(Z >= z) for a standard normal, for a number or an array."""
    p = np.vectorize(lambda v: 1.0 - NormalDist().cdf(v), otypes=[np.float64])(z)
    return float(p) if np.ndim(p) == 0 else p


def worse_than_pool_p(correct: np.ndarray, pool: np.ndarray) -> Any:
    """One-sided p for "this model is worse than the models of `pool`" on the same rows (`pools_z` of the one model
    against the pool). `correct`: (..., rows) bool; `pool`: (K, ..., rows) bool."""
    return normal_tail(-pools_z(np.asarray(correct, dtype=bool)[None], pool))


def paired_standard_error(b: int, c: int, rows: int) -> float:
    """SE of B − A in accuracy (a fraction) on the same `rows` rows: the per-row difference is +1 on c rows, −1 on
    b rows, 0 elsewhere; its variance is (b + c)/n − ((c − b)/n)², and the SE of its mean is sqrt(variance / n)."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, found {rows}")
    mean = (c - b) / rows
    return math.sqrt(max(0.0, (b + c) / rows - mean * mean) / rows)


def independent_standard_error(p1: float, n1: int, p2: float, n2: int) -> float:
    """SE of p2 − p1 for two independent samples: sqrt(p1 (1 − p1) / n1 + p2 (1 − p2) / n2)."""
    return math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)


@dataclass(frozen=True)
class Paired:
    """A against B on the same rows: b rows only A got right, c rows only B got right."""

    b: int
    c: int
    rows: int

    @property
    def delta(self) -> float:
        """B − A in accuracy (a fraction)."""
        return (self.c - self.b) / self.rows

    @property
    def standard_error(self) -> float:
        return paired_standard_error(self.b, self.c, self.rows)

    def p_value(self, alternative: Alternative = "two-sided") -> float:
        return mcnemar_p(self.b, self.c, alternative)


def paired(a: Outcomes, b: Outcomes) -> Paired:
    """The discordant counts of two models on the same rows; ValueError if the rows are not the same."""
    if not a.same_rows(b):
        raise ValueError(f"not the same test rows ({a.rows} rows {a.rows_sha256[:12]}…, "
                         f"{b.rows} rows {b.rows_sha256[:12]}…)")
    return Paired(int((a.correct & ~b.correct).sum()), int((b.correct & ~a.correct).sum()), a.rows)
