"""tasks.runs.paired: McNemar's exact test, the paired and independent standard errors, and the per-image outcomes
a tested model records (issue 17, section 1). Known values are worked out by hand in each test's comment, or from
a second, independent computation (a direct sum of binomial coefficients, numpy's std of the per-row differences).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from tasks.runs.paired import (Outcomes, OutcomesError, binomial_upper_tail, independent_standard_error, mcnemar_p,
                               outcomes_match_accuracy, outcomes_record, paired, paired_standard_error,
                               read_outcomes, rows_sha256)


def test_exact_tails_by_hand():
    # b = 0, c = 5: all 5 discordant rows went to B: P(C >= 5 | n = 5) = 1/32; two-sided twice that.
    assert mcnemar_p(0, 5, "greater") == 1 / 32 and mcnemar_p(0, 5) == 2 / 32
    # b = 1, c = 9: P(C >= 9 | n = 10) = (C(10,9) + C(10,10)) / 1024 = 11/1024.
    assert mcnemar_p(1, 9, "greater") == 11 / 1024 and mcnemar_p(1, 9) == 22 / 1024
    assert mcnemar_p(9, 1) == mcnemar_p(1, 9)  # two-sided: symmetric
    assert mcnemar_p(9, 1, "greater") == 1 - 1 / 1024  # B better? Only 1 of 10 rows went to B
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(0, 0, "greater") == 1.0  # no discordant row: no evidence
    assert mcnemar_p(7, 7) == 1.0  # a tie is never beyond noise


@pytest.mark.parametrize("n", [1, 2, 7, 20, 61])
def test_the_tail_recurrence_equals_a_direct_sum_of_binomial_coefficients(n):
    for k in range(n + 2):
        direct = Fraction(sum(math.comb(n, i) for i in range(k, n + 1)), 2 ** n)
        assert binomial_upper_tail(k, n) == pytest.approx(float(direct), rel=1e-12, abs=0)


def test_large_counts_agree_with_the_normal_approximation_and_stay_finite():
    # b = 300, c = 372 (672 discordant rows, the size two mlp1 seeds differ by): z = (|c - b| - 1) / sqrt(672) = 2.739,
    # two-sided normal p = 0.00617; the exact p is within a few percent of it.
    assert mcnemar_p(300, 372) == pytest.approx(math.erfc(71 / math.sqrt(672) / math.sqrt(2)), rel=0.05)
    assert 0 <= mcnemar_p(0, 5000) < 1e-300 or mcnemar_p(0, 5000) == 0.0  # 2^-5000 underflows, never raises
    assert mcnemar_p(5000, 5000) == 1.0


def test_an_equal_challenger_passes_the_one_sided_test_at_most_alpha_of_the_time():
    """The exact test's size: for every number of discordant rows, P(reject | B as good as A) <= alpha."""
    for n in range(1, 400):
        rejected = sum(math.comb(n, c) for c in range(n + 1) if mcnemar_p(n - c, c, "greater") < 0.05) / 2 ** n
        assert rejected <= 0.05, n


def test_the_paired_standard_error_is_that_of_the_per_row_differences():
    # 10,000 rows: 300 only A right (-1), 372 only B right (+1), the rest 0.
    differences = np.zeros(10_000)
    differences[:300], differences[300:672] = -1, 1
    expected = differences.std() / math.sqrt(differences.size)  # numpy's population std, sqrt(var / n)
    assert paired_standard_error(300, 372, 10_000) == pytest.approx(expected, rel=1e-12)
    # By hand: mean 0.0072, variance 0.0672 - 0.0072^2 = 0.06714816, SE sqrt(0.06714816 / 10,000) = 0.0025913.
    assert paired_standard_error(300, 372, 10_000) == pytest.approx(0.0025913, abs=1e-7)
    assert paired_standard_error(0, 0, 10_000) == 0.0


def test_the_independent_standard_error():
    assert independent_standard_error(0.90, 10_000, 0.91, 10_000) == pytest.approx(
        math.sqrt((0.9 * 0.1 + 0.91 * 0.09) / 10_000))
    assert independent_standard_error(0.9, 1_000, 0.9, 10_000) == pytest.approx(math.sqrt(0.09 / 1000 + 0.09 / 10_000))


