"""Table 3, prior offline methods (docs/claims.md, "Claim (a) over Tables 1 and 3, made operational").

One row per ``table: prior`` experiment, beside the Table 1 rows it is read against: ``report.subject`` and
``report.baseline``, the *same* runs (never retrained). Every row comes from Table 1's row builder
(``dcod.reporting.tables.build_rows``): the same seeds, the same intervals (subject − row in the
``dcod_minus_row_*`` columns), the same cost units. The ``table`` column says where a row belongs: ``1`` for
the rows read against, ``3`` for the prior methods.

Beside Table 1's cost columns, the cost of everything a run ran (claim (d) is about cost), means over seeds:

- ``student_forward_tokens``: tokens through a student-sized model: trained, a frozen reference's
  forwards, and a pass of its own before training (scoring or generating with the base student);
- ``teacher_forward_tokens_total``: the teacher's forwards during training and in such a pass;
- ``extra_generation_tokens``: tokens generated besides the shared one-off teacher traces (those are
  ``offline_trace_tokens``): rollouts during training and a pass's generation;
- ``extra_pass_wall_time_s``: the wall time of such a pass (timing file, like every wall time).

A pass a method runs once per seed before training (``dcod.student_pass``: the student's traces, their
scores) records its cost in run.json as ``offline_passes``: ``{name: {tokens_generated,
student_forward_tokens, teacher_forward_tokens, seconds}}`` (a field absent counts 0); a run without
``offline_passes`` ran none.

``results/table3.md`` shows the table for a reader and, against the published snapshot where one is
given, each method's snapshot accuracy or "not in the published snapshot".
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dcod.io import write_csv, write_text
from dcod.reporting import (held_out_splits, markdown_table, number_or_dash, paired_text, primary_split,
                            report_roles)
from dcod.reporting.claims import truthy
from dcod.reporting.tables import (TIMING_COLUMNS, _inputs, _teacher, build_rows, mean_std, order_columns, read_table,
                                   table_splits, timing_path)

PASS_FIELDS = ("tokens_generated", "student_forward_tokens", "teacher_forward_tokens", "seconds")
COST3_COLUMNS = ("student_forward_tokens", "teacher_forward_tokens_total", "extra_generation_tokens",
                 "extra_pass_wall_time_s")
TABLE3_TIMING = (*TIMING_COLUMNS, "extra_pass_wall_time_s")
NOT_PUBLISHED = "not in the published snapshot"


def pass_cost(run: dict) -> dict[str, float]:
    """The summed cost of the passes a run ran before training (run.json ``offline_passes``; none: zeros)."""
    passes = run.get("offline_passes") or {}
    if not isinstance(passes, dict):
        raise ValueError(f"run.json of {run.get('experiment', {}).get('name')!r} (seed {run.get('seed')}): "
                         f"'offline_passes' must map a pass name to its cost, got {type(passes).__name__}")
    total = dict.fromkeys(PASS_FIELDS, 0.0)
    for name, cost in passes.items():
        for field in PASS_FIELDS:
            value = float((cost or {}).get(field, 0.0))
            if math.isnan(value) or value < 0:
                raise ValueError(f"run.json pass {name!r}: {field} must be a count >= 0, got {value}")
            total[field] += value
    return total


def run_cost3(run: dict) -> dict[str, float]:
    """One run's Table 3 cost columns (module docstring), from its run.json."""
    extra = pass_cost(run)

    def recorded(key: str) -> float:
        return float(run.get(key, math.nan))

    return {"student_forward_tokens": recorded("student_tokens_trained") + float(run.get("reference_forward_tokens", 0))
            + extra["student_forward_tokens"],
            "teacher_forward_tokens_total": recorded("teacher_forward_tokens") + extra["teacher_forward_tokens"],
            "extra_generation_tokens": recorded("tokens_sampled") + extra["tokens_generated"],
            "extra_pass_wall_time_s": extra["seconds"]}


def read_against(main: list[str], subject: str, baseline: str) -> list[str]:
    """The Table 1 rows Table 3 is read against: the subject and the baseline, where Table 1 has them."""
    return [name for name in dict.fromkeys([subject, baseline]) if name in main]


def build_table3(work: Path, prior: list[str], against: list[str], seeds: list[int], baseline: str, subject: str,
                 teacher=None, paired: bool = False) -> pd.DataFrame:
    """Table 3's rows: ``against`` (Table 1's runs of the subject and baseline) then every ``prior`` method."""
    clash = sorted(set(prior) & set(against))
    if clash:
        raise ValueError(f"table3: {clash} are both prior (table: prior) and Table 1 rows")
    rows, splits = build_rows(work, [*against, *prior], seeds, baseline, subject, teacher, paired)
    for row in rows:
        runs = row.pop("_runs")
        row.pop("_oracle")
        row["table"] = "1" if row["method"] in against else "3"
        costs = [run_cost3(run) for run in runs]
        row.update({column: mean_std(cost[column] for cost in costs)[0] for column in COST3_COLUMNS})
    return order_columns(pd.DataFrame(rows), splits, ["table", *COST3_COLUMNS])


# ----------------------------------------------------------------------------- the reader's table
def published_accuracy(published: Path | None, split: str) -> dict[str, float] | None:
    """method -> the published snapshot's mean on ``split``, over its Table 1 and Table 3; None without one."""
    if published is None:
        return None
    found: dict[str, float] = {}
    for name in ("table1.csv", "table3.csv"):
        path = published / name
        if path.is_file():
            frame = pd.read_csv(path)
            if f"{split}_mean" in frame.columns:
                found.update(zip(frame["method"], frame[f"{split}_mean"]))
    return found


