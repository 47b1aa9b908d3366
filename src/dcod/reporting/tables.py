"""Table 1 (main comparison) and Table 2 (ablations of the method under test): tidy CSV, one row per method.

Accuracy is in percent, mean and sample std (ddof=1) over training seeds; the spread is left empty for
a single seed rather than shown as 0, which would claim a precision we do not have. ``method − baseline``
(the profile's ``report.baseline``; columns ``delta_<split>_vs_sft``, named after the paper's baseline)
is a paired bootstrap over *problems* (the seeds are averaged per problem first), because both methods
answer the same problems: pairing removes the problem-difficulty variance that an unpaired comparison
of two means would carry. The replicates use a fixed seed per split, so the table is bit-reproducible
and every method on a split is resampled with the same problem draws.

What a run's method declared is read from its run.json (written at train time): its needs (whether the
one-off offline trace cost counts), its Table 2 knobs and the diagnostics its weights log. No method is
named here.
"""

from __future__ import annotations

import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dcod.io import write_csv
from dcod.reporting import (eval_dirs, held_out_splits, is_reference, need, parse_names, parse_seeds, read_metrics,
                            read_run, read_samples, read_stability, read_traces_info, read_train_log, report_roles,
                            run_dirs, split_order)

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 20260514
ARITHMETIC_SPLITS = ("id", "long")  # where the toy's step styles are counted (direct_step_fraction)
COST_COLUMNS = ("wall_time_s", "student_tokens_trained", "tokens_sampled", "teacher_forward_tokens")
FINAL_PHASE = 0.2  # diagnostics are averaged over the last 20% of optimiser steps
DESCRIPTIONS = {"teacher": "teacher (reference, evaluated once)",
                "base_student": "base student before distillation (reference, evaluated once)"}


@dataclass
class Evaluated:
    """Everything evaluation wrote for one model: one frame per seed (one in all for references)."""

    name: str
    seeds: list[int]
    metrics: list[pd.DataFrame]
    samples: list[pd.DataFrame]
    stability: list[pd.DataFrame] | None


def load_evaluated(work: Path, name: str, seeds: list[int]) -> Evaluated:
    dirs = eval_dirs(work, name, seeds)
    metrics = [read_metrics(folder) for folder in dirs]
    samples = [read_samples(folder) for folder in dirs]
    # stability.csv is absent when the profile switches it off; then it must be absent for every seed
    present = [(folder / "stability.csv").is_file() for folder in dirs]
    stability = [read_stability(folder) for folder in dirs] if any(present) else None
    return Evaluated(name, [] if is_reference(name) else list(seeds), metrics, samples, stability)


