"""Accuracy against chain length k (number of steps): where compounding errors would show.

From samples.jsonl of the held-out arithmetic problems (k > 0), mean over seeds per k, for every
Table 1 experiment (--experiment-list) and the base student as the starting point. A dotted line marks
where the `id` chain lengths end and the `long` ones begin.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd

from dcod.reporting import VALIDATION_SPLIT, eval_dirs, paired_base, read_samples
from dcod.reporting.figures import inputs, save, style_of
from dcod.reporting.tables import mean_std

NAME = "accuracy_vs_length"
# the caption of the generated report and of Snakemake's HTML report (workflow/report/figure.rst)
CAPTION = ("Accuracy against chain length (number of steps k) on held-out problems, one line per method. A method "
           "that copies a style the student cannot execute loses more as k grows: look at the slope, not only "
           "the level.")


def curve(work, name: str, seeds: list[int], paired: bool = False) -> pd.DataFrame:
    """One row per k: accuracy (%) mean and std over seeds, problems per seed."""
    per_seed = []
    for folder in eval_dirs(work, name, seeds, paired):
        samples = read_samples(folder)
        if "k" not in samples:
            raise ValueError(f"{folder / 'samples.jsonl'}: no 'k' field (chain length)")
        rows = samples[(samples["split"] != VALIDATION_SPLIT) & (samples["k"].fillna(0) > 0)]
        if rows.empty:
            raise ValueError(f"{folder / 'samples.jsonl'}: no held-out problem with a chain length k > 0 "
                             f"(this figure is for the toy world only)")
        per_seed.append(rows.groupby("k").agg(mean=("correct", "mean"), size=("correct", "size"),
                                              split=("split", lambda s: "/".join(sorted(set(s))))))
    ks = sorted(set().union(*(frame.index for frame in per_seed)))
    records = []
    for k in ks:
        values = [100.0 * frame.loc[k, "mean"] for frame in per_seed if k in frame.index]
        mean, std = mean_std(values)
        splits = sorted({frame.loc[k, "split"] for frame in per_seed if k in frame.index})
        records.append({"method": name, "k": int(k), "split": "/".join(splits), "n_seeds": len(values),
                        "n": int(per_seed[0].loc[k, "size"]) if k in per_seed[0].index else 0,
                        "accuracy_mean": mean, "accuracy_std": std})
    return pd.DataFrame(records)


def split_boundary(data: pd.DataFrame) -> float | None:
    """The x position halfway between the longest `id` chain and the shortest `long` chain, or None when
    the data lacks either split or the two overlap (then no single line separates them)."""
    id_k = data.loc[data["split"] == "id", "k"]
    long_k = data.loc[data["split"] == "long", "k"]
    if id_k.empty or long_k.empty or id_k.max() >= long_k.min():
        return None
    return (id_k.max() + long_k.min()) / 2.0


def render(args) -> None:
    work, experiments, seeds = inputs(args, NAME)
    names = [*experiments, "base_student"]
    paired = paired_base(args.profile)
    data = pd.concat([curve(work, name, seeds, paired) for name in names], ignore_index=True)
    figure, axis = plt.subplots(figsize=(7.0, 4.0), layout="constrained")
    for name in names:
        part = data[data["method"] == name]
        errors = [0.0 if math.isnan(v) else v for v in part["accuracy_std"]]
        style = dict(color="black", linestyle="--") if name == "base_student" else style_of(name, experiments)
        axis.errorbar(part["k"], part["accuracy_mean"], yerr=errors, marker="o", capsize=2, label=name, **style)
    boundary = split_boundary(data)
    if boundary is not None:
        axis.axvline(boundary, color="grey", linestyle=":", linewidth=1)
        axis.text(boundary - 0.05, 2, "id ", ha="right", va="bottom", color="grey")
        axis.text(boundary + 0.05, 2, " long", ha="left", va="bottom", color="grey")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # k counts steps: no k = 2.5
    axis.set_xlabel("chain length k (steps)")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 100)
    axis.set_title("Accuracy vs chain length (held-out problems, mean ± std over seeds)")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(figure, data, args.out)
