"""Hierarchical bootstrap over training seeds and problems: the one source of every CI in the report.

docs/claims.md fixes the design: a replicate resamples each model's training seeds with replacement
(independently for the two models: they are different training runs), then the problems of the split
with replacement, the *same* problem draw for both models (they answered the same problems: pairing
removes the problem-difficulty variance), and averages. An interval therefore carries seed variance as
well as problem variance. A model evaluated once (a reference, or one seed) only gets the problem
resampling: with a single seed, resampling seeds is the identity.

Inputs are long frames with columns ``seed``, ``problem`` and ``value`` (a per-problem value: a
correctness 0/1, an agreement, a malformed share). ``seed`` may be absent for a model evaluated once.
Every seed of a model must cover the same problems, and both models the same problems; anything else is
an error naming the offending side, never a silent intersection.

Vectorised: one replicate's mean is ``w_seed · V · w_problem`` with the seed and problem weights the
draw counts, so a replicate costs a (seeds × problems) product and no Python loop runs per replicate.
The problem draws come from their own stream (spawned from ``seed``), so they are the same whatever the
seed counts: with identical seeds the hierarchical interval equals the problem-only one exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

REPLICATES = 2000
LEVEL = 0.95
_BLOCK = 500  # replicates per vectorised block: bounds memory at _BLOCK × problems floats


def value_matrix(frame: pd.DataFrame, what: str = "values") -> tuple[np.ndarray, list]:
    """(seeds × problems) values and the sorted problem ids of one model's long frame."""
    missing = [column for column in ("problem", "value") if column not in frame.columns]
    if missing:
        raise ValueError(f"{what}: no column {missing} (expected seed, problem, value; got {list(frame.columns)})")
    if frame.empty:
        raise ValueError(f"{what}: no rows")
    frame = frame.assign(seed=frame["seed"] if "seed" in frame.columns else 0)
    if frame[["seed", "problem"]].duplicated().any():
        duplicate = frame.loc[frame[["seed", "problem"]].duplicated(), ["seed", "problem"]].iloc[0].tolist()
        raise ValueError(f"{what}: problem {duplicate[1]!r} appears twice for seed {duplicate[0]!r}")
    values = pd.to_numeric(frame["value"], errors="coerce")
    if values.isna().any() or not np.isfinite(values.to_numpy(float)).all():
        bad = frame.loc[values.isna() | ~np.isfinite(values.fillna(0).to_numpy(float)), "value"].iloc[0]
        raise ValueError(f"{what}: non-numeric or non-finite value {bad!r}")
    table = frame.assign(value=values).pivot(index="seed", columns="problem", values="value")
    if table.isna().any().any():
        seeds = [s for s in table.index if table.loc[s].isna().any()]
        raise ValueError(f"{what}: the seeds were evaluated on different problems (seed(s) {seeds} lack some of "
                         f"the {table.shape[1]} problems the others answered)")
    table = table.sort_index(axis=0).sort_index(axis=1)
    return table.to_numpy(float), list(table.columns)


def _generators(seed) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent streams for the problem draws and each model's seed draws."""
    entropy = list(seed) if isinstance(seed, Sequence) and not isinstance(seed, str) else seed
    problems, seeds_a, seeds_b = np.random.SeedSequence(entropy).spawn(3)
    return np.random.default_rng(problems), np.random.default_rng(seeds_a), np.random.default_rng(seeds_b)


def _counts(rng: np.random.Generator, replicates: int, size: int) -> np.ndarray:
    """Draw counts (replicates × size) of ``size`` draws with replacement from ``size`` items, / size."""
    if size == 1:
        return np.ones((replicates, 1))
    draws = rng.integers(0, size, size=(replicates, size))
    offsets = (np.arange(replicates) * size)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=replicates * size).reshape(replicates, size) / size