def mean_std(values) -> tuple[float, float]:
    values = np.asarray(list(values), dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else math.nan


def split_accuracy(evaluated: Evaluated, split: str) -> list[float]:
    """Per-seed accuracy (%) on ``split``; a split present for some seeds only is an error."""
    values = [100.0 * float(m.loc[m["split"] == split, "accuracy"].iloc[0])
              for m in evaluated.metrics if (m["split"] == split).any()]
    if values and len(values) != len(evaluated.metrics):
        raise ValueError(f"{evaluated.name}: split {split!r} is missing from some seeds' metrics.csv")
    return values


def direct_step_fraction(metrics: pd.DataFrame) -> float:
    """Share of arithmetic steps written in the direct style, pooled over the id and long splits."""
    rows = metrics[metrics["split"].isin(ARITHMETIC_SPLITS)]
    if rows.empty or "steps_direct" not in rows or "steps_decomposed" not in rows:
        return math.nan
    direct = rows["steps_direct"].fillna(0).sum()
    total = direct + rows["steps_decomposed"].fillna(0).sum()
    return float(direct / total) if total else math.nan


def problem_means(evaluated: Evaluated, split: str) -> pd.Series:
    """Correctness per problem id averaged over seeds (index sorted, so order never depends on files)."""
    columns = []
    for seed_index, samples in enumerate(evaluated.samples):
        rows = samples[samples["split"] == split]
        if rows["id"].duplicated().any():
            raise ValueError(f"{evaluated.name}: duplicate problem ids on split {split!r}")
        columns.append(rows.set_index("id")["correct"].astype(float).rename(seed_index))
    table = pd.concat(columns, axis=1)
    if table.isna().any().any():
        raise ValueError(f"{evaluated.name}: the seeds were evaluated on different problems of split {split!r}")
    return table.mean(axis=1).sort_index()


def paired_bootstrap(method: pd.Series, reference: pd.Series, split: str) -> tuple[float, float, float]:
    """(delta, 2.5%, 97.5%) of mean(method) − mean(reference) in accuracy points, paired by problem id."""
    if set(method.index) != set(reference.index):
        raise ValueError(f"split {split!r}: the two models were evaluated on different problems")
    ids = sorted(method.index)
    differences = method.reindex(ids).to_numpy(float) - reference.reindex(ids).to_numpy(float)
    if differences.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(split.encode())])
    draws = rng.integers(0, differences.size, size=(BOOTSTRAP_REPLICATES, differences.size))
    replicates = 100.0 * differences[draws].mean(axis=1)
    low, high = np.percentile(replicates, [2.5, 97.5])
    return 100.0 * float(differences.mean()), float(low), float(high)


def accuracy_row(evaluated: Evaluated, splits: list[str], baseline: Evaluated | None) -> dict:
    row: dict = {"method": evaluated.name, "n_seeds": len(evaluated.metrics),
                 "seeds": ";".join(map(str, evaluated.seeds))}
    for split in splits:
        row[f"{split}_mean"], row[f"{split}_std"] = mean_std(split_accuracy(evaluated, split))
    row["direct_step_fraction"] = mean_std(direct_step_fraction(m) for m in evaluated.metrics)[0]
    for column in ("agreement", "malformed_rate"):
        values = [frame[column].mean() for frame in evaluated.stability] if evaluated.stability else []
        row[f"{column}_mean"], row[f"{column}_std"] = mean_std(values)
    for split in held_out_splits(splits):
        delta = (math.nan,) * 3
        if baseline is not None and any((s["split"] == split).any() for s in evaluated.samples):
            delta = paired_bootstrap(problem_means(evaluated, split), problem_means(baseline, split), split)
        row[f"delta_{split}_vs_sft"], row[f"delta_{split}_ci_low"], row[f"delta_{split}_ci_high"] = delta
    return row


def _declared(run: dict, key: str):
    """A method declaration that training wrote into run.json (``needs``, ``report_columns``, ...)."""
    if key not in run:
        experiment = run.get("experiment", {}).get("name")
        raise ValueError(f"run.json of {experiment!r} (seed {run.get('seed')}) has no {key!r}: it was written "
                         "before methods declared their needs; retrain it")
    return run[key]


def uses_offline_traces(run: dict) -> bool:
    """Whether the run trained on the shared offline teacher traces (its method's declared needs)."""
    return bool(_declared(run, "needs")["offline_traces"])


def cost_row(runs: list[dict], traces: dict | None) -> dict:
    """Training cost, mean over seeds; the one-off offline trace cost for methods that use the traces."""
    row = {column: mean_std(float(run.get(column, math.nan)) for run in runs)[0] for column in COST_COLUMNS}
    offline = traces is not None and uses_offline_traces(runs[0])
    row["offline_trace_tokens"] = float(traces["tokens_generated"]) if offline else math.nan
    row["offline_trace_seconds"] = float(traces["generation_seconds"]) if offline else math.nan
    return row


def code_versions(evaluated: Evaluated, runs: list[dict]) -> str:
    versions = {str(v) for m in evaluated.metrics if "code_version" in m for v in m["code_version"].dropna()}
    versions |= {str(run["code_version"]) for run in runs if run.get("code_version")}
    return ";".join(sorted(versions))


