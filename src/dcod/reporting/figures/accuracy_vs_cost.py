"""Accuracy against training cost (the efficiency claim): wall time, and tokens sampled.

From results/table1.csv, one point per method. Tokens sampled count the rollouts drawn during
training plus, for methods that train on them, the one-off offline teacher traces: leaving the
traces out would make every offline method look free of generation cost.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from dcod.reporting import parse_names, primary_split
from dcod.reporting.figures import label_of, listed_rows, oracle_names, read_table1, save, style_of
from dcod.reporting.tables import table_splits

NAME = "accuracy_vs_cost"
# the caption of the generated report and of Snakemake's HTML report (workflow/report/figure.rst)
CAPTION = ("Accuracy against training FLOPs and against tokens sampled, one point per method (the oracle reference "
           "as a star). Up and to the left is better: more accuracy for less compute.")


def render(args) -> None:
    table = read_table1(args, NAME)
    experiments = parse_names(args.experiment_list)
    rows = listed_rows(table, experiments, references=())
    split = primary_split(table_splits(table))
    data = pd.DataFrame({
        "method": rows["method"], "split": split, "accuracy_mean": rows[f"{split}_mean"],
        "accuracy_std": rows[f"{split}_std"], "wall_time_s": rows["wall_time_s"],
        "training_flops": rows["training_flops"] if "training_flops" in rows else float("nan"),
        "tokens_sampled": rows["tokens_sampled"], "offline_trace_tokens": rows["offline_trace_tokens"],
        "total_tokens_sampled": rows["tokens_sampled"].fillna(0) + rows["offline_trace_tokens"].fillna(0)})
    figure, axes = plt.subplots(1, 2, figsize=(11.0, 4.0), sharey=True, layout="constrained")
    oracles = oracle_names(table)
    # machine-independent cost when the table has it (docs/claims.md (d)); wall time only for older tables
    cost = ("training_flops", "training FLOPs (6·N·trained + 2·N·sampled + 2·N_teacher·teacher forward)") \
        if data["training_flops"].notna().any() else ("wall_time_s", "training wall time (s, mean over seeds)")
    for axis, column, label in ((axes[0], *cost),
                                (axes[1], "total_tokens_sampled",
                                 "tokens sampled (training rollouts + offline teacher traces)")):
        for _, row in data.iterrows():
            error = 0.0 if math.isnan(row["accuracy_std"]) else row["accuracy_std"]
            style = (dict(color="black", marker="*", markersize=10) if row["method"] in oracles
                     else dict(marker="o", **style_of(row["method"], experiments)))
            axis.errorbar(row[column], row["accuracy_mean"], yerr=error, capsize=2, **style)
            axis.annotate(label_of(row["method"], oracles), (row[column], row["accuracy_mean"]), fontsize=8,
                          xytext=(4, 4), textcoords="offset points")
        axis.set_xlabel(label)
    axes[0].set_ylabel(f"{split} accuracy (%)")
    figure.suptitle(f"Accuracy on {split} vs training cost")
    save(figure, data, args.out)
