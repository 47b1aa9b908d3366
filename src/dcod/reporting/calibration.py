"""The toy world's calibration report (docs/toy_world.md): is the world the one the paper's mechanism needs?

Three targets are fixed before any method is compared: the teacher is reliable in both step styles;
the small student is unreliable on direct steps (so teacher traces contain behaviour it cannot
execute); errors compound on long chains. Each is judged here from the measured numbers with the
thresholds below, never typed in by hand, so a change of world settings that breaks the premise shows
up as FAIL. Step error rates are pooled counts (errors / steps over all samples and seeds), not means of
per-problem rates, which would over-weight problems with few steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dcod.io import write_csv, write_text
from dcod.reporting import (eval_dirs, markdown_table, need, parse_seeds, read_samples, report_roles,
                            split_order)

# the references measured besides the trained student (the profile's report.baseline experiment)
REFERENCE_MODELS = ("teacher", "teacher_direct", "teacher_decomposed", "base_student")
ARITHMETIC_SPLITS = ("id", "long")
TEACHER_MIN_ACCURACY = 95.0  # % on every arithmetic split, in each forced style
TEACHER_MAX_STEP_ERROR = 0.01  # per-step error rate of the teacher in its forced style
STUDENT_DIRECT_ERROR_RATIO = 2.0  # student's direct-step error rate >= this x its decomposed one
STUDENT_MIN_DIRECT_ERROR = 0.05  # ... and at least this high in absolute terms
COLUMNS = ["model", "split", "n_seeds", "n", "accuracy", "direct_step_fraction", "step_error_rate_direct",
           "step_error_rate_decomposed", "steps_direct", "errors_direct", "steps_decomposed", "errors_decomposed"]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else math.nan


def summarise_model(name: str, samples: list[pd.DataFrame]) -> list[dict]:
    """One row per split: accuracy (%) and pooled step counts over every sample of every seed."""
    pooled = pd.concat(samples, ignore_index=True)
    rows = []
    for split in split_order([pooled]):
        group = pooled[pooled["split"] == split]
        counts = {c: float(group[c].fillna(0).sum()) for c in ("steps_direct", "errors_direct",
                                                                "steps_decomposed", "errors_decomposed")}
        rows.append({"model": name, "split": split, "n_seeds": len(samples), "n": len(group) // len(samples),
                     "accuracy": 100.0 * float(group["correct"].mean()),
                     "direct_step_fraction": _ratio(counts["steps_direct"],
                                                    counts["steps_direct"] + counts["steps_decomposed"]),
                     "step_error_rate_direct": _ratio(counts["errors_direct"], counts["steps_direct"]),
                     "step_error_rate_decomposed": _ratio(counts["errors_decomposed"], counts["steps_decomposed"]),
                     **counts})
    return rows


def build_calibration(work: Path, seeds: list[int], baseline: str) -> pd.DataFrame:
    """The references and the ``baseline`` experiment (the student after plain distillation), per split."""
    rows = []
    for name in (*REFERENCE_MODELS, baseline):
        rows.extend(summarise_model(name, [read_samples(d) for d in eval_dirs(work, name, seeds)]))
    return pd.DataFrame(rows)[COLUMNS]


# ----------------------------------------------------------------------------- targets
@dataclass
class Target:
    name: str
    question: str
    status: str  # PASS, FAIL, or N/A when the profile has no split to measure it on
    evidence: str


def _row(frame: pd.DataFrame, model: str, split: str) -> pd.Series | None:
    rows = frame[(frame["model"] == model) & (frame["split"] == split)]
    return rows.iloc[0] if len(rows) else None


def teacher_target(frame: pd.DataFrame) -> Target:
    question = (f"teacher reliable on both styles: accuracy >= {TEACHER_MIN_ACCURACY:g}% and step error rate "
                f"<= {TEACHER_MAX_STEP_ERROR:g} in each forced style on {', '.join(ARITHMETIC_SPLITS)}")
    checks, evidence = [], []
    for style in ("direct", "decomposed"):
        for split in ARITHMETIC_SPLITS:
            row = _row(frame, f"teacher_{style}", split)
            if row is None:
                return Target("teacher_reliable", question, "N/A", f"no teacher_{style} result on {split}")
            error = row[f"step_error_rate_{style}"]
            checks.append(row["accuracy"] >= TEACHER_MIN_ACCURACY and not math.isnan(error)
                          and error <= TEACHER_MAX_STEP_ERROR)
            evidence.append(f"{style}/{split}: {row['accuracy']:.1f}% accuracy, step error {error:.4f}")
    return Target("teacher_reliable", question, "PASS" if all(checks) else "FAIL", "; ".join(evidence))


def trained_model(frame: pd.DataFrame) -> str | None:
    """The trained student of a calibration frame: its one model that is not a reference."""
    return next((m for m in frame["model"].unique() if m not in REFERENCE_MODELS), None)


def student_target(frame: pd.DataFrame) -> Target:
    student = trained_model(frame)
    question = (f"small student unreliable on direct steps: {student} student's direct-step error rate >= "
                f"{STUDENT_DIRECT_ERROR_RATIO:g} x its decomposed one and >= {STUDENT_MIN_DIRECT_ERROR:g} "
                f"(pooled over {', '.join(ARITHMETIC_SPLITS)})")
    rows = frame[(frame["model"] == student) & frame["split"].isin(ARITHMETIC_SPLITS)]
    if rows.empty:
        return Target("student_direct_unreliable", question, "N/A", f"no {student} result on the arithmetic splits")
    direct = _ratio(rows["errors_direct"].sum(), rows["steps_direct"].sum())
    decomposed = _ratio(rows["errors_decomposed"].sum(), rows["steps_decomposed"].sum())
    passed = (not math.isnan(direct) and direct >= STUDENT_MIN_DIRECT_ERROR
              and (math.isnan(decomposed) or direct >= STUDENT_DIRECT_ERROR_RATIO * decomposed))
    evidence = (f"direct-step error {direct:.4f} over {rows['steps_direct'].sum():.0f} steps, decomposed-step "
                f"error {decomposed:.4f} over {rows['steps_decomposed'].sum():.0f} steps")
    return Target("student_direct_unreliable", question, "PASS" if passed else "FAIL", evidence)


def compounding_target(frame: pd.DataFrame) -> Target:
    models = ("base_student", trained_model(frame))
    question = f"errors compound: accuracy on long < accuracy on id for {', '.join(map(str, models))}"
    checks, evidence = [], []
    for model in models:
        short, long = _row(frame, model, "id"), _row(frame, model, "long")
        if short is None or long is None:
            return Target("errors_compound", question, "N/A", f"no id/long result for {model}")
        checks.append(long["accuracy"] < short["accuracy"])
        evidence.append(f"{model}: id {short['accuracy']:.1f}%, long {long['accuracy']:.1f}%")
    return Target("errors_compound", question, "PASS" if all(checks) else "FAIL", "; ".join(evidence))


def check_targets(frame: pd.DataFrame) -> list[Target]:
    return [teacher_target(frame), student_target(frame), compounding_target(frame)]


# ----------------------------------------------------------------------------- markdown
def row_meanings(student: str) -> list[tuple[str, str]]:
    return [
        ("teacher", "the teacher as used for traces (mixed styles): the quality ceiling of the supervision"),
        ("teacher_direct / teacher_decomposed", "the teacher forced to one style: it must be reliable in both, "
         "otherwise a style shift could be explained by bad teacher steps"),
        ("base_student", "the student before distillation (native decomposed style): its starting accuracy"),
        (student, "the student after plain distillation on the mixed traces, pooled over seeds: it writes both "
         "styles, so its direct- vs decomposed-step error rates show whether direct steps are beyond its capacity"),
    ]


def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    shown["accuracy"] = shown["accuracy"].map(lambda v: f"{v:.1f}%")
    for column in ("direct_step_fraction", "step_error_rate_direct", "step_error_rate_decomposed"):
        shown[column] = shown[column].map(lambda v: "" if math.isnan(v) else f"{v:.4f}")
    for column in ("steps_direct", "errors_direct", "steps_decomposed", "errors_decomposed"):
        shown[column] = shown[column].map(lambda v: f"{v:.0f}")
    return shown


def render_markdown(frame: pd.DataFrame, targets: list[Target]) -> str:
    lines = ["# Toy-world calibration", "",
             "Generated by `python -m dcod report calibration` from the evaluation samples; do not edit.",
             "Accuracy in %; step error rates are pooled errors / steps; empty = no such steps.", "",
             "## What each row checks", ""]
    lines += [f"- **{model}**: {meaning}." for model, meaning in row_meanings(trained_model(frame))]
    lines += ["", "## Measurements", "", markdown_table(_formatted(frame)), "", "## Calibration targets", ""]
    for target in targets:
        lines.append(f"- **{target.status}**: {target.question}. Measured: {target.evidence}.")
    return "\n".join(lines) + "\n"


def write_calibration(args) -> None:
    work = Path(need(args.work, "--work", "calibration"))
    seeds = need(parse_seeds(args.seeds), "--seeds", "calibration")
    frame = build_calibration(work, seeds, report_roles(args.profile).baseline)
    out = Path(args.out)
    write_csv(out, frame)
    targets = check_targets(frame)
    write_text(out.with_suffix(".md"), render_markdown(frame, targets))
    for target in targets:
        print(f"calibration: {target.status} {target.name}: {target.evidence}")