def test_outcomes_survive_their_record_and_pair_into_b_and_c():
    rng = np.random.default_rng(0)
    a = rng.random(10_000) < 0.9
    b = a.copy()
    b[:40] = ~b[:40]  # rows 0-39 flipped: where A was right B is wrong, and the other way round
    digest = "f" * 64
    record = outcomes_record(a, digest)
    assert record["rows"] == 10_000 and record["correct_count"] == int(a.sum())
    assert len(record["correct"]) == 4 * math.ceil(1250 / 3)  # 1,250 packed bytes in base64: 1,668 characters
    back = read_outcomes(record)
    assert np.array_equal(back.correct, a) and back.rows_sha256 == digest and back.same_rows(Outcomes(digest, b))
    pair = paired(back, Outcomes(digest, b))
    assert pair.b == int(a[:40].sum()) and pair.c == 40 - pair.b and pair.delta == (pair.c - pair.b) / 10_000
    assert outcomes_match_accuracy(back, float(a.mean())) and not outcomes_match_accuracy(back, a.mean() + 0.001)


def test_different_rows_are_never_paired():
    mask = np.ones(100, bool)
    with pytest.raises(ValueError, match="not the same test rows"):
        paired(Outcomes("a" * 64, mask), Outcomes("b" * 64, mask))
    with pytest.raises(ValueError, match="not the same test rows"):
        paired(Outcomes("a" * 64, mask), Outcomes("a" * 64, mask[:99]))


def test_the_rows_identity_is_their_content_and_order():
    images = np.arange(3 * 784, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([1, 2, 3])
    assert rows_sha256(images, labels) == rows_sha256(images.reshape(3, 784).copy(), labels.astype(np.int64))
    assert rows_sha256(images[::-1], labels[::-1]) != rows_sha256(images, labels)
    assert rows_sha256(images[:2], labels[:2]) != rows_sha256(images, labels)
    assert rows_sha256(images, np.array([1, 2, 4])) != rows_sha256(images, labels)


@pytest.mark.parametrize(("change", "problem"), [
    ({"correct": "not base64!"}, "not valid base64"),
    ({"correct": "AAAA"}, "holds 3 bytes, 2 expected"),
    ({"correct_count": 3}, "'correct_count' says 3"),
    ({"rows": 0}, "'rows' is not a positive whole number"),
    ({"rows_sha256": ""}, "'rows_sha256' is missing"),
    ({"encoding": "bits"}, "'encoding' is 'bits'"),
])
def test_a_damaged_record_is_an_error_saying_what_is_off(change, problem):
    record = {**outcomes_record(np.array([True] * 9 + [False]), "d" * 64), **change}
    with pytest.raises(OutcomesError, match=problem):
        read_outcomes(record)
    assert read_outcomes(None) is None  # a model tested before outcomes were recorded: no error


@pytest.fixture(scope="module")
def small_arrays(raw_dataset):
    return {"train": (raw_dataset.train_images[:1000], raw_dataset.train_labels[:1000]),
            "test": (raw_dataset.test_images[:500], raw_dataset.test_labels[:500])}


def test_evaluate_records_which_test_rows_the_model_got_right(small_arrays):
    """The trainer's own evaluate: the bits are the model's argmax against the labels, and the identity is that of
    the uint8 rows it was given (so a run's record pairs with any other run on the same rows)."""
    import keras

    from tasks.model.architectures import build_model
    from tasks.model.training import evaluate, trial_data

    keras.utils.set_random_seed(0)
    model = build_model("baseline")
    data = trial_data(small_arrays, 0.2, model.input_shape[1:])
    result = evaluate(model, data)
    outcomes = read_outcomes(result["test_outcomes"])
    predicted = model.predict(data.x_test, verbose=0).argmax(1)
    assert np.array_equal(outcomes.correct, predicted == data.test_labels)
    assert outcomes.accuracy == result["test_accuracy"]
    assert outcomes.rows_sha256 == rows_sha256(*small_arrays["test"])