def _replicates(matrices: list[np.ndarray], signs: list[float], replicates: int, seed) -> np.ndarray:
    """sum_m sign_m · (seed-weighted, problem-weighted mean of matrix m) for each replicate."""
    problem_rng, *seed_rngs = _generators(seed)
    n_problems = matrices[0].shape[1]
    out = np.empty(replicates)
    for start in range(0, replicates, _BLOCK):
        size = min(_BLOCK, replicates - start)
        problem_weights = _counts(problem_rng, size, n_problems)  # shared by both models: paired
        combined = np.zeros((size, n_problems))
        for matrix, sign, rng in zip(matrices, signs, seed_rngs):
            seed_weights = _counts(rng, size, matrix.shape[0])
            combined += sign * (seed_weights @ matrix)
        out[start:start + size] = (combined * problem_weights).sum(axis=1)
    return out


def _interval(point: float, replicates: np.ndarray, level: float) -> tuple[float, float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(point), float(low), float(high)


def _check_replicates(replicates: int) -> None:
    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")


def hierarchical_bootstrap_diff(a: pd.DataFrame, b: pd.DataFrame, *, replicates: int = REPLICATES, seed=0,
                                level: float = LEVEL, names: tuple[str, str] = ("a", "b")
                                ) -> tuple[float, float, float]:
    """(mean(a) − mean(b), low, high): the ``level`` percentile interval of the hierarchical bootstrap.

    ``seed`` is an int or a sequence of ints (e.g. a fixed seed and a hash of the split); ``names`` label
    the two sides in error messages. The caller scales to points (× 100 for a 0/1 correctness).
    """
    _check_replicates(replicates)
    matrix_a, problems_a = value_matrix(a, names[0])
    matrix_b, problems_b = value_matrix(b, names[1])
    if problems_a != problems_b:
        only_a = sorted(set(problems_a) - set(problems_b), key=str)
        only_b = sorted(set(problems_b) - set(problems_a), key=str)
        raise ValueError(f"{names[0]} and {names[1]} were evaluated on different problems: {len(only_a)} only in "
                         f"{names[0]} (e.g. {only_a[:3]}), {len(only_b)} only in {names[1]} (e.g. {only_b[:3]})")
    point = matrix_a.mean() - matrix_b.mean()
    return _interval(point, _replicates([matrix_a, matrix_b], [1.0, -1.0], replicates, seed), level)


def hierarchical_bootstrap_mean(a: pd.DataFrame, *, replicates: int = REPLICATES, seed=0, level: float = LEVEL,
                                name: str = "a") -> tuple[float, float, float]:
    """(mean(a), low, high): one model's interval with the same resampling (seeds, then problems)."""
    _check_replicates(replicates)
    matrix, _ = value_matrix(a, name)
    return _interval(matrix.mean(), _replicates([matrix], [1.0], replicates, seed), level)


def excludes_zero(low: float, high: float) -> str | None:
    """'above' / 'below' when the interval lies wholly above / below 0, None when it contains 0 (or is NaN)."""
    if math.isnan(low) or math.isnan(high):
        return None
    return "above" if low > 0 else "below" if high < 0 else None


# ----------------------------------------------------------------------------- seed-paired intervals
MIN_SEEDS_FOR_INTERVAL = 3  # below it an interval is a range of the per-seed differences, never a CI


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom (Simpson integration of
    its density, then bisection: about 1e-9 accurate, no scipy)."""
    if not 0.5 <= probability < 1 or df < 1:
        raise ValueError(f"t_quantile: needs probability in [0.5, 1) and df >= 1, got {probability}, {df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float, steps: int = 4000) -> float:  # 0.5 + ∫_0^x density (x >= 0), composite Simpson
        h = x / steps
        weights = np.ones(steps + 1)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        grid = np.linspace(0.0, x, steps + 1)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
        return 0.5 + h / 3 * float(weights @ density)

    low, high = 0.0, 1.0
    while cdf(high) < probability:
        high *= 2
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if cdf(mid) < probability else (low, mid)
    return 0.5 * (low + high)


def seed_paired_diff(a: pd.DataFrame, b: pd.DataFrame, *, level: float = LEVEL,
                     names: tuple[str, str] = ("a", "b")) -> dict:
    """Mean(a) − mean(b) paired by seed (docs/claims.md, "Intervals"): both models of a seed share its base
    student, so d_s = mean_problems(a_s) − mean_problems(b_s). The interval is t over seeds (n − 1 degrees
    of freedom) with the problem level added, SE² = s²(d_s) / n + var_p(D_p) / P, D_p the per-problem
    difference averaged over seeds: the seed term alone is exact for normal seed effects over these
    problems; the problem term generalises over problems and, since d_s already holds the outcome noise,
    counts that noise twice: conservative (tests/reporting/test_stats_paired.py measures ~100% coverage of a 95%
    interval in a simulation with shared seed effects). A model evaluated once (a reference) is the same on every seed of the other. With
    fewer than ``MIN_SEEDS_FOR_INTERVAL`` seeds the result is the range of d_s (``kind: range``), never a CI.

    Returns {point, low, high, kind ("t" or "range"), n_seeds, per_seed: {seed: d_s}}."""
    matrix_a, problems_a = value_matrix(a, names[0])
    matrix_b, problems_b = value_matrix(b, names[1])
    if problems_a != problems_b:
        raise ValueError(f"{names[0]} and {names[1]} were evaluated on different problems")
    seeds_a = sorted(a["seed"].unique()) if "seed" in a.columns else [0]
    seeds_b = sorted(b["seed"].unique()) if "seed" in b.columns else [0]
    if len(seeds_a) > 1 and len(seeds_b) > 1 and seeds_a != seeds_b:
        raise ValueError(f"{names[0]} (seeds {seeds_a}) and {names[1]} (seeds {seeds_b}) are not paired by seed")
    seeds = seeds_a if len(seeds_a) >= len(seeds_b) else seeds_b
    n = len(seeds)
    matrix_a = np.broadcast_to(matrix_a, (n, matrix_a.shape[1])) if matrix_a.shape[0] == 1 else matrix_a
    matrix_b = np.broadcast_to(matrix_b, (n, matrix_b.shape[1])) if matrix_b.shape[0] == 1 else matrix_b
    differences = matrix_a - matrix_b  # seeds × problems
    per_seed = differences.mean(axis=1)
    point = float(per_seed.mean())
    result = {"point": point, "n_seeds": n, "per_seed": dict(zip([int(s) for s in seeds], per_seed.tolist()))}
    if n < MIN_SEEDS_FOR_INTERVAL:
        return {**result, "low": float(per_seed.min()), "high": float(per_seed.max()), "kind": "range"}
    per_problem = differences.mean(axis=0)
    problems = per_problem.size
    variance = per_seed.var(ddof=1) / n + (per_problem.var(ddof=1) / problems if problems > 1 else 0.0)
    half = t_quantile((1 + level) / 2, n - 1) * math.sqrt(variance)
    return {**result, "low": point - half, "high": point + half, "kind": "t"}


def seed_paired_ratio(a: pd.DataFrame, b: pd.DataFrame, *, level: float = LEVEL,
                      names: tuple[str, str] = ("a", "b")) -> dict:
    """Mean over seeds of mean(a_s) / mean(b_s) (claim (c): retention kept relative to the seed's base
    student), with the t interval over seeds (range below ``MIN_SEEDS_FOR_INTERVAL``). A seed whose b mean
    is 0 has no ratio: an error naming it."""
    matrix_a, _ = value_matrix(a, names[0])
    matrix_b, _ = value_matrix(b, names[1])
    n = max(matrix_a.shape[0], matrix_b.shape[0])
    means_a = np.broadcast_to(matrix_a.mean(axis=1), (n,))
    means_b = np.broadcast_to(matrix_b.mean(axis=1), (n,))
    if (means_b == 0).any():
        raise ValueError(f"{names[1]}: a seed with mean 0 leaves the ratio {names[0]}/{names[1]} undefined")
    ratios = means_a / means_b
    point = float(ratios.mean())
    if n < MIN_SEEDS_FOR_INTERVAL:
        return {"point": point, "low": float(ratios.min()), "high": float(ratios.max()), "kind": "range",
                "n_seeds": n}
    half = t_quantile((1 + level) / 2, n - 1) * float(ratios.std(ddof=1)) / math.sqrt(n)
    return {"point": point, "low": point - half, "high": point + half, "kind": "t", "n_seeds": n}


# ----------------------------------------------------------------------------- the step hazard (claim (b))
def hazard(at_risk: np.ndarray, errors: np.ndarray, min_at_risk: int) -> float:
    """Step hazard of (problems × positions) counts: errors / at risk per position pooled over problems,
    averaged over the positions with at least ``min_at_risk`` traces at risk (docs/claims.md, "Claim (b)")."""
    risk, err = at_risk.sum(axis=0), errors.sum(axis=0)
    keep = risk >= min_at_risk
    return float((err[keep] / risk[keep]).mean()) if keep.any() else math.nan


def _jackknife_hazards(at_risk: np.ndarray, errors: np.ndarray, min_at_risk: int) -> np.ndarray:
    """The hazard with each problem left out in turn (the positions that qualify on all problems, fixed)."""
    keep = at_risk.sum(axis=0) >= min_at_risk
    risk = at_risk.sum(axis=0)[keep] - at_risk[:, keep]  # problems × kept positions
    err = errors.sum(axis=0)[keep] - errors[:, keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nanmean(np.where(risk > 0, err / risk, np.nan), axis=1)


def seed_paired_hazard_diff(a: dict, b: dict, *, min_at_risk: int, level: float = LEVEL) -> dict:
    """Step hazard of a − b paired by seed (docs/claims.md, "Intervals" and "Claim (b)"). ``a``/``b``: seed ->
    (at_risk, errors), (problems × positions) counts over the same problems in the same order; a model
    evaluated once has one seed, used for every seed of the other. d_s = hazard_a(s) − hazard_b(s); the
    interval is t over seeds with the problem level added as for accuracies, the problem term here the
    delete-one-problem jackknife variance of the mean difference (a hazard is a ratio of sums over
    problems, not a mean of per-problem values). Fewer than ``MIN_SEEDS_FOR_INTERVAL`` seeds: a range."""
    seeds = sorted(a) if len(a) >= len(b) else sorted(b)
    if len(a) > 1 and len(b) > 1 and sorted(a) != sorted(b):
        raise ValueError(f"step hazard: seeds {sorted(a)} and {sorted(b)} are not paired")
    pick = lambda side, seed: side[seed] if len(side) > 1 else next(iter(side.values()))  # noqa: E731
    per_seed, leave_one_out = [], []
    for seed in seeds:
        (risk_a, err_a), (risk_b, err_b) = pick(a, seed), pick(b, seed)
        if risk_a.shape[0] != risk_b.shape[0]:
            raise ValueError(f"step hazard: seed {seed} has {risk_a.shape[0]} and {risk_b.shape[0]} problems")
        per_seed.append(hazard(risk_a, err_a, min_at_risk) - hazard(risk_b, err_b, min_at_risk))
        leave_one_out.append(_jackknife_hazards(risk_a, err_a, min_at_risk)
                             - _jackknife_hazards(risk_b, err_b, min_at_risk))
    per_seed = np.asarray(per_seed)
    n, point = len(seeds), float(np.mean(per_seed))
    result = {"point": point, "n_seeds": n, "per_seed": dict(zip([int(s) for s in seeds], per_seed.tolist()))}
    if math.isnan(point):
        return {**result, "low": math.nan, "high": math.nan, "kind": ""}
    if n < MIN_SEEDS_FOR_INTERVAL:
        return {**result, "low": float(per_seed.min()), "high": float(per_seed.max()), "kind": "range"}
    jack = np.mean(leave_one_out, axis=0)  # the mean difference with each problem left out
    problems = jack.size
    problem_variance = (problems - 1) / problems * float(np.nansum((jack - np.nanmean(jack)) ** 2))
    half = t_quantile((1 + level) / 2, n - 1) * math.sqrt(per_seed.var(ddof=1) / n + problem_variance)
    return {**result, "low": point - half, "high": point + half, "kind": "t"}
