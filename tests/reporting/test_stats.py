"""The hierarchical bootstrap (dcod.reporting.stats): seeds then problems, paired on problems."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from dcod.reporting.stats import hierarchical_bootstrap_diff, hierarchical_bootstrap_mean, value_matrix


def long_frame(matrix) -> pd.DataFrame:
    """(seeds × problems) values -> the long seed/problem/value frame."""
    matrix = np.asarray(matrix, dtype=float)
    seeds, problems = np.meshgrid(np.arange(matrix.shape[0]), np.arange(matrix.shape[1]), indexing="ij")
    return pd.DataFrame({"seed": seeds.ravel(), "problem": [f"p{i:04d}" for i in problems.ravel()],
                         "value": matrix.ravel()})


def problem_only_interval(diff: np.ndarray, replicates: int, level: float = 0.95) -> tuple[float, float]:
    """The textbook paired problem bootstrap written independently of stats.py (a loop, not counts)."""
    rng = np.random.default_rng(1)
    means = [diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(replicates)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return low, high


@pytest.fixture
def correctness():
    rng = np.random.default_rng(7)
    return (rng.random(300) < 0.6).astype(float), (rng.random(300) < 0.5).astype(float)


def test_zero_seed_variance_is_exactly_the_problem_bootstrap(correctness):
    a, b = correctness
    once = hierarchical_bootstrap_diff(long_frame([a]), long_frame([b]), seed=3)
    # three identical seeds: resampling seeds changes nothing, and the problem draws come from their own
    # stream, so the interval is the same to the last bit
    thrice = hierarchical_bootstrap_diff(long_frame([a, a, a]), long_frame([b, b]), seed=3)
    assert once == thrice
    # and that problem-only interval agrees with an independent loop implementation up to Monte Carlo
    # error: a 2.5% percentile of n replicates of a ~normal statistic with sd s has standard error
    # sqrt(p(1-p)/n) / phi(1.96) · s; two independent estimates differ by sqrt(2) of that; allow 4 of them
    low, high = problem_only_interval(a - b, 2000)
    s = (a - b).std(ddof=1) / np.sqrt(a.size)
    phi = np.exp(-1.96 ** 2 / 2) / np.sqrt(2 * np.pi)
    tolerance = 4 * np.sqrt(2) * np.sqrt(0.025 * 0.975 / 2000) / phi * s
    assert abs(once[1] - low) < tolerance and abs(once[2] - high) < tolerance
    assert once[0] == pytest.approx(a.mean() - b.mean(), abs=1e-12)


def test_seed_variance_widens_the_interval():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.2, 0.8, 300), rng.uniform(0.2, 0.8, 300)  # agreement-like values, no clipping below
    # seed effects of -0.15, 0, +0.15 on a: a between-run spread the problem bootstrap cannot see
    shifted = [a + shift for shift in (-0.15, 0.0, 0.15)]
    problem_only = hierarchical_bootstrap_diff(long_frame([np.mean(shifted, axis=0)]), long_frame([b]))
    hierarchical = hierarchical_bootstrap_diff(long_frame(shifted), long_frame([b]))
    assert hierarchical[0] == pytest.approx(problem_only[0], abs=1e-12)
    width = lambda ci: ci[2] - ci[1]  # noqa: E731
    # problem sd of the mean difference: sqrt(2 · 0.6²/12 / 300) ≈ 0.020; resampled mean of 3 seed effects:
    # sd 0.1225/sqrt(3) ≈ 0.071, so the hierarchical width should be about sqrt(0.071² + 0.02²)/0.02 ≈ 3.7
    # times the problem-only width; 2 leaves room for the coarse 3-seed resampling distribution
    assert width(hierarchical) > 2 * width(problem_only)


def test_known_difference_is_recovered():
    rng = np.random.default_rng(11)
    base = rng.random((3, 2000))
    a, b = long_frame(base + 0.2), long_frame(base)
    point, low, high = hierarchical_bootstrap_diff(a, b, replicates=500)
    assert point == pytest.approx(0.2, abs=1e-12)
    # paired on problems and seeds share nothing with b's: the spread is the seed spread only
    assert low < 0.2 < high and low > 0.1 and high < 0.3
    # a's mean on its own: a CI around the true mean
    mean, low, high = hierarchical_bootstrap_mean(a, replicates=500)
    assert low < mean < high and mean == pytest.approx(base.mean() + 0.2)


def test_identical_models_differ_by_exactly_zero(correctness):
    a, _ = correctness
    # paired on problems: every replicate is exactly 0 (an unpaired bootstrap would give a wide interval)
    assert hierarchical_bootstrap_diff(long_frame([a]), long_frame([a])) == (0.0, 0.0, 0.0)


def test_deterministic_with_the_seed(correctness):
    a, b = correctness
    frames = long_frame([a, 1 - a, a]), long_frame([b, b])
    assert hierarchical_bootstrap_diff(*frames, seed=[1, 2]) == hierarchical_bootstrap_diff(*frames, seed=[1, 2])
    assert hierarchical_bootstrap_diff(*frames, seed=1) != hierarchical_bootstrap_diff(*frames, seed=2)
    # row order in the frame never matters (problems are sorted)
    shuffled = frames[0].sample(frac=1.0, random_state=0)
    assert hierarchical_bootstrap_diff(shuffled, frames[1], seed=4) == hierarchical_bootstrap_diff(*frames, seed=4)


def test_level_widens(correctness):
    a, b = correctness
    narrow = hierarchical_bootstrap_diff(long_frame([a]), long_frame([b]), level=0.5)
    wide = hierarchical_bootstrap_diff(long_frame([a]), long_frame([b]), level=0.99)
    assert wide[1] < narrow[1] < narrow[2] < wide[2]


def test_mismatched_problems_raise_a_named_error(correctness):
    a, b = correctness
    fa, fb = long_frame([a]), long_frame([b]).iloc[:-1]
    with pytest.raises(ValueError, match=r"dcod and sft were evaluated on different problems: 1 only in dcod"):
        hierarchical_bootstrap_diff(fa, fb, names=("dcod", "sft"))
    ragged = long_frame([a, a]).iloc[:-1]  # seed 1 lacks a problem
    with pytest.raises(ValueError, match=r"dcod: the seeds were evaluated on different problems .*\[1\]"):
        hierarchical_bootstrap_diff(ragged, fb, names=("dcod", "sft"))
    with pytest.raises(ValueError, match=r"sft: no column \['value'\]"):
        hierarchical_bootstrap_diff(fa, fb.drop(columns="value"), names=("dcod", "sft"))
    with pytest.raises(ValueError, match="appears twice"):
        value_matrix(pd.concat([fa, fa.iloc[:1]]), "dcod")
    with pytest.raises(ValueError, match="non-finite"):
        value_matrix(fa.assign(value=np.where(fa.index == 0, np.nan, fa["value"])), "dcod")


def test_seed_column_may_be_absent_for_a_model_evaluated_once(correctness):
    a, b = correctness
    with_seed = hierarchical_bootstrap_diff(long_frame([a]), long_frame([b]))
    without = hierarchical_bootstrap_diff(long_frame([a]), long_frame([b]).drop(columns="seed"))
    assert with_seed == without


def test_fast_enough():
    rng = np.random.default_rng(0)
    a, b = long_frame(rng.random((3, 300)) < 0.6), long_frame(rng.random((3, 300)) < 0.5)
    start = time.perf_counter()
    hierarchical_bootstrap_diff(a, b, replicates=2000)
    assert time.perf_counter() - start < 1.0
