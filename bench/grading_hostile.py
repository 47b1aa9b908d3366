"""Hostile predictions at scale: 10,000 strings through the grading pool; prints counts and time.

    python bench/grading_hostile.py [--n 10000] [--timeout 3] [--workers 2] [--seed 0]

The strings come from tests/evaluation/test_grading_hostile.py (huge outputs, nesting, unbalanced boxes,
pathological LaTeX, control characters, invalid encodings, regex traps, and a small share of
inputs on which math-verify runs for seconds to forever).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "evaluation"))

from test_grading_hostile import hostile_predictions  # noqa: E402

from dcod.grading import STATUSES, grade  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()

    started = time.perf_counter()
    triples = hostile_predictions(arguments.n, seed=arguments.seed)
    print(f"generated {len(triples)} hostile predictions in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    results = grade([gold for _, gold, _ in triples], [prediction for _, _, prediction in triples],
                    timeout=arguments.timeout, workers=arguments.workers)
    seconds = time.perf_counter() - started
    counts = collections.Counter((family, result.status) for (family, _, _), result in zip(triples, results))
    print(f"{'family':22s}" + "".join(f"{status:>18s}" for status in STATUSES) + f"{'correct':>10s}")
    for family in sorted({family for family, _, _ in triples}):
        correct = sum(result.correct for (name, _, _), result in zip(triples, results) if name == family)
        print(f"{family:22s}" + "".join(f"{counts[family, status]:18d}" for status in STATUSES) + f"{correct:10d}")
    totals = collections.Counter(result.status for result in results)
    print(f"{'total':22s}" + "".join(f"{totals[status]:18d}" for status in STATUSES)
          + f"{sum(result.correct for result in results):10d}")
    print(f"graded {len(results)} in {seconds:.1f} s ({len(results) / seconds:.0f} items/s), "
          f"timeout {arguments.timeout} s, workers {arguments.workers}, no crash")


if __name__ == "__main__":
    main()
