"""Accuracy against cost for every offline method of Tables 1 and 3 (claims (a) and (d) side by side).

From results/table1.csv and results/table3.csv, one point per offline method (declared needs: offline
traces only, docs/claims.md) and the subject: Table 1's offline rows as circles, Table 3's prior methods as
squares, the subject as a star. Two costs, machine-independent and means over seeds:

- forward tokens: through the student-sized model (trained, a frozen reference, a pass before training)
  plus through the teacher;
- generated tokens: the shared one-off teacher traces plus what the method generated besides them.

A Table 3 row reads Table 3's cost columns (they count a pass a method runs before training); a Table 1
row reads Table 1's, which have no such pass (no Table 1 method declares one).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from dcod.reporting import need, primary_split
from dcod.reporting.claims import truthy
from dcod.reporting.figures import save, style_of
from dcod.reporting.tables import read_table, table_splits

NAME = "offline_accuracy_vs_cost"
# the caption of the generated report and of Snakemake's HTML report (workflow/report/figure.rst)
CAPTION = ("Accuracy against cost for every offline method of Tables 1 (circles) and 3 (squares) and DCOD (star): "
           "forward tokens through the student-sized model and the teacher, and tokens generated (the shared "
           "teacher traces plus any extra generation). Up and to the left is better.")


def _sum(row, columns) -> float:
    values = [row.get(column, math.nan) for column in columns]
    return math.nan if any(pd.isna(v) for v in values) else float(sum(values))


def offline_points(table1: pd.DataFrame, table3: pd.DataFrame, subject: str) -> pd.DataFrame:
    """One record per plotted method: the subject, Table 1's offline methods, Table 3's prior methods."""
    split = primary_split(table_splits(table1))
    records = []

    def add(row, table: str) -> None:
        if table == "3":
            forward = _sum(row, ("student_forward_tokens", "teacher_forward_tokens_total"))
            extra = row.get("extra_generation_tokens", math.nan)
        else:
            reference = 0.0 if pd.isna(row.get("reference_forward_tokens")) else row["reference_forward_tokens"]
            forward = _sum(row, ("student_tokens_trained", "teacher_forward_tokens")) + reference
            extra = row.get("tokens_sampled", math.nan)
        traces = 0.0 if pd.isna(row.get("offline_trace_tokens")) else float(row["offline_trace_tokens"])
        records.append({"method": row["method"], "table": "subject" if row["method"] == subject else table,
                        "split": split, "accuracy_mean": row[f"{split}_mean"], "accuracy_std": row[f"{split}_std"],
                        "forward_tokens": forward, "generated_tokens": traces + float(extra)})

    for _, row in table1.iterrows():
        if row["method"] == subject or (row.get("role") == "method" and truthy(row.get("offline_only"))):
            add(row, "1")
    for _, row in table3[table3["table"].astype(str) == "3"].iterrows():
        if row.get("role") == "method" and truthy(row.get("offline_only")):
            add(row, "3")
    return pd.DataFrame(records, columns=["method", "table", "split", "accuracy_mean", "accuracy_std",
                                          "forward_tokens", "generated_tokens"])


MARKERS = {"1": dict(marker="o"), "3": dict(marker="s"), "subject": dict(marker="*", markersize=12)}


def render(args) -> None:
    from dcod.reporting import report_roles

    results = Path(need(args.results_dir, "--results-dir", f"figure:{NAME}"))
    table1, table3 = read_table(results / "table1.csv"), read_table(results / "table3.csv")
    data = offline_points(table1, table3, report_roles(args.profile).subject)
    order = list(data["method"])
    figure, axes = plt.subplots(1, 2, figsize=(11.0, 4.0), sharey=True, layout="constrained")
    for axis, column, label in ((axes[0], "forward_tokens", "forward tokens (student-sized model + teacher)"),
                                (axes[1], "generated_tokens", "generated tokens (shared teacher traces + extra)")):
        for _, row in data.iterrows():
            error = 0.0 if pd.isna(row["accuracy_std"]) else row["accuracy_std"]
            axis.errorbar(row[column], row["accuracy_mean"], yerr=error, capsize=2, linestyle="none",
                          **MARKERS[row["table"]], **style_of(row["method"], order))
            axis.annotate(row["method"], (row[column], row["accuracy_mean"]), fontsize=8, xytext=(4, 4),
                          textcoords="offset points")
        axis.set_xlabel(label)
    split = data["split"].iloc[0] if not data.empty else primary_split(table_splits(table1))
    axes[0].set_ylabel(f"{split} accuracy (%)")
    figure.suptitle(f"Offline methods of Tables 1 and 3: accuracy on {split} vs cost")
    save(figure, data, args.out)
