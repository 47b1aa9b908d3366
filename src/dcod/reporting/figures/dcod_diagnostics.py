"""The weighting of the experiment under test (the profile's report.subject) over training: for DCOD,
adaptive β, effective sample size fraction and clip fraction (the diagnostics its run.json declares).

One line per seed from train_log.jsonl. β shows how far the ESS target lets the weights move as the
student drifts from the teacher; ESS near the target and a small clip fraction say the truncation is
a guard, not the mechanism.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from dcod.reporting import read_run, read_train_log, report_roles, run_dirs
from dcod.reporting.figures import inputs, save

NAME = "dcod_diagnostics"
# the caption of the generated report and of Snakemake's HTML report (workflow/report/figure.rst)
CAPTION = ("DCOD over training: the adaptive β, the effective-sample-size fraction and the clip fraction, one line "
           "per seed. An ESS fraction near its target and a small clip fraction mean the weights stayed well "
           "conditioned.")
LABELS = {"beta": "β (temperature of the weights)", "ess_fraction": "ESS / N", "clip_fraction": "clip fraction"}


def render(args) -> None:
    work, experiments, seeds = inputs(args, NAME)
    subject = report_roles(args.profile).subject
    if subject not in experiments:
        raise ValueError(f"figure:{NAME} plots the {subject!r} experiment, which is not in --experiment-list")
    folders = run_dirs(work, subject, seeds)
    keys = read_run(folders[0]).get("weight_diagnostics") or []
    if not keys:
        raise ValueError(f"{folders[0] / 'run.json'}: the {subject!r} run declares no weight diagnostics")
    frames = []
    for seed, folder in zip(seeds, folders):
        log = read_train_log(folder)
        missing = sorted(set(keys) - set(log.columns))
        if missing:
            raise ValueError(f"{folder / 'train_log.jsonl'}: no diagnostics {missing}")
        frames.append(log[["step", *keys]].assign(seed=seed))
    data = pd.concat(frames, ignore_index=True)[["seed", "step", *keys]]
    figure, axes = plt.subplots(1, len(keys), figsize=(4.0 * len(keys), 3.6), layout="constrained", squeeze=False)
    axes = axes[0]
    for axis, key in zip(axes, keys):
        for seed in seeds:
            part = data[data["seed"] == seed]
            axis.plot(part["step"], part[key], label=f"seed {seed}", linewidth=1.0)
        axis.set_xlabel("optimiser step")
        axis.set_title(LABELS.get(key, key))
        if key == "beta" and (data[key] > 0).all():
            axis.set_yscale("log")  # adaptive β moves over orders of magnitude (1 to beta_max)
        else:
            axis.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{subject} diagnostics over training")
    save(figure, data, args.out)