def machines(evaluated: Evaluated, runs: list[dict]) -> str:
    """The machines that trained and evaluated a row (``dcod.provenance.machine_label``), ``;``-joined;
    empty for artefacts written before machines were recorded."""
    from dcod.provenance import machine_label

    labels = {str(v) for m in evaluated.metrics if "machine" in m for v in m["machine"].dropna()}
    labels |= {machine_label(run["machine"]) for run in runs if isinstance(run.get("machine"), dict)}
    return ";".join(sorted(labels))


def build_rows(work: Path, names: list[str], seeds: list[int], baseline: str) -> tuple[list[dict], list[str]]:
    """One row per model (accuracy, stability, bootstrap vs ``baseline``, cost) and the split order."""
    evaluated = {name: load_evaluated(work, name, seeds) for name in names}
    runs = {name: [] if is_reference(name) else [read_run(d) for d in run_dirs(work, name, seeds)]
            for name in names}
    needs_traces = any(runs[name] and uses_offline_traces(runs[name][0]) for name in names)
    traces = read_traces_info(work) if needs_traces else None
    splits = split_order([m for ev in evaluated.values() for m in ev.metrics])
    reference = evaluated.get(baseline)
    if reference is None:
        print(f"report: no baseline {baseline!r} among {names}: the delta columns stay empty", file=sys.stderr)
    rows = []
    for name in names:
        row = accuracy_row(evaluated[name], splits, reference)
        description = runs[name][0].get("experiment", {}).get("description") if runs[name] else None
        row["description"] = description or DESCRIPTIONS.get(name, name)
        cost = cost_row(runs[name], traces) if runs[name] else dict.fromkeys(
            [*COST_COLUMNS, "offline_trace_tokens", "offline_trace_seconds"], math.nan)
        lrs = sorted({float(run["train"]["lr"]) for run in runs[name] if "lr" in run.get("train", {})})
        rows.append({**row, **cost, "lr": ";".join(f"{lr:g}" for lr in lrs),
                     "code_version": code_versions(evaluated[name], runs[name]),
                     "machine": machines(evaluated[name], runs[name]), "_runs": runs[name]})
    return rows, splits


def table_splits(table: pd.DataFrame) -> list[str]:
    """The split order of a written table, read back from its ``<split>_mean``/``<split>_std`` pairs."""
    stability = {"agreement", "malformed_rate"}
    return [column[: -len("_mean")] for column in table.columns if column.endswith("_mean")
            and f"{column[: -len('_mean')]}_std" in table.columns and column[: -len("_mean")] not in stability]


def order_columns(frame: pd.DataFrame, splits: list[str], extra: list[str]) -> pd.DataFrame:
    accuracy = [f"{split}_{stat}" for split in splits for stat in ("mean", "std")]
    stability = ["agreement_mean", "agreement_std", "malformed_rate_mean", "malformed_rate_std"]
    deltas = [f"delta_{split}_{kind}" for split in held_out_splits(splits)
              for kind in ("vs_sft", "ci_low", "ci_high")]
    columns = ["method", "description", "lr", "n_seeds", "seeds", *accuracy, "direct_step_fraction", *stability,
               *COST_COLUMNS, "offline_trace_tokens", "offline_trace_seconds", *deltas, *extra, "code_version", "machine"]
    return frame[columns]


def build_table1(work: Path, experiments: list[str], seeds: list[int], baseline: str) -> pd.DataFrame:
    rows, splits = build_rows(work, ["teacher", "base_student", *experiments], seeds, baseline)
    return order_columns(pd.DataFrame([{k: v for k, v in r.items() if k != "_runs"} for r in rows]), splits, [])


