"""DCOD's weighting over training: adaptive β, effective sample size fraction and clip fraction.

One line per seed from train_log.jsonl. β shows how far the ESS target lets the weights move as the
student drifts from the teacher; ESS near the target and a small clip fraction say the truncation is
a guard, not the mechanism.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from dcod.reporting import DCOD, read_train_log, run_dirs
from dcod.reporting.figures import inputs, save
from dcod.reporting.tables import DIAGNOSTICS

NAME = "dcod_diagnostics"
LABELS = {"beta": "β (temperature of the weights)", "ess_fraction": "ESS / N", "clip_fraction": "clip fraction"}


def render(args) -> None:
    work, experiments, seeds = inputs(args, NAME)
    if DCOD not in experiments:
        raise ValueError(f"figure:{NAME} plots the {DCOD!r} experiment, which is not in --experiment-list")
    frames = []
    for seed, folder in zip(seeds, run_dirs(work, DCOD, seeds)):
        log = read_train_log(folder)
        missing = sorted(set(DIAGNOSTICS) - set(log.columns))
        if missing:
            raise ValueError(f"{folder / 'train_log.jsonl'}: no DCOD diagnostics {missing}")
        frames.append(log[["step", *DIAGNOSTICS]].assign(seed=seed))
    data = pd.concat(frames, ignore_index=True)[["seed", "step", *DIAGNOSTICS]]
    figure, axes = plt.subplots(1, 3, figsize=(12.0, 3.6), layout="constrained")
    for axis, key in zip(axes, DIAGNOSTICS):
        for seed in seeds:
            part = data[data["seed"] == seed]
            axis.plot(part["step"], part[key], label=f"seed {seed}", linewidth=1.0)
        axis.set_xlabel("optimiser step")
        axis.set_title(LABELS[key])
        axis.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    figure.suptitle("DCOD diagnostics over training")
    save(figure, data, args.out)
