"""A year of nights in seconds (issue 27): mlp1's row model (fitted to 20 real seeds' masks) replayed 200 times over
365 nights through the project's gate and alert (benchmarks/nights.py; its figures for both architectures, and the
goals it misses, in benchmarks/results/nights.md)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import nights  # noqa: E402

REPLAYS, NIGHTS = 200, 365


@pytest.fixture(scope="module")
def mlp1():
    return nights.fit_row_model("mlp1", np.random.default_rng(0))


def test_the_row_model_matches_the_real_seeds_disagreement(mlp1):
    rng = np.random.default_rng(1)
    a, b = (rng.random((50, mlp1.p.size), dtype=np.float32) < mlp1.p for _ in range(2))
    assert abs((a != b).mean() - mlp1.real_discordance) < 0.003  # 6.0 % of rows for two real mlp1 seeds
    assert abs(float(nights.shifted(mlp1.p, 0.5).mean() - mlp1.p.mean()) - 0.005) < 1e-4


def test_a_year_of_equally_good_nights_then_a_better_recipe(mlp1):
    """365 nights of equally good models (at most one false promotion and one false alert per slot), then a recipe
    half a point better: promoted within a week over the champion the year left, lucky on these rows."""
    year = nights.replay(mlp1, REPLAYS, NIGHTS + nights.WINDOW, np.random.default_rng(2), change_at=NIGHTS,
                         points=0.5)
    assert year.promotions.mean() <= 1.0, year.promotions.mean()  # counts only models no better than the champion
    assert year.alerts.mean() <= 1.0, year.alerts.mean()
    assert np.mean(year.first_promotion >= 0) >= 0.8, np.mean(year.first_promotion >= 0)


def test_a_better_challenger_over_a_first_champion_and_a_drop_on_its_first_night(mlp1):
    better = nights.replay(mlp1, REPLAYS, nights.WINDOW, np.random.default_rng(3), change_at=0, points=0.5)
    assert np.mean(better.first_promotion >= 0) >= 0.8
    drop = nights.replay(mlp1, REPLAYS, 1, np.random.default_rng(4), change_at=0, points=-1.0)
    assert np.mean(drop.first_alert == 0) >= 0.9
