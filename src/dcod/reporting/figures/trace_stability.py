"""Trace stability per method: answer agreement across k sampled traces, and malformed-output rate.

From stability.csv (k samples per problem at the stability temperature). High agreement means the
student's reasoning lands on the same answer when its own sampled prefixes differ, which is what the
paper's "more stable reasoning traces" claim is about.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from dcod.layout import TABLE_REFERENCES
from dcod.reporting import eval_dirs, paired_base, read_run, read_stability, run_dirs
from dcod.reporting.figures import evaluated_once_note, inputs, label_of, save, style_of
from dcod.reporting.tables import is_oracle, mean_std

NAME = "trace_stability"
# the caption of the generated report and of Snakemake's HTML report (workflow/report/figure.rst)
CAPTION = ("Answer agreement across sampled traces (share of samples equal to the most common answer) and the "
           "malformed-output rate, per method. High agreement with a low malformed rate is a stable student.")


def summary(work, name: str, seeds: list[int], paired: bool = False) -> dict:
    per_seed = [read_stability(folder) for folder in eval_dirs(work, name, seeds, paired)]
    row = {"method": name, "n_seeds": len(per_seed), "problems": int(len(per_seed[0])),
           "samples": int(per_seed[0]["samples"].max()) if len(per_seed[0]) else 0}
    for column in ("agreement", "malformed_rate"):
        row[f"{column}_mean"], row[f"{column}_std"] = mean_std(frame[column].mean() for frame in per_seed)
    return row


def empty_figure():
    """The figure of a profile that samples no stability traces: the reason in words, no empty bars."""
    figure, axis = plt.subplots(figsize=(11.0, 3.8), layout="constrained")
    axis.axis("off")
    axis.text(0.5, 0.5, f"{EMPTY}.", ha="center", va="center", fontsize=12)
    figure.suptitle("Trace stability")
    return figure


EMPTY = "No data: this profile samples no traces for stability (eval.stability_samples: 0)"


def render(args) -> None:
    work, experiments, seeds = inputs(args, NAME)
    paired = paired_base(args.profile)
    references = [name for name in TABLE_REFERENCES
                  if (eval_dirs(work, name, seeds, paired)[0] / "stability.csv").is_file()]
    data = pd.DataFrame([summary(work, name, seeds, paired) for name in (*references, *experiments)])
    if not data["problems"].any():  # eval.stability_samples 0 (the smoke profiles): say why, not empty axes
        save(empty_figure(), data, args.out)
        return
    oracles = {name for name in experiments if is_oracle(read_run(run_dirs(work, name, seeds)[0]))}
    figure, axes = plt.subplots(1, 2, figsize=(11.0, 3.8), layout="constrained")
    for axis, column, label in ((axes[0], "agreement", "answer agreement across samples"),
                                (axes[1], "malformed_rate", "malformed-output rate")):
        for index, row in data.iterrows():
            error = 0.0 if math.isnan(row[f"{column}_std"]) else row[f"{column}_std"]
            axis.bar(index, row[f"{column}_mean"], yerr=error, capsize=2, edgecolor="black", linewidth=0.4,
                     **style_of(row["method"], experiments, oracles))
        axis.set_xticks(range(len(data)), [label_of(m, oracles) for m in data["method"]], rotation=30, ha="right")
        axis.set_title(label)
    axes[0].set_ylim(0, 1)
    samples = int(data["samples"].max())
    if samples > 1:  # every answer different: the share of the most common one is 1/k, not 0
        axes[0].axhline(1 / samples, color="black", linestyle=":", linewidth=1)
        axes[0].text(0.99, 0.97, f"dotted: floor 1/k = {1 / samples:.2f} (k = {samples} samples)",
                     transform=axes[0].transAxes, ha="right", va="top", fontsize=8)
    # malformed rates are small: a 0-1 axis hides them; from zero to just above the largest bar
    top = (data["malformed_rate_mean"] + data["malformed_rate_std"].fillna(0)).max()
    axes[1].set_ylim(0, max(0.01, 1.25 * top))
    figure.suptitle("Trace stability (mean ± std over training seeds)")
    evaluated_once_note(axes[0], data)
    save(figure, data, args.out)
