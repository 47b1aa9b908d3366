"""``python -m dcod tuning``: the learning-rate grid of every Table 1 method, scored on the validation split.

Every method gets the same budget (the profile's ``tuning.lrs``, one seed, validation only; test
splits are never read). The chosen value is the grid point with the best validation accuracy (ties:
the smaller learning rate). A profile with ``learning_rates.source: tuning`` trains Table 1 at these
choices (the DAG passes this file to every training job); one with ``source: table`` stores them in the
profile, copied by a person, and ``tests/workflow/test_tuning.py`` checks the copy against the file it names
(docs/tuning.md). A stage of the pipeline, not a report: under ``source: tuning`` training reads what it
writes, so it carries the pipeline's code fingerprint and a report edit does not rerun it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dcod.config import load_profile
from dcod.io import write_csv


def write_tuning(profile_path, work: Path, experiments: list[str], out) -> None:
    """results/<profile>/tuning.csv from the grid's validation evaluations under ``work/tuning/``."""
    profile = load_profile(profile_path)
    work = Path(work)
    split = profile.tuning.split
    rows = []
    for experiment in [e for e in experiments if e]:
        for lr in profile.tuning.lrs:
            path = work / "tuning" / experiment / f"lr{lr:g}" / "eval" / "metrics.csv"
            if not path.is_file():
                raise FileNotFoundError(f"missing input {path} (tuning run of {experiment} at lr {lr:g})")
            metrics = pd.read_csv(path)
            accuracy = float(metrics.loc[metrics["split"] == split, "accuracy"].iloc[0])
            rows.append({"experiment": experiment, "lr": lr, f"{split}_accuracy": 100 * accuracy,
                         "seed": profile.tuning.seed})
    frame = pd.DataFrame(rows)
    best = (frame.sort_values([f"{split}_accuracy", "lr"], ascending=[False, True])
            .groupby("experiment", sort=False).head(1).index)
    frame["chosen"] = frame.index.isin(best)
    write_csv(out, frame)
