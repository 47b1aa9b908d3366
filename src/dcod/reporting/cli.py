"""``python -m dcod report <what>``: dispatch to the table, calibration, figure or report builder.

Imports are lazy so that building a CSV table never loads matplotlib, and an unknown name fails with
the list of valid ones before anything is read.
"""

from __future__ import annotations

import importlib
from pathlib import Path


def _folders(args) -> None:
    """Snakemake rules pass declared input files; the commands want the folders that hold them.

    ``--work`` may be the world marker ``<work>/world/world.json``; ``--results-dir`` and
    ``--figures-dir`` may be a file inside the folder (``results/table1.csv``, ``figures/x.png``).
    """
    if args.work and Path(args.work).name == "world.json":
        args.work = str(Path(args.work).parent.parent)
    for name in ("results_dir", "figures_dir"):
        value = getattr(args, name, None)
        if value and Path(value).suffix in (".csv", ".png"):
            setattr(args, name, str(Path(value).parent))


def run(args) -> None:
    _folders(args)
    what = args.what
    if what.startswith("figure:"):
        from dcod.reporting.figures import RENDERABLE

        name = what.partition(":")[2]
        if name not in RENDERABLE:
            raise ValueError(f"unknown figure {name!r}; known figures: {', '.join(RENDERABLE)}")
        importlib.import_module(f"dcod.reporting.figures.{name}").render(args)
        return
    commands = {"table1": ("dcod.reporting.tables", "write_table1"),
                "table2": ("dcod.reporting.tables", "write_table2"),
                "table3": ("dcod.reporting.table3", "write_table3"),
                "calibration": ("dcod.reporting.calibration", "write_calibration"),
                "robustness": ("dcod.reporting.robustness", "write_robustness"),
                "base_students": ("dcod.reporting.base_students", "write_base_students"),
                "claims": ("dcod.reporting.claims", "write_claims"),
                "claims_table1": ("dcod.reporting.claims", "write_claims_table1"),
                "paper": ("dcod.reporting.paper", "write_report"),
                "compare": ("dcod.reporting.snapshot", "write_comparison"),
                "publish": ("dcod.reporting.snapshot", "write_publish")}
    if what not in commands:
        raise ValueError(f"unknown report {what!r}; expected one of {', '.join(commands)} or figure:<name>")
    module, function = commands[what]
    getattr(importlib.import_module(module), function)(args)
