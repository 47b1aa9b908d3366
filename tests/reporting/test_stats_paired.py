"""Seed-paired intervals (docs/claims.md, "Intervals"): t over seeds plus the problem level, a range below
three seeds, ratios for retention."""

import math

import numpy as np
import pandas as pd
import pytest

from dcod.reporting.stats import seed_paired_diff, seed_paired_ratio, t_quantile


def long_frame(matrix, seeds=None):
    seeds = range(len(matrix)) if seeds is None else seeds
    return pd.DataFrame([{"seed": s, "problem": p, "value": v} for s, row in zip(seeds, matrix)
                         for p, v in enumerate(row)])


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantiles_match_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_paired_difference_by_hand():
    a = [[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    b = [[1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 1]]
    result = seed_paired_diff(long_frame(a), long_frame(b))
    d = np.array([0.5, 0.25, 0.25])  # per seed
    per_problem = (np.array(a) - np.array(b)).mean(axis=0)
    se = math.sqrt(d.var(ddof=1) / 3 + per_problem.var(ddof=1) / 4)
    assert result["kind"] == "t" and result["n_seeds"] == 3
    assert result["point"] == pytest.approx(d.mean())
    assert result["high"] - result["point"] == pytest.approx(t_quantile(0.975, 2) * se)
    assert result["per_seed"] == pytest.approx({0: 0.5, 1: 0.25, 2: 0.25})


def test_fewer_than_three_seeds_give_a_range_not_a_ci():
    result = seed_paired_diff(long_frame([[1, 0], [1, 1]]), long_frame([[0, 0], [1, 0]]))
    assert result["kind"] == "range" and (result["low"], result["high"]) == (0.5, 0.5)


def test_a_reference_evaluated_once_pairs_with_every_seed():
    result = seed_paired_diff(long_frame([[1, 0], [1, 1], [0, 0]]), long_frame([[1, 0]], seeds=[0]))
    assert result["per_seed"] == pytest.approx({0: 0.0, 1: 0.5, 2: -0.5})


def test_unpaired_seeds_are_refused():
    with pytest.raises(ValueError, match="not paired by seed"):
        seed_paired_diff(long_frame([[1], [0], [1]], seeds=[0, 1, 2]), long_frame([[1], [0], [1]], seeds=[0, 1, 3]))


def test_the_interval_covers_the_true_difference_at_least_95_percent_of_the_time():
    """Normal seed effects shared by both models of a seed, Bernoulli problems, a true gap of 5 points: over
    400 simulated five-seed tables the interval covers the gap at least ~95% of the time (binomial 3 sigma).
    The rule is conservative by design (docs/claims.md: the problem term counts outcome noise the seed
    term already holds; 100% here), so the test also bounds the mean width."""
    rng = np.random.default_rng(0)
    problems, seeds, true_gap, hits, widths, sims = 60, 5, 0.05, 0, [], 400
    difficulty = rng.uniform(0.2, 0.8, problems)
    for _ in range(sims):
        shared = rng.normal(0, 0.08, seeds)[:, None]  # the base student of each seed moves both models
        own = rng.normal(0, 0.03, (2, seeds))[:, :, None]
        p_a = np.clip(difficulty + true_gap + shared + own[0], 0, 1)
        p_b = np.clip(difficulty + shared + own[1], 0, 1)
        a, b = rng.random(p_a.shape) < p_a, rng.random(p_b.shape) < p_b
        result = seed_paired_diff(long_frame(a.astype(float)), long_frame(b.astype(float)))
        hits += result["low"] <= true_gap <= result["high"]
        widths.append(result["high"] - result["low"])
    coverage = hits / sims
    assert coverage >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / sims), coverage
    assert np.mean(widths) < 0.4  # 2 x t(4) x ~0.06: wider would mean a wrong variance term


def test_retention_ratio_per_seed():
    dcod = long_frame([[1, 1, 0, 1], [1, 1, 1, 1], [1, 0, 0, 1]])
    base = long_frame([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 1]])
    result = seed_paired_ratio(dcod, base)
    ratios = np.array([0.75, 1.0, 2 / 3])
    assert result["point"] == pytest.approx(ratios.mean()) and result["kind"] == "t"
    assert result["high"] - result["point"] == pytest.approx(t_quantile(0.975, 2) * ratios.std(ddof=1) / math.sqrt(3))
    with pytest.raises(ValueError, match="mean 0"):
        seed_paired_ratio(dcod, long_frame([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 1]]))


# ----------------------------------------------------------------------------- the step hazard (claim (b))
def test_hazard_pools_problems_and_skips_thin_positions():
    from dcod.reporting.stats import hazard

    at_risk = np.array([[10, 10, 3], [10, 8, 2]])
    errors = np.array([[1, 2, 1], [1, 4, 0]])
    # position 1: 2/20, position 2: 6/18, position 3: 5 at risk (< 20 needed): left out
    assert hazard(at_risk, errors, 18) == pytest.approx((2 / 20 + 6 / 18) / 2)
    assert math.isnan(hazard(at_risk, errors, 100))


def test_seed_paired_hazard_difference_and_its_interval():
    from dcod.reporting.stats import hazard, seed_paired_hazard_diff, t_quantile

    rng = np.random.default_rng(0)
    problems, positions = 30, 3
    a, b = {}, {}
    for seed in range(4):
        risk = np.full((problems, positions), 4)
        a[seed] = (risk, rng.binomial(1, 0.1, size=(problems, positions)))
        b[seed] = (risk, rng.binomial(1, 0.3, size=(problems, positions)))
    result = seed_paired_hazard_diff(a, b, min_at_risk=20)
    per_seed = [hazard(*a[s], 20) - hazard(*b[s], 20) for s in range(4)]
    assert result["kind"] == "t" and result["point"] == pytest.approx(np.mean(per_seed))
    # the problem term by hand: the mean difference with each problem left out, then the jackknife variance
    def left_out(counts, p):
        risk, err = counts
        return hazard(np.delete(risk, p, axis=0), np.delete(err, p, axis=0), 20)
    jack = np.array([np.mean([left_out(a[s], p) - left_out(b[s], p) for s in range(4)]) for p in range(problems)])
    variance = np.var(per_seed, ddof=1) / 4 + (problems - 1) / problems * ((jack - jack.mean()) ** 2).sum()
    half = t_quantile(0.975, 3) * math.sqrt(variance)
    assert (result["low"], result["high"]) == pytest.approx((result["point"] - half, result["point"] + half))
    assert result["high"] < 0  # 0.1 against 0.3: clearly lower
    two = seed_paired_hazard_diff({0: a[0], 1: a[1]}, {0: b[0], 1: b[1]}, min_at_risk=20)
    assert two["kind"] == "range" and (two["low"], two["high"]) == pytest.approx((min(per_seed[:2]), max(per_seed[:2])))
    with pytest.raises(ValueError, match="not paired"):
        seed_paired_hazard_diff({0: a[0], 1: a[1]}, {2: b[2], 3: b[3]}, min_at_risk=20)
