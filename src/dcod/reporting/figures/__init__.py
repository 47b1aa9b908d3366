"""One module per figure, each with ``render(args)``: the PNG and, beside it, the CSV of exactly the
numbers it plots (same stem), so a reader can check any bar or point without re-running anything.

Matplotlib runs headless (Agg) and the PNG carries no software/date metadata, so re-rendering the
same data gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import pandas as pd  # noqa: E402

from dcod import layout  # noqa: E402
from dcod.io import atomic_path, write_csv  # noqa: E402
from dcod.reporting import need, parse_names, parse_seeds  # noqa: E402

# the figure list is dcod.layout's (the DAG reads the same); a figure is its module here plus that entry
FIGURE_NAMES, TOY_ONLY, ROBUSTNESS_FIGURES = layout.FIGURES, layout.TOY_ONLY_FIGURES, layout.ROBUSTNESS_FIGURES
RENDERABLE = FIGURE_NAMES + ROBUSTNESS_FIGURES  # every name `dcod report figure:<name>` accepts


def figure_names(source: str) -> tuple[str, ...]:
    """The figures a profile with this ``data.source`` builds."""
    return tuple(layout.figure_names(source == "toy"))


def caption(name: str) -> str:
    """A figure's caption: the ``CAPTION`` of its module."""
    import importlib

    return importlib.import_module(f"dcod.reporting.figures.{name}").CAPTION
REFERENCE_STYLE = {"teacher": dict(color="0.25", hatch="//"), "base_student": dict(color="0.7", hatch="..")}


# the oracle (SFT on student-style traces) is a reference, not a competitor: white with black crosses
ORACLE_STYLE = dict(color="white", hatch="xx")


def oracle_names(table: pd.DataFrame) -> set[str]:
    """Trained reference rows of Table 1 (role ``reference`` but not the teacher or base student)."""
    return {m for m, role in zip(table["method"], table["role"]) if role == "reference" and m not in REFERENCE_STYLE}


def label_of(method: str, oracles=()) -> str:
    return f"{method} (reference)" if method in oracles else method


def style_of(method: str, experiments: list[str], oracles=()) -> dict:
    """The same colour for a method in every figure (its place in --experiment-list); references grey,
    a trained reference (``oracles``: the oracle) white with crosses."""
    if method in REFERENCE_STYLE:
        return dict(REFERENCE_STYLE[method])
    if method in oracles:
        return dict(ORACLE_STYLE)
    # tab10 without its grey (index 7), which the references use: no method looks like a reference
    colors = [color for i, color in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    index = experiments.index(method) if method in experiments else len(experiments)
    return dict(color=colors[index % len(colors)])


def inputs(args, name: str) -> tuple[Path, list[str], list[int]]:
    """The work folder, experiment list and seeds every figure that reads raw outputs needs."""
    what = f"figure:{name}"
    work = Path(need(args.work, "--work", what))
    return work, need(parse_names(args.experiment_list), "--experiment-list", what), need(
        parse_seeds(args.seeds), "--seeds", what)


def read_table1(args, name: str) -> pd.DataFrame:
    from dcod.reporting.tables import read_table

    return read_table(Path(need(args.results_dir, "--results-dir", f"figure:{name}")) / "table1.csv")


def listed_rows(table: pd.DataFrame, experiments: list[str], references=layout.TABLE_REFERENCES):
    """Table rows for the references present and every listed experiment; a listed one missing is an error."""
    missing = [name for name in experiments if name not in set(table["method"])]
    if missing:
        raise ValueError(f"table1.csv has no row for {missing}: rebuild it with the same --experiment-list")
    keep = [name for name in (*references, *experiments) if name in set(table["method"])]
    return table.set_index("method").loc[keep].reset_index()


def evaluated_once_note(axis, data: pd.DataFrame, method_column: str = "method") -> None:
    """A note naming the rows evaluated once (no spread to draw), as the axis's x label: the layout keeps
    room for it below the (rotated) tick labels, so it never overlaps them."""
    once = [str(m) for m, n in zip(data[method_column], data["n_seeds"]) if int(n) == 1]
    once = list(dict.fromkeys(once))
    if once:
        axis.set_xlabel(f"evaluated once (no error bar): {', '.join(once)}", fontsize=7, loc="left")


def save(figure, data: pd.DataFrame, out: str | Path) -> None:
    out = Path(out)
    if out.suffix != ".png":
        raise ValueError(f"figure output must be a .png path, got {out}")
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    write_csv(out.with_suffix(".csv"), data)
    print(f"figure: {out} (+ {out.with_suffix('.csv').name})")
