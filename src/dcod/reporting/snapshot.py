"""The published snapshot (``paper/published/``) and the comparison of a fresh run against it.

The DAG writes ``results/``, ``figures/`` and ``paper/report.md`` and never touches the snapshot; those
outputs are not committed, so ``snakemake --cores all results/table1.csv`` in a fresh clone rebuilds
everything from scratch. ``dcod report publish`` copies a finished, clean run into the snapshot
(refusing uncommitted code), and ``dcod report compare`` tells a reviewer whether their rerun
reproduced it: per-method differences and whether every claim's verdict agrees. The comparison is of any
two Table 1s, run A (``--published``: the snapshot, or the float-path rerun) and run B (``--results-dir``),
so the same command measures the spread between two float paths (results/float_path.md).
See docs/reproducibility.md for what is bit-identical where.
"""

from __future__ import annotations

import datetime
import math
import os
import shutil
from pathlib import Path

import pandas as pd

from dcod.io import atomic_path, code_version, write_csv, write_json, write_text
from dcod.reporting import markdown_table, need
from dcod.reporting.tables import read_table, table_splits

# every results file the snapshot keeps (the comparison itself is about a rerun, never published)
RESULT_FILES = ("table1.csv", "table1_timing.csv", "table1_seeds.csv", "table2.csv", "table2_timing.csv",
                "table2_seeds.csv", "table3.csv", "table3_timing.csv", "table3.md", "tuning.csv",
                "calibration.csv", "calibration.md", "calibration_targets.csv", "robustness.csv", "robustness.md",
                "float_path.csv", "float_path.md")
# the second float path's Table 1 (results/float_paths/<name>/), published beside the main one
FLOAT_PATH_FILES = ("table1.csv", "table1_timing.csv", "table1_seeds.csv")
# Compared where both tables have the column: a snapshot published before a column existed (cap_share) is
# compared on the columns it has, never refused for the one it lacks.
COMPARED_COLUMNS = ("direct_step_fraction", "agreement_mean", "malformed_rate_mean", "cap_share",
                    "student_tokens_trained", "tokens_sampled", "teacher_forward_tokens", "training_flops")


# ----------------------------------------------------------------------------- publish
def _column_values(results_dir: Path, column: str) -> set[str]:
    """The distinct ``;``-separated values of ``column`` over Table 1, Table 2 and the float-path reruns'
    Table 1 (``float_paths/<name>/table1.csv``), where present: all are published, so all must come from the
    one commit, and each names the machine (and float path) it ran on."""
    values: set[str] = set()
    paths = [results_dir / "table1.csv", results_dir / "table2.csv", results_dir / "table3.csv",
             *sorted((results_dir / "float_paths").glob("*/table1.csv"))]
    for path in paths:
        if path.is_file():
            table = pd.read_csv(path, dtype={column: str})  # a commit like 992e093 would parse as a float
            if column in table:
                values |= {v for cell in table[column].dropna().astype(str) for v in cell.split(";") if v}
    return values


def table_versions(results_dir: Path) -> set[str]:
    """Every code version named in the tables of ``results_dir``."""
    return _column_values(results_dir, "code_version")


def check_publishable(results_dir: Path) -> str:
    """The one clean code version of a results folder; anything else is refused with the reason."""
    versions = table_versions(results_dir)
    if not versions:
        raise ValueError(f"{results_dir}: no table with a code_version column to publish")
    unclean = sorted(v for v in versions if v.endswith("+dirty") or v == "unknown")
    if unclean:
        raise ValueError(f"{results_dir}: refusing to publish results of uncommitted or unknown code "
                         f"({', '.join(unclean)}): commit, rerun from a clean tree, then publish")
    if len(versions) > 1:
        raise ValueError(f"{results_dir}: the tables mix code versions {', '.join(sorted(versions))}; "
                         "rerun them from one commit before publishing")
    return versions.pop()


