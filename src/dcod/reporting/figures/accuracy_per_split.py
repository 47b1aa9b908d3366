"""Accuracy per held-out split per method (grouped bars, error bars = std over seeds).

Read from results/table1.csv, so the figure shows exactly the table's numbers. Teacher and base
student are drawn hatched and grey: they bracket the range a distilled student can land in.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dcod.reporting import held_out_splits, parse_names
from dcod.reporting.figures import evaluated_once_note, label_of, listed_rows, oracle_names, read_table1, save, style_of
from dcod.reporting.tables import table_splits

NAME = "accuracy_per_split"
# the caption of the generated report and of Snakemake's HTML report (workflow/report/figure.rst)
CAPTION = ("Accuracy per split (bars) and method; error bars are the standard deviation over training seeds (none "
           "for a model evaluated once); the oracle reference is hatched. Compare each method's bar with SFT's on "
           "the held-out splits; the teacher and base student bound the range.")


def tidy(rows: pd.DataFrame, splits: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"method": row["method"], "split": split, "n_seeds": row["n_seeds"],
                          "accuracy_mean": row[f"{split}_mean"], "accuracy_std": row[f"{split}_std"]}
                         for _, row in rows.iterrows() for split in splits])


def render(args) -> None:
    table = read_table1(args, NAME)
    experiments = parse_names(args.experiment_list)
    rows = listed_rows(table, experiments)
    splits = held_out_splits(table_splits(table))
    data = tidy(rows, splits)
    methods = list(rows["method"])
    oracles = oracle_names(table)
    width = 0.8 / len(methods)
    positions = np.arange(len(splits))
    figure, axis = plt.subplots(figsize=(max(6.0, 1.6 * len(splits) + 0.4 * len(methods)), 4.0),
                                layout="constrained")
    for index, method in enumerate(methods):
        part = data[data["method"] == method].set_index("split").loc[splits]
        errors = [0.0 if math.isnan(v) else v for v in part["accuracy_std"]]
        axis.bar(positions + (index - (len(methods) - 1) / 2) * width, part["accuracy_mean"], width,
                 yerr=errors, capsize=2, label=label_of(method, oracles), edgecolor="black", linewidth=0.4,
                 **style_of(method, experiments, oracles))
    axis.set_xticks(positions, splits)
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 100)
    axis.set_title("Accuracy per split (mean ± std over training seeds)")
    evaluated_once_note(axis, data)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(figure, data, args.out)
