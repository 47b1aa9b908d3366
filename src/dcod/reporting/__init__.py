"""Reporting: tables, calibration, figures and the generated report, computed only from pipeline outputs.

This module reads the pipeline's results under a work folder ``W`` (where they lie is ``dcod.layout``,
which the DAG reads too), so tables and figures cannot disagree about a path or a missing-file message.
Every reader fails with ``FileNotFoundError`` naming the missing file: a report built from a silently
skipped run would be wrong in a way nobody sees.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from dcod.io import read_jsonl
from dcod.layout import REFERENCES, SEEDED_REFERENCE, eval_dir, run_dir

VALIDATION_SPLIT = "validation"  # the tuning split: shown, never used to judge a claim
STEP_FIELDS = ("steps_direct", "errors_direct", "steps_decomposed", "errors_decomposed", "steps_malformed")


def report_roles(profile_path: str | None):
    """The profile's ``report`` section (the experiment under test and the baseline the claims compare
    with); without a profile, the defaults of the shipped profiles."""
    from dcod.config import ReportConfig, load_profile

    return load_profile(profile_path).report if profile_path else ReportConfig()


def parse_names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def parse_seeds(text: str | None) -> list[int]:
    try:
        return [int(seed) for seed in parse_names(text)]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None


def need(value, flag: str, what: str):
    """Arguments are optional in the shared parser; each report command states what it needs."""
    if value in (None, "", []):
        raise ValueError(f"report {what}: {flag} is required")
    return value


def require(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing input {path} (has the stage that writes it run?)")
    return path


def is_reference(name: str) -> bool:
    return name in REFERENCES


def paired_base(profile_path) -> bool:
    """Whether a profile starts each training seed from its own base student (``pretrain.per_seed``)."""
    if not profile_path:
        return False
    from dcod.config import load_profile

    return load_profile(profile_path).pretrain.per_seed


def is_seeded(name: str, paired: bool = False) -> bool:
    """Whether a model has one evaluation per seed: every run, and the base student when ``paired``."""
    return not is_reference(name) or (paired and name == SEEDED_REFERENCE)


def eval_dirs(work: Path, name: str, seeds: list[int], paired: bool = False) -> list[Path]:
    """One evaluation folder per seed; references have a single folder and no seed, except the base
    student under ``pretrain.per_seed`` (``paired``): each seed's own base student, evaluated per seed."""
    if not is_seeded(name, paired):
        return [eval_dir(work, name)]
    return [eval_dir(work, name, seed) for seed in seeds]


def run_dirs(work: Path, name: str, seeds: list[int]) -> list[Path]:
    return [run_dir(work, name, seed) for seed in seeds]


def read_metrics(folder: Path) -> pd.DataFrame:
    # provenance columns are text: a commit such as 992e093 would otherwise parse as the float 9.92e95
    return pd.read_csv(require(Path(folder) / "metrics.csv"), dtype={"code_version": str, "machine": str})


def read_samples(folder: Path) -> pd.DataFrame:
    """Per-problem rows; step counts that the evaluator left out (a style never used) count as 0."""
    path = require(Path(folder) / "samples.jsonl")
    frame = pd.DataFrame(read_jsonl(path))
    if frame.empty:
        raise ValueError(f"{path}: no samples")
    for column in ("id", "split", "correct"):
        if column not in frame:
            raise ValueError(f"{path}: no {column!r} field")
    frame["id"] = frame["id"].astype(str)
    frame["correct"] = frame["correct"].astype(bool)
    arith = frame["task"].eq("arith") if "task" in frame else pd.Series(True, index=frame.index)
    for column in STEP_FIELDS:
        values = frame[column] if column in frame else pd.Series(math.nan, index=frame.index)
        frame[column] = values.astype(float).where(~arith, values.astype(float).fillna(0.0))
    return frame


def read_stability(folder: Path) -> pd.DataFrame:
    return pd.read_csv(require(Path(folder) / "stability.csv"))


def read_run(folder: Path) -> dict:
    with open(require(Path(folder) / "run.json")) as handle:
        return json.load(handle)


def read_train_log(folder: Path) -> pd.DataFrame:
    path = require(Path(folder) / "train_log.jsonl")
    return pd.DataFrame(read_jsonl(path))


def read_traces_info(work: Path) -> dict:
    with open(require(Path(work) / "traces" / "train.json")) as handle:
        return json.load(handle)


def split_order(frames: list[pd.DataFrame]) -> list[str]:
    """Splits in the order the evaluator wrote them (the profile's order), union over models."""
    order: list[str] = []
    for frame in frames:
        for split in frame["split"].astype(str):
            if split not in order:
                order.append(split)
    return order


def held_out_splits(splits: list[str]) -> list[str]:
    return [split for split in splits if split != VALIDATION_SPLIT]


def primary_split(splits: list[str]) -> str:
    """The headline split: the toy's in-distribution ``id``, else the first held-out benchmark."""
    if "id" in splits:
        return "id"
    held_out = held_out_splits(splits)
    if not held_out:
        raise ValueError(f"no held-out split among {splits}")
    return held_out[0]


def number_or_dash(value, spec: str = ".1f", dash: str = "–") -> str:
    """The one formatter of a report cell: ``value`` formatted by ``spec`` (``",.0f"``, ``"+.1f"``,
    ``".0%"``, ``".3g"``), or ``dash`` when it is missing (None or NaN)."""
    if value is None or pd.isna(value):
        return dash
    return format(float(value), spec)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of already formatted cells (no tabulate dependency)."""
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join("" if _blank(v) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def paired_text(row, prefix: str, digits: int = 1) -> str:
    """A seed-paired difference: ``+x [low, high]`` for a 95% t interval, ``+x (range low to high)`` for
    fewer than 3 seeds, which is never called a CI (docs/claims.md, "Intervals")."""
    kind = row.get(f"{prefix}_kind")
    point, low, high = (row.get(f"{prefix}{suffix}", math.nan) for suffix in ("", "_low", "_high"))
    if not isinstance(kind, str) or pd.isna(point):
        return "–"
    spec = f"+.{digits}f"
    if kind == "same":
        return format(0.0, spec)
    if kind == "range":
        return f"{point:{spec}} (range {low:{spec}} to {high:{spec}})"
    return f"{point:{spec}} [{low:{spec}}, {high:{spec}}]"
