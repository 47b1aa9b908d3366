"""Grading throughput: the MATH500 golds graded against their own \\boxed{} forms.

    python bench/grading_throughput.py [--data-dir ../shared/data] [--benchmarks math500 olympiadbench]

Prints the pool's start-up (forkserver: imports math-verify and warms its parser once per process),
then items/s through `dcod.grading.grade` for 1 and 2 workers, and single-process math-verify
without the pool as the baseline. Needs the offline data (or DCOD_DATA_DIR).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from dcod import grading
from dcod.benchmarks import load_benchmark

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1] / "../shared/data"


def in_process(golds: list[str], predictions: list[str]) -> int:
    """The same work without worker processes or timeouts: math-verify's cost alone."""
    return sum(grading.grade_prepared(grading.prepare_gold(gold), *grading.prepare_prediction(prediction))[0]
               for gold, prediction in zip(golds, predictions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DCOD_DATA_DIR") or DEFAULT_DATA_DIR)
    parser.add_argument("--benchmarks", nargs="+", default=["math500"])
    parser.add_argument("--timeout", type=float, default=grading.DEFAULT_TIMEOUT)
    arguments = parser.parse_args()

    started = time.perf_counter()
    grading.grade(["1"], ["\\boxed{1}"], workers=1)  # starts the forkserver (imports + warm-up)
    print(f"pool start-up (forkserver, once per process): {time.perf_counter() - started:.2f} s")
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    grading._warm_up()  # the in-process baseline gets the same warm parser as the workers
    for name in arguments.benchmarks:
        golds = [record["gold"] for record in load_benchmark(name, data_dir=arguments.data_dir)]
        predictions = ["\\boxed{" + gold + "}" for gold in golds]
        for workers in (1, 2):
            started = time.perf_counter()
            results = grading.grade(golds, predictions, timeout=arguments.timeout, workers=workers)
            seconds = time.perf_counter() - started
            correct = sum(result.correct for result in results)
            print(f"{name}: {len(golds)} golds vs boxed golds, workers={workers}: {seconds:.2f} s, "
                  f"{len(golds) / seconds:.0f} items/s, {correct}/{len(golds)} correct")
        started = time.perf_counter()
        correct = in_process(golds, predictions)
        seconds = time.perf_counter() - started
        print(f"{name}: in-process math-verify, no pool: {seconds:.2f} s, {len(golds) / seconds:.0f} items/s, "
              f"{correct}/{len(golds)} correct")


if __name__ == "__main__":
    main()