def methods_of(results_dir: Path, tables=("table1.csv", "table3.csv")) -> list[str]:
    """The methods of a results folder's Table 1 and Table 3, in order (either may be absent)."""
    names: list[str] = []
    for name in tables:
        if (Path(results_dir) / name).is_file():
            names += [m for m in pd.read_csv(Path(results_dir) / name)["method"] if m not in names]
    return names


def snapshot_lines(published: Path, fresh: Path) -> list[str]:
    """For the comparison with the published snapshot: the fresh run's methods it lacks, named as such
    rather than left out silently (a method new since the snapshot is not a failure). Only the tables the
    snapshot has are compared (a float-path rerun has Table 1 only; table3.md marks Table 3's methods)."""
    tables = [name for name in ("table1.csv", "table3.csv") if (Path(published) / name).is_file()]
    known = set(methods_of(published, tables))
    absent = [m for m in methods_of(fresh, tables) if m not in known]
    if not absent:
        return []
    return [f"{NOT_PUBLISHED.capitalize()} (no published number to compare with): "
            f"{', '.join(f'`{m}`' for m in absent)}.", ""]


def interval(row, key: str) -> str:
    """DCOD − row on ``key``: the seed-paired interval or range where the table has one, as Table 1 prints it."""
    if isinstance(row.get(f"dcod_minus_row_{key}_paired_kind"), str):
        return paired_text(row, f"dcod_minus_row_{key}_paired")
    values = [row.get(f"dcod_minus_row_{key}{suffix}", math.nan) for suffix in ("", "_ci_low", "_ci_high")]
    if any(pd.isna(v) for v in values):
        return "–"
    return f"{values[0]:+.1f} [{values[1]:+.1f}, {values[2]:+.1f}]"


def table3_frame(table: pd.DataFrame, subject: str, published: dict[str, float] | None = None) -> pd.DataFrame:
    """Table 3 as a reader sees it (the report and table3.md): accuracy, DCOD − row, cost, and, against a
    published snapshot, its accuracy on the primary split or "not in the published snapshot"."""
    splits = table_splits(table)
    primary = primary_split(splits) if published is not None else None
    records = []
    for _, row in table.iterrows():
        offline = row.get("offline_only")
        record = {"method": row["method"], "table": f"Table {row['table']}" if row["method"] != subject else "subject",
                  "offline only": "–" if pd.isna(offline) else ("yes" if truthy(offline) else "no"),
                  **{s: _mean_std_text(row, s) for s in splits},
                  **{f"DCOD − row {s}": interval(row, s) for s in held_out_splits(splits)},
                  "wall time (s)": number_or_dash(row.get("wall_time_s"), ",.1f"),
                  "student fwd tokens": number_or_dash(row.get("student_forward_tokens"), ",.0f"),
                  "teacher fwd tokens": number_or_dash(row.get("teacher_forward_tokens_total"), ",.0f"),
                  "extra generation tokens": number_or_dash(row.get("extra_generation_tokens"), ",.0f"),
                  "pass wall time (s)": number_or_dash(row.get("extra_pass_wall_time_s"), ",.1f")}
        if published is not None:
            value = published.get(row["method"])
            record[f"published {primary}"] = NOT_PUBLISHED if value is None else number_or_dash(value, ",.1f")
        records.append(record)
    return pd.DataFrame(records)


def _mean_std_text(row, split: str) -> str:
    mean, std = row.get(f"{split}_mean"), row.get(f"{split}_std")
    text = number_or_dash(mean, ",.1f")
    return text if std is None or pd.isna(std) else f"{text} ± {number_or_dash(std, ',.1f')}"


def markdown_lines(table: pd.DataFrame, subject: str, published: dict[str, float] | None = None) -> list[str]:
    prior = table[table["table"].astype(str) == "3"]
    lines = ["Prior offline methods (`table: prior`) beside the Table 1 runs they are read against (the same runs, "
             "not retrained). Offline only: the method's declared needs (run.json), what makes it a baseline of "
             "claim (a). Accuracy in % (mean ± std over seeds); DCOD − row in accuracy points with Table 1's "
             "intervals; cost means over seeds: forward tokens of the student-sized model (trained, a frozen "
             "reference, a pass before training) and of the teacher, tokens generated besides the shared teacher "
             "traces; wall times are this machine's and decide nothing.", ""]
    if prior.empty:
        lines += ["This profile has no prior offline method (`table: prior` experiment): only the rows read "
                  "against are shown.", ""]
    return lines + [markdown_table(table3_frame(table, subject, published)), ""]


# ----------------------------------------------------------------------------- command
def write_table3(args) -> None:
    """``--experiment-list``: the Table 1 rows read against (the profile's subject and baseline, where Table 1
    has them) and every prior method; ``--published``: the snapshot's results folder (or a file in it)."""
    from dcod.reporting import paired_base

    roles = report_roles(args.profile)
    work, names, seeds = _inputs(args, "table3")
    against = read_against(names, roles.subject, roles.baseline)
    prior = [name for name in names if name not in against]
    table = build_table3(work, prior, against, seeds, roles.baseline, roles.subject, _teacher(args),
                         paired_base(args.profile))
    out = Path(args.out)
    write_csv(timing_path(out), table[["method", *TABLE3_TIMING]])
    write_csv(out, table.drop(columns=list(TABLE3_TIMING)))
    published = Path(args.published) if getattr(args, "published", None) else None
    if published is not None and published.suffix == ".csv":
        published = published.parent
    written = read_table(out)
    split = primary_split(table_splits(written))
    lines = ["# Table 3: prior offline methods", "",
             *markdown_lines(written, roles.subject, published_accuracy(published, split))]
    write_text(out.with_suffix(".md"), "\n".join(lines))
    print(f"table3: {len(table)} rows ({len(prior)} prior) -> {out} (+ {out.with_suffix('.md').name}, timing)")