def table_machines(results_dir: Path) -> list[str]:
    return sorted(_column_values(results_dir, "machine"))


def publishing_environment() -> dict:
    """The packages of the environment that publishes (the one that ran the DAG, in the documented route):
    the lock's and the installed versions' digests (dcod.io.environment_version) and every ``name: version``
    resolved. Each run's own run.json records the same digests when it ran."""
    from dcod.io import environment_version, installed_packages

    return {**environment_version(), "installed": dict(sorted(installed_packages().items()))}


def publish(profile_path: str, results_dir: Path, figures_dir: Path, out: Path) -> None:
    """Copy a clean run's results and figures into ``out``, regenerate the report there (so its links point
    at the snapshot's own figures) and record the provenance: the commit of the tables
    (``code_version``) and of the code that wrote the report (``report_code_version``); all or nothing."""
    from argparse import Namespace

    from dcod.reporting.paper import write_report

    version = check_publishable(results_dir)
    with atomic_path(out, directory=True) as tmp:
        (tmp / "results").mkdir()
        for name in RESULT_FILES:
            if (results_dir / name).is_file():
                shutil.copy2(results_dir / name, tmp / "results" / name)
        for folder in sorted((results_dir / "float_paths").glob("*")):
            for name in FLOAT_PATH_FILES:
                if (folder / name).is_file():
                    (tmp / "results" / "float_paths" / folder.name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(folder / name, tmp / "results" / "float_paths" / folder.name / name)
        shutil.copytree(figures_dir, tmp / "figures", ignore=shutil.ignore_patterns(".*", "README.md"))
        write_report(Namespace(profile=profile_path, results_dir=str(tmp / "results"),
                               figures_dir=str(tmp / "figures"), out=str(tmp / "report.md")))
        report = (tmp / "report.md").read_text().replace(str(tmp), str(out))
        write_text(tmp / "report.md", report)
        write_json(tmp / "provenance.json", {
            "code_version": version, "report_code_version": code_version(), "machines": table_machines(results_dir),
            "environment": publishing_environment(),
            "published": datetime.date.today().isoformat(), "profile": profile_path,
            "source": {"results": str(results_dir), "figures": str(figures_dir)}})
    print(f"publish: {results_dir} and {figures_dir} at {version} -> {out}")


def write_publish(args) -> None:
    publish(need(args.profile, "--profile", "publish"), Path(args.results_dir), Path(args.figures_dir),
            Path(args.out))


# ----------------------------------------------------------------------------- compare
def compare_tables(run_a: pd.DataFrame, run_b: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows (method, column, run_a, run_b, difference = run B − run A) for every method and compared
    column present in both tables; accuracy in points, the rest in its own unit."""
    splits = [s for s in table_splits(run_a) if s in table_splits(run_b)]
    columns = [f"{s}_mean" for s in splits] + [f"delta_{s}_vs_sft" for s in splits]
    columns += list(COMPARED_COLUMNS)
    columns = [c for c in columns if c in run_a.columns and c in run_b.columns]
    old, new = run_a.set_index("method"), run_b.set_index("method")
    rows = []
    for method in [m for m in old.index if m in new.index]:
        for column in columns:
            a, b = float(old.loc[method, column]), float(new.loc[method, column])
            rows.append({"method": method, "column": column, "run_a": a, "run_b": b,
                         "difference": b - a if not (math.isnan(a) or math.isnan(b)) else math.nan})
    return pd.DataFrame(rows, columns=["method", "column", "run_a", "run_b", "difference"])


def compare_claims(run_a: pd.DataFrame, run_b: pd.DataFrame, dir_a: Path | None = None,
                   dir_b: Path | None = None) -> pd.DataFrame:
    """Claim verdicts of both runs on their Table 1 alone (like for like: a snapshot or a float-path rerun may
    lack Table 3): each run's claims_table1.csv where it has one, else judged on its Table 1."""
    from dcod.reporting.claims import claims_of, judge_claims

    def claims(run, folder):
        return (claims_of(folder, run, table1_only=True) if folder is not None else judge_claims(run)) or []

    old, new = claims(run_a, dir_a), claims(run_b, dir_b)
    b_by_title = {claim.title: claim.verdict for claim in new}
    rows = [{"claim": c.title, "run A": c.verdict, "run B": b_by_title.get(c.title, "absent")} for c in old]
    frame = pd.DataFrame(rows, columns=["claim", "run A", "run B"])
    frame["agrees"] = frame["run A"] == frame["run B"]
    return frame


def comparison_lines(differences: pd.DataFrame, claims: pd.DataFrame, dir_a: Path, dir_b: Path,
                     machines: tuple[list[str], list[str]]) -> list[str]:
    accuracy = differences[differences["column"].str.endswith("_mean")
                           & ~differences["column"].isin(COMPARED_COLUMNS)].dropna(subset=["difference"])
    identical = bool((differences["difference"].fillna(0) == 0).all()) and not differences.empty
    lines = ["# Table 1 of two runs compared", "",
             f"Run A: `{_shown(dir_a)}` (`--published`: the published snapshot or the reference run); run B: "
             f"`{_shown(dir_b)}` (`--results-dir`). Differences are run B − run A. Generated by "
             "`python -m dcod report compare`.",
             "", f"- Run A on: {'; '.join(machines[0]) or 'not recorded'}",
             f"- Run B on: {'; '.join(machines[1]) or 'not recorded'}", ""]
    if identical:
        lines += ["Every compared number is identical.", ""]
    elif not accuracy.empty:
        worst = accuracy.loc[accuracy["difference"].abs().idxmax()]
        lines += [f"Largest accuracy difference: {worst['difference']:+.1f} points ({worst['method']}, "
                  f"{worst['column'][: -len('_mean')]}); mean absolute difference "
                  f"{accuracy['difference'].abs().mean():.1f} points over {len(accuracy)} method × split cells.", ""]
    agree = int(claims["agrees"].sum())
    lines += [f"Claim verdicts: {agree} of {len(claims)} agree between run A and run B.", "",
              markdown_table(claims.assign(agrees=claims["agrees"].map({True: "yes", False: "**no**"}))), ""]
    if not accuracy.empty:
        pivot = accuracy.pivot(index="method", columns="column", values="difference")
        pivot = pivot.map(lambda v: f"{v:+.1f}").reset_index()
        lines += ["Accuracy differences, run B − run A (points):", "", markdown_table(pivot), ""]
    lines += ["Floats are bit-identical only on the same kind of machine and float kernels (CPU kernels, thread "
              "count, torch build); otherwise expect different numbers and judge the rerun by the claim verdicts "
              "(docs/reproducibility.md).", ""]
    return lines


def _shown(path: Path) -> str:
    """A path as the reader's checkout names it (relative to the working directory when inside it)."""
    relative = os.path.relpath(Path(path).resolve(), Path.cwd())
    return relative if not relative.startswith("..") else str(path)


def write_comparison(args) -> None:
    dir_b = Path(args.results_dir)
    dir_a = Path(need(args.published, "--published", "compare"))
    if dir_a.suffix == ".csv":
        dir_a = dir_a.parent
    run_a, run_b = read_table(dir_a / "table1.csv"), read_table(dir_b / "table1.csv")
    differences = compare_tables(run_a, run_b)
    claims = compare_claims(run_a, run_b, dir_a, dir_b)
    out = Path(args.out)
    write_csv(out.with_suffix(".csv"), differences)
    machines = (table_machines(dir_a), table_machines(dir_b))
    from dcod.reporting.table3 import snapshot_lines

    lines = comparison_lines(differences, claims, dir_a, dir_b, machines) + snapshot_lines(dir_a, dir_b)
    write_text(out, "\n".join(lines))
    print(f"compare: {int(claims['agrees'].sum())}/{len(claims)} claim verdicts agree -> {out}")