# ----------------------------------------------------------------------------- table 2
def final_phase_diagnostics(work: Path, name: str, seeds: list[int], keys: list[str]) -> dict:
    """Mean of each logged diagnostic (``keys``) over the last 20% of steps, then mean over seeds."""
    if not keys:  # a method without weights logs none
        return {}
    per_seed = []
    for folder in run_dirs(work, name, seeds):
        log = read_train_log(folder)
        missing = sorted(set(keys) - set(log.columns))
        if missing or log.empty:
            raise ValueError(f"{folder / 'train_log.jsonl'}: a weighted run without diagnostics "
                             f"{missing or 'rows'}")
        tail = log.iloc[len(log) - max(1, math.ceil(FINAL_PHASE * len(log))):]
        per_seed.append({key: float(tail[key].mean()) for key in keys})
    return {f"final_{key}": mean_std(seed[key] for seed in per_seed)[0] for key in keys}


def build_table2(work: Path, experiments: list[str], seeds: list[int], subject: str,
                 baseline: str) -> pd.DataFrame:
    """The ablations beside ``subject`` and ``baseline`` (role: reference): each run's declared knobs
    (report_columns) and the final-phase mean of the diagnostics its weights log."""
    rows, splits = build_rows(work, experiments, seeds, baseline)
    extra = ["role"]
    for row in rows:
        run = row.pop("_runs")[0]
        table = run.get("experiment", {}).get("table")
        row["role"] = "reference" if row["method"] in (baseline, subject) else table
        knobs = dict(_declared(run, "report_columns"))  # [name, value] pairs in the method's order
        row.update(knobs)
        row.update(final_phase_diagnostics(work, row["method"], seeds, _declared(run, "weight_diagnostics")))
        extra += [column for column in knobs if column not in extra]
    diagnostics = [column for row in rows for column in row if column.startswith("final_")]
    extra += list(dict.fromkeys(diagnostics))
    frame = pd.DataFrame(rows)
    return order_columns(frame, splits, extra)


def table2_knobs(table2: pd.DataFrame) -> list[str]:
    """The knob columns of a written Table 2: after ``role``, before the ``final_`` diagnostics."""
    columns = list(table2.columns)
    knobs = []
    for column in columns[columns.index("role") + 1:]:
        if column.startswith("final_") or column in ("code_version", "machine"):
            break
        knobs.append(column)
    return knobs


def _inputs(args, what: str) -> tuple[Path, list[str], list[int]]:
    work = Path(need(args.work, "--work", what))
    experiments = need(parse_names(args.experiment_list), "--experiment-list", what)
    seeds = need(parse_seeds(args.seeds), "--seeds", what)
    return work, experiments, seeds


# Measured wall times differ from run to run; everything else in a table is a deterministic function
# of the seeds. They go to a sibling file so that two clean runs give bit-identical tables.
TIMING_COLUMNS = ("wall_time_s", "offline_trace_seconds")


def timing_path(table_path: str | Path) -> Path:
    """``results/table1.csv`` -> ``results/table1_timing.csv``."""
    table_path = Path(table_path)
    return table_path.with_name(f"{table_path.stem}_timing{table_path.suffix}")


def read_table(path: str | Path) -> pd.DataFrame:
    """A table with its timing columns merged back in (NaN where the timing file lacks a method)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing input {path} (run `dcod report {path.stem}` first)")
    table = pd.read_csv(path)
    timing = timing_path(path)
    if timing.is_file():
        table = table.merge(pd.read_csv(timing), on="method", how="left")
    return table


def _write_split(frame: pd.DataFrame, out: str | Path, what: str) -> None:
    write_csv(timing_path(out), frame[["method", *TIMING_COLUMNS]])
    write_csv(out, frame.drop(columns=list(TIMING_COLUMNS)))
    print(f"{what}: {len(frame)} rows -> {out} (wall times -> {timing_path(out)})")


def write_table1(args) -> None:
    roles = report_roles(args.profile)
    _write_split(build_table1(*_inputs(args, "table1"), roles.baseline), args.out, "table1")


def write_table2(args) -> None:
    roles = report_roles(args.profile)
    _write_split(build_table2(*_inputs(args, "table2"), roles.subject, roles.baseline), args.out, "table2")
