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
