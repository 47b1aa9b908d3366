"""DCOD's gaps across the robustness worlds against the teacher's direct-style probability.

Two panels (``id``, ``long``); in each, DCOD - SFT (solid) and DCOD - the best other offline baseline of
that world (chosen on its validation split; dashed), one colour per world seed, error bars the 95% CIs
of the hierarchical bootstrap, the main world circled. Read from results/robustness.csv only, so the
figure shows exactly the table's numbers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dcod.reporting import need
from dcod.reporting.figures import save

NAME = "robustness"
# the caption of the generated report and of Snakemake's HTML report (workflow/report/figure.rst)
CAPTION = ("Two panels (id, long): DCOD − SFT (solid) and DCOD − the best other offline baseline of each world "
           "(chosen on its validation split; dashed) against the teacher's direct-style probability, one colour "
           "per world seed, error bars the 95% hierarchical-bootstrap intervals, the main world circled. Points "
           "above 0 whose bars clear 0 support claim (a) in that world.")
SPLITS = {"id": "in-distribution chains (id)", "long": "long chains (long)"}
JITTER = 0.012  # x offset between world seeds, so that their error bars do not overlap


def read_robustness(args) -> pd.DataFrame:
    path = Path(need(args.results_dir, "--results-dir", f"figure:{NAME}")) / "robustness.csv"
    if not path.is_file():
        raise FileNotFoundError(f"missing input {path} (run `dcod report robustness` first)")
    frame = pd.read_csv(path)
    needed = ["world", "world_seed", "p_direct", "main", "subject", "baseline", "best_other"]
    missing = [column for column in needed if column not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"{path}: no rows or no column {missing} (rebuild it with `dcod report robustness`)")
    return frame


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per world, split and comparison: the numbers the figure plots."""
    rows = []
    for _, row in frame.iterrows():
        for split in SPLITS:
            for comparison, versus in (("baseline", row["baseline"]), ("best_other", "best_other")):
                column = f"delta_{split}_vs_{versus}"
                if column not in frame.columns:
                    raise ValueError(f"robustness.csv has no column {column!r}")
                rows.append({"world": row["world"], "main": bool(row["main"]), "world_seed": int(row["world_seed"]),
                             "p_direct": float(row["p_direct"]), "split": split, "comparison": comparison,
                             "compared_with": row["baseline"] if comparison == "baseline" else row["best_other"],
                             "delta": row[column], "ci_low": row[f"{column}_ci_low"],
                             "ci_high": row[f"{column}_ci_high"]})
    return pd.DataFrame(rows)


def render(args) -> None:
    frame = read_robustness(args)
    data = tidy(frame)
    subject, baseline = frame["subject"].iloc[0], frame["baseline"].iloc[0]
    world_seeds = sorted(data["world_seed"].unique())
    colors = plt.get_cmap("tab10").colors
    figure, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), sharey=True, layout="constrained")
    for axis, (split, title) in zip(axes, SPLITS.items()):
        axis.axhline(0.0, color="black", linewidth=0.8)
        for index, world_seed in enumerate(world_seeds):
            offset = (index - (len(world_seeds) - 1) / 2) * JITTER
            for comparison, style, label in (("baseline", "-", f"{subject} − {baseline}"),
                                             ("best_other", "--", f"{subject} − best other offline baseline")):
                part = data[(data["split"] == split) & (data["world_seed"] == world_seed)
                            & (data["comparison"] == comparison)].sort_values("p_direct")
                x = part["p_direct"].to_numpy(float) + offset + (JITTER / 3 if comparison == "best_other" else 0)
                y = part["delta"].to_numpy(float)
                errors = np.vstack([y - part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float) - y])
                axis.errorbar(x, y, yerr=errors, fmt="o" if comparison == "baseline" else "s", linestyle=style,
                              color=colors[index % len(colors)], capsize=3, markersize=5,
                              label=f"world seed {world_seed}: {label}")
                main = part["main"].to_numpy(bool)
                if main.any():
                    axis.scatter(x[main], y[main], s=160, facecolors="none", edgecolors="black", linewidths=1.0,
                                 label="main world" if index == 0 and comparison == "baseline" else None, zorder=3)
        axis.set_title(title)
        axis.set_xlabel("teacher's probability of the direct style (p_direct)")
        ticks = sorted(data["p_direct"].unique())
        axis.set_xticks(ticks)
        axis.set_xlim(ticks[0] - 0.1, ticks[-1] + 0.1)
    axes[0].set_ylabel(f"accuracy difference, {subject} minus other (points)")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    figure.legend(unique.values(), unique.keys(), fontsize=8, loc="outside lower center", ncol=2)
    figure.suptitle(f"{subject} across the robustness worlds (95% CIs: seeds, then problems)")
    save(figure, data, args.out)
