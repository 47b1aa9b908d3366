"""The toy world's calibration report (docs/toy_world.md): is the world in the paper's regime?

The targets are fixed before any method is compared, each judged here from the measured numbers with
the thresholds below, never typed in by hand, so a change of world settings that breaks the premise
shows up as FAIL:

- the teacher is reliable in both step styles;
- distillation helps: SFT on the mixed teacher traces beats the base student on ``id`` (and does not lose
  on ``long``), and SFT on student-style traces (the oracle reference) beats it by a wide margin;
- capacity gap: after SFT, the student's direct steps fail far more often than its decomposed ones;
- errors compound: ``long`` < ``id`` for the base student and for SFT;
- no knife edge: every base student pre-trained for the world seed (``pretrain.seed`` and
  ``ProfileConfig.knife_edge_pretrain_seeds``: the calibration's extra seeds and, under
  ``pretrain.per_seed``, each training seed's own) lands close to the others on ``id``; judged on the main
  world and, in the robustness report, on every other world seed;
- plateau (main world only): pre-training longer barely moves ``id``;
- the teacher term matters (docs/toy_world.md, "The next world"): over the training traces, the teacher's
  per-trace mean log-prob spreads at least half as much as the base student's and is not near-collinear
  with it, so DCOD's ratio (docs/method.md) can rank traces differently from the student term alone.

A target whose inputs are missing is reported as ``not measured`` (never PASS), naming what is missing.
Step error rates are pooled counts (errors / steps over all samples and seeds), not means of per-problem
rates, which would over-weight problems with few steps. Accuracies of a trained model are pooled over its
seeds (every seed answers the same problems, so this is the mean over seeds).

Inputs under the work folder ``W`` (written by the DAG; the paths are the functions below):
  W/eval/<reference>/samples.jsonl, W/eval/<experiment>/seed<s>/samples.jsonl
  W/calibration/pretrain_seed<S>/eval/base_student/samples.jsonl   (base student, other pre-training seed)
  W/calibration/steps_x<factor>/eval/base_student/samples.jsonl    (base student, factor x pre-training steps)
  W/base_student_run/train_log.jsonl, W/calibration/<tag>/base_student_run/train_log.jsonl (loss, shown only)
  W/traces/train.parquet, W/base_student                            (the teacher-term target)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dcod.io import write_csv, write_text
from dcod.layout import REFERENCES, pretrain_root, steps_factor_root, steps_factor_tag
from dcod.reporting import (eval_dirs, markdown_table, need, number_or_dash, parse_seeds, read_samples, read_train_log,
                            split_order)

ARITHMETIC_SPLITS = ("id", "long")
TEACHER_MIN_ACCURACY = 95.0  # % on every arithmetic split, in each forced style
TEACHER_MAX_STEP_ERROR = 0.01  # per-step error rate of the teacher in its forced style
SFT_MIN_GAIN_ID = 5.0  # points: SFT on the mixed traces >= base student + this on id
ORACLE_MIN_GAIN_ID = 15.0  # points: SFT on student-style traces >= base student + this on id
STUDENT_DIRECT_ERROR_RATIO = 2.0  # SFT student's direct-step error rate >= this x its decomposed one
STUDENT_MIN_DIRECT_ERROR = 0.05  # ... and at least this high in absolute terms
# ... judged on at least this many direct steps (pooled): a rate's binomial standard error is then <= 0.1
# (0.5 / sqrt(25)), a quarter of the 0.25 -> 0.5 distance between "no gap" and "2 x" at a typical decomposed
# rate; fewer is not measured, never PASS (docs/toy_world.md, "Sixth pass": one direct step passed)
STUDENT_MIN_DIRECT_STEPS = 25
KNIFE_EDGE_MAX_DEVIATION = 4.0  # points: every pre-training seed's base id within this of their mean
KNIFE_EDGE_MIN_STUDENTS = 3  # base students (pre-training seeds) needed to judge the spread
PLATEAU_MAX_SHIFT = 3.0  # points: base id moves less than this with steps_factor x the pre-training steps
# the teacher term matters: std over the training traces of the teacher's per-trace mean log-prob >= this x the
# base student's, and |Pearson r| between the two < the second (docs/toy_world.md, "The next world")
TEACHER_TERM_MIN_SPREAD_RATIO = 0.5
TEACHER_TERM_MAX_ABS_CORR = 0.9
TEACHER_TERM = "teacher_term_matters"
EPS = 1e-9  # numbers within EPS of a threshold count as equal to it (accuracies are float sums)
PASS, FAIL, NOT_MEASURED = "PASS", "FAIL", "not measured"

COLUMNS = ["model", "role", "split", "n_seeds", "n", "accuracy", "direct_step_fraction", "step_error_rate_direct",
           "step_error_rate_decomposed", "steps_direct", "errors_direct", "steps_decomposed", "errors_decomposed",
           "steps_direct_branch", "errors_direct_branch"]
TARGET_COLUMNS = ["target", "status", "question", "evidence"]
TARGET_NAMES = ("teacher_reliable", "sft_helps", "oracle_helps", "capacity_gap", "errors_compound",
                "no_knife_edge", "plateau")
KNIFE_EDGE_TARGETS = ("no_knife_edge", "plateau")
# roles of the rows of the calibration table
REFERENCE, BASELINE, ORACLE, PRETRAIN_SEED, STEPS_FACTOR = ("reference", "baseline", "oracle", "pretrain_seed",
                                                             "steps_factor")


# ----------------------------------------------------------------------------- where the DAG leaves things
DEFAULT_ORACLE = "oracle_sft"


def pretrain_seed_dir(work: Path, seed: int) -> Path:
    """The base student pre-trained with another seed (``dcod.layout.pretrain_root``)."""
    return Path(pretrain_root(work, seed))


def steps_factor_dir(work: Path, factor: float) -> Path:
    """The base student pre-trained with ``factor`` x the steps (``dcod.layout.steps_factor_root``)."""
    return Path(steps_factor_root(work, factor))


def calibration_eval_dir(folder: Path) -> Path:
    """Where a calibration base student's evaluation lies: a calibration folder is a work folder of its own
    (the main layout), so ``<folder>/eval/base_student``."""
    return Path(folder) / "eval" / "base_student"


def pretrain_log(folder: Path) -> Path:
    """The pre-training log of the base student of a work folder (or of a calibration folder)."""
    return Path(folder) / "base_student_run" / "train_log.jsonl"


def pretrain_seed_model(seed: int) -> str:
    return f"base_student_pretrain_seed{seed}"


def steps_factor_model(factor: float) -> str:
    return f"base_student_{steps_factor_tag(factor)}"


def oracle_experiment(profile, experiments_dir: str | Path | None) -> str | None:
    """The profile's student-style reference experiment (``traces: student_style``), the oracle row; None
    when the profile has none. Without an experiments folder to read, the shipped name."""
    from dcod.config import discover_experiments, load_experiment

    root = Path(experiments_dir) if experiments_dir else None
    if root is None or not root.is_dir():
        return DEFAULT_ORACLE
    styled = [name for name in discover_experiments(root, profile)
              if load_experiment(root / name / "config.yaml").traces == "student_style"]
    return styled[0] if styled else None


# ----------------------------------------------------------------------------- measurements
def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else math.nan


def summarise_model(name: str, samples: list[pd.DataFrame], role: str = REFERENCE) -> list[dict]:
    """One row per split: accuracy (%) and pooled step counts over every sample of every seed."""
    pooled = pd.concat(samples, ignore_index=True)
    rows = []
    for split in split_order([pooled]):
        group = pooled[pooled["split"] == split]
        counts = {c: float(group[c].fillna(0).sum()) for c in ("steps_direct", "errors_direct",
                                                                "steps_decomposed", "errors_decomposed")}
        # direct steps at branch points (docs/claims.md, "Direct steps"): absent from older samples, never 0
        counts.update({c: float(group[c].fillna(0).sum()) if c in group else math.nan
                       for c in ("steps_direct_branch", "errors_direct_branch")})
        rows.append({"model": name, "role": role, "split": split, "n_seeds": len(samples),
                     "n": len(group) // len(samples), "accuracy": 100.0 * float(group["correct"].mean()),
                     "direct_step_fraction": _ratio(counts["steps_direct"],
                                                    counts["steps_direct"] + counts["steps_decomposed"]),
                     "step_error_rate_direct": _ratio(counts["errors_direct"], counts["steps_direct"]),
                     "step_error_rate_decomposed": _ratio(counts["errors_decomposed"], counts["steps_decomposed"]),
                     **counts})
    return rows


@dataclass
class Measured:
    """The calibration table and, per model whose inputs are missing, the missing files."""

    frame: pd.DataFrame
    missing: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # model -> (role, files)


def calibration_models(work: Path, seeds: list[int], baseline: str, oracle: str | None = None,
                       pretrain_seeds=(), steps_factor: float | None = None,
                       knife_work: Path | None = None) -> list[tuple[str, str, list[Path]]]:
    """(model, role, evaluation folders) of every row of the calibration table. The other pre-training seeds'
    base students lie under ``knife_work`` (default ``work``): the root that owns the world seed's base
    students, which a robustness world shares with the other worlds of its seed."""
    work = Path(work)
    knife_work = Path(knife_work) if knife_work is not None else work
    models = [(name, REFERENCE, eval_dirs(work, name, seeds)) for name in REFERENCES]
    models.append((baseline, BASELINE, eval_dirs(work, baseline, seeds)))
    if oracle:
        models.append((oracle, ORACLE, eval_dirs(work, oracle, seeds)))
    models += [(pretrain_seed_model(seed), PRETRAIN_SEED, [calibration_eval_dir(pretrain_seed_dir(knife_work, seed))])
               for seed in pretrain_seeds]
    if steps_factor is not None:
        models.append((steps_factor_model(steps_factor), STEPS_FACTOR,
                       [calibration_eval_dir(steps_factor_dir(work, steps_factor))]))
    return models


def build_calibration(work: Path, seeds: list[int], baseline: str, oracle: str | None = None,
                      pretrain_seeds=(), steps_factor: float | None = None, knife_work: Path | None = None) -> Measured:
    """The references, the ``baseline`` experiment (plain distillation), the ``oracle`` experiment and the
    calibration base students, per split. A model with a missing samples file (any of its seeds) is left
    out and listed in ``missing``: its targets are then not measured. A malformed file is an error."""
    rows, missing = [], {}
    for name, role, folders in calibration_models(work, seeds, baseline, oracle, pretrain_seeds, steps_factor,
                                                  knife_work):
        absent = [str(folder / "samples.jsonl") for folder in folders if not (folder / "samples.jsonl").is_file()]
        if absent:
            missing[name] = (role, absent)
            continue
        rows.extend(summarise_model(name, [read_samples(folder) for folder in folders], role))
    return Measured(pd.DataFrame(rows, columns=COLUMNS), missing)


# ----------------------------------------------------------------------------- targets
@dataclass
class Target:
    name: str
    question: str
    status: str  # PASS, FAIL, or "not measured" when an input is missing
    evidence: str
    numbers: dict = field(default_factory=dict)  # the key numbers behind the status


def _row(frame: pd.DataFrame, model: str | None, split: str) -> pd.Series | None:
    rows = frame[(frame["model"] == model) & (frame["split"] == split)]
    return rows.iloc[0] if len(rows) else None


def _accuracy(frame: pd.DataFrame, model: str | None, split: str) -> float:
    row = _row(frame, model, split)
    return math.nan if row is None else float(row["accuracy"])


def model_of_role(frame: pd.DataFrame, role: str) -> str | None:
    """The model with a role (None when the profile has none)."""
    names = frame.loc[frame["role"] == role, "model"].unique()
    return str(names[0]) if len(names) else None


def models_of_role(frame: pd.DataFrame, role: str) -> list[str]:
    return [str(m) for m in frame.loc[frame["role"] == role, "model"].unique()]


def trained_model(frame: pd.DataFrame) -> str | None:
    """The student after plain distillation (the profile's baseline experiment)."""
    return model_of_role(frame, BASELINE)


Missing = dict  # model -> (role, [missing files]): the models whose inputs are absent


def _name(frame: pd.DataFrame, missing: Missing | None, role: str) -> str | None:
    """The model with ``role``, measured or missing."""
    return model_of_role(frame, role) or next((m for m, (r, _) in (missing or {}).items() if r == role), None)


def _not_measured(name: str, question: str, missing: Missing | None, roles, what: str) -> Target:
    """A target that cannot be judged: the missing files of the models it needs (by role), else ``what``."""
    files = [path for model, (role, paths) in (missing or {}).items()
             if role in roles or model in roles for path in paths]
    return Target(name, question, NOT_MEASURED, f"missing {', '.join(files)}" if files else what)


def _at_least(value: float, threshold: float) -> bool:
    return not math.isnan(value) and value >= threshold - EPS


def teacher_target(frame: pd.DataFrame, missing: Missing | None = None) -> Target:
    question = (f"teacher reliable on both styles: accuracy >= {TEACHER_MIN_ACCURACY:g}% and step error rate "
                f"<= {TEACHER_MAX_STEP_ERROR:g} in each forced style on {', '.join(ARITHMETIC_SPLITS)}")
    checks, evidence, numbers = [], [], {}
    for style in ("direct", "decomposed"):
        for split in ARITHMETIC_SPLITS:
            row = _row(frame, f"teacher_{style}", split)
            if row is None:
                return _not_measured("teacher_reliable", question, missing, ("teacher_direct", "teacher_decomposed"),
                                     f"no teacher_{style} result on {split}")
            error = float(row[f"step_error_rate_{style}"])
            checks.append(_at_least(row["accuracy"], TEACHER_MIN_ACCURACY) and not math.isnan(error)
                          and error <= TEACHER_MAX_STEP_ERROR + EPS)
            evidence.append(f"{style}/{split}: {row['accuracy']:.1f}% accuracy, step error {error:.4f}")
            numbers[f"teacher_{style}_{split}"] = float(row["accuracy"])
    return Target("teacher_reliable", question, PASS if all(checks) else FAIL, "; ".join(evidence), numbers)


def sft_target(frame: pd.DataFrame, missing: Missing | None = None) -> Target:
    student = _name(frame, missing, BASELINE) or "the baseline"
    question = (f"distillation helps: {student} (mixed teacher traces, pooled over seeds) >= base student + "
                f"{SFT_MIN_GAIN_ID:g} points on id, and >= the base student on long")
    base = {s: _accuracy(frame, "base_student", s) for s in ARITHMETIC_SPLITS}
    sft = {s: _accuracy(frame, trained_model(frame), s) for s in ARITHMETIC_SPLITS}
    if any(math.isnan(v) for v in (*base.values(), *sft.values())):
        return _not_measured("sft_helps", question, missing, ("base_student", BASELINE),
                             f"no id/long result for base_student or {student}")
    gain = {s: sft[s] - base[s] for s in ARITHMETIC_SPLITS}
    passed = _at_least(gain["id"], SFT_MIN_GAIN_ID) and _at_least(gain["long"], 0.0)
    evidence = (f"id: {student} {sft['id']:.1f}% vs base {base['id']:.1f}% ({gain['id']:+.1f}, needs "
                f">= +{SFT_MIN_GAIN_ID:g}); long: {sft['long']:.1f}% vs {base['long']:.1f}% ({gain['long']:+.1f}, "
                "needs >= 0)")
    return Target("sft_helps", question, PASS if passed else FAIL, evidence,
                  {"sft_gain_id": gain["id"], "sft_gain_long": gain["long"]})


def oracle_target(frame: pd.DataFrame, missing: Missing | None = None) -> Target:
    oracle = _name(frame, missing, ORACLE)
    question = (f"student-style traces help much more: {oracle or 'the oracle reference'} (SFT on student-style "
                f"traces, mean over seeds) >= base student + {ORACLE_MIN_GAIN_ID:g} points on id")
    base, value = _accuracy(frame, "base_student", "id"), _accuracy(frame, model_of_role(frame, ORACLE), "id")
    if math.isnan(base) or math.isnan(value):
        return _not_measured("oracle_helps", question, missing, ("base_student", ORACLE),
                             "no oracle (student-style) experiment in this profile" if oracle is None
                             else f"no id result for base_student or {oracle}")
    gain = value - base
    evidence = f"id: {oracle} {value:.1f}% vs base {base:.1f}% ({gain:+.1f}, needs >= +{ORACLE_MIN_GAIN_ID:g})"
    return Target("oracle_helps", question, PASS if _at_least(gain, ORACLE_MIN_GAIN_ID) else FAIL, evidence,
                  {"oracle_gain_id": gain})


def student_target(frame: pd.DataFrame, missing: Missing | None = None) -> Target:
    student = _name(frame, missing, BASELINE)
    question = (f"capacity gap: after plain distillation ({student}), the direct-step error rate >= "
                f"{STUDENT_DIRECT_ERROR_RATIO:g} x the decomposed-step one and >= {STUDENT_MIN_DIRECT_ERROR:g} "
                f"(pooled over {', '.join(ARITHMETIC_SPLITS)} and seeds; judged on >= {STUDENT_MIN_DIRECT_STEPS} "
                f"direct steps)")
    rows = frame[(frame["model"] == trained_model(frame)) & frame["split"].isin(ARITHMETIC_SPLITS)]
    if rows.empty:
        return _not_measured("capacity_gap", question, missing, (BASELINE,),
                             f"no {student or 'baseline'} result on the arithmetic splits")
    # the direct steps at branch points where the samples count them (docs/claims.md, "Direct steps"): a
    # direct step with no style choice reads the same in both styles and says nothing about the gap
    branch = "steps_direct_branch" in rows and rows["steps_direct_branch"].notna().all()
    steps, errors = (("steps_direct_branch", "errors_direct_branch") if branch else ("steps_direct", "errors_direct"))
    direct = _ratio(rows[errors].sum(), rows[steps].sum())
    decomposed = _ratio(rows["errors_decomposed"].sum(), rows["steps_decomposed"].sum())
    evidence = (f"direct-step error {direct:.4f} over {rows[steps].sum():.0f} "
                + ("direct steps at branch points" if branch else "steps") + f", decomposed-step "
                f"error {decomposed:.4f} over {rows['steps_decomposed'].sum():.0f} steps")
    numbers = {"sft_step_error_direct": direct, "sft_step_error_decomposed": decomposed}
    if rows[steps].sum() < STUDENT_MIN_DIRECT_STEPS:
        return Target("capacity_gap", question, NOT_MEASURED,
                      f"{student} wrote too few direct steps to judge (at least {STUDENT_MIN_DIRECT_STEPS} needed); "
                      f"{evidence}", numbers)
    passed = (_at_least(direct, STUDENT_MIN_DIRECT_ERROR)
              and (math.isnan(decomposed) or _at_least(direct, STUDENT_DIRECT_ERROR_RATIO * decomposed)))
    return Target("capacity_gap", question, PASS if passed else FAIL, evidence, numbers)


def compounding_target(frame: pd.DataFrame, missing: Missing | None = None) -> Target:
    models = ("base_student", _name(frame, missing, BASELINE))
    question = f"errors compound: accuracy on long < accuracy on id for {', '.join(map(str, models))}"
    checks, evidence = [], []
    for model in models:
        short, long = _accuracy(frame, model, "id"), _accuracy(frame, model, "long")
        if math.isnan(short) or math.isnan(long):
            return _not_measured("errors_compound", question, missing, ("base_student", BASELINE),
                                 f"no id/long result for {model}")
        checks.append(long < short - EPS)
        evidence.append(f"{model}: id {short:.1f}%, long {long:.1f}%")
    return Target("errors_compound", question, PASS if all(checks) else FAIL, "; ".join(evidence))


def knife_edge_target(frame: pd.DataFrame, missing: Missing | None = None) -> Target:
    question = (f"no knife edge: the base students of every pre-training seed of this world seed (the main "
                f"one, calibration.pretrain_seeds and, under pretrain.per_seed, each training seed's own; "
                f"{KNIFE_EDGE_MIN_STUDENTS} or more) all have id within "
                f"+/-{KNIFE_EDGE_MAX_DEVIATION:g} points of their mean")
    values = {model: _accuracy(frame, model, "id") for model in ["base_student", *models_of_role(frame, PRETRAIN_SEED)]}
    unmeasured = [model for model, value in values.items() if math.isnan(value)]  # evaluated, but not on id
    values = {model: value for model, value in values.items() if not math.isnan(value)}
    incomplete = unmeasured or any(role in ("base_student", PRETRAIN_SEED) or model == "base_student"
                                   for model, (role, _) in (missing or {}).items())
    if incomplete or len(values) < KNIFE_EDGE_MIN_STUDENTS:
        without_id = f"; without an id result: {', '.join(unmeasured)}" if unmeasured else ""
        return _not_measured("no_knife_edge", question, missing, ("base_student", PRETRAIN_SEED),
                             f"{len(values)} base student(s) measured on id, {KNIFE_EDGE_MIN_STUDENTS} needed "
                             f"(calibration.pretrain_seeds, or pretrain.per_seed with seeds){without_id}")
    mean = float(np.mean(list(values.values())))
    deviation = max(abs(v - mean) for v in values.values())
    evidence = (", ".join(f"{model} {value:.1f}%" for model, value in values.items())
                + f"; mean {mean:.1f}%, largest deviation {deviation:.1f} points (allowed "
                  f"{KNIFE_EDGE_MAX_DEVIATION:g})")
    passed = deviation <= KNIFE_EDGE_MAX_DEVIATION + EPS
    return Target("no_knife_edge", question, PASS if passed else FAIL, evidence,
                  {"pretrain_seed_mean_id": mean, "pretrain_seed_max_deviation": deviation})


def plateau_target(frame: pd.DataFrame, missing: Missing | None = None) -> Target:
    longer = _name(frame, missing, STEPS_FACTOR)
    question = (f"plateau: the base student pre-trained with calibration.steps_factor x the steps "
                f"({longer or 'not built'}) moves id by less than {PLATEAU_MAX_SHIFT:g} points from the main "
                "base student")
    base, value = _accuracy(frame, "base_student", "id"), _accuracy(frame, model_of_role(frame, STEPS_FACTOR), "id")
    if math.isnan(base) or math.isnan(value):
        return _not_measured("plateau", question, missing, ("base_student", STEPS_FACTOR),
                             "no longer-pre-trained base student measured on id (built only when the profile "
                             "lists calibration.pretrain_seeds)")
    shift = value - base
    evidence = f"id: {longer} {value:.1f}% vs base_student {base:.1f}% ({shift:+.1f} points)"
    passed = abs(shift) < PLATEAU_MAX_SHIFT - EPS
    return Target("plateau", question, PASS if passed else FAIL, evidence, {"plateau_shift_id": shift})


def check_targets(frame: pd.DataFrame, missing: Missing | None = None,
                  knife_edge: bool = True, plateau: bool | None = None) -> list[Target]:
    """Every target, in TARGET_NAMES order; ``knife_edge=False`` leaves out the knife-edge target and
    ``plateau=False`` the plateau target (default: judged with the knife edge)."""
    checks = [teacher_target, sft_target, oracle_target, student_target, compounding_target]
    if knife_edge:
        checks.append(knife_edge_target)
    if knife_edge if plateau is None else plateau:
        checks.append(plateau_target)
    return [check(frame, missing) for check in checks]


def calibration_line(work: Path, seeds, baseline: str = "sft", oracle: str | None = DEFAULT_ORACLE, *,
                     pretrain_seeds=None, steps_factor: float | None = None, knife_work: Path | None = None,
                     plateau: bool = True) -> dict:
    """One world's targets: ``{target: status}`` plus their key numbers (``base_id``, ``sft_gain_id``, ...).

    The knife-edge target is judged only when ``pretrain_seeds`` is given (``knife_edge_knobs``: possibly
    empty, which leaves it not measured), from base students under ``knife_work``; the plateau target with
    it unless ``plateau`` is False (a world seed other than the main one)."""
    knife_edge = pretrain_seeds is not None
    plateau = knife_edge and plateau
    measured = build_calibration(work, list(seeds), baseline, oracle, pretrain_seeds or (),
                                 steps_factor if plateau else None, knife_work)
    line: dict = {}
    for target in check_targets(measured.frame, measured.missing, knife_edge=knife_edge, plateau=plateau):
        line[target.name] = target.status
        line.update(target.numbers)
    for split in ARITHMETIC_SPLITS:
        line[f"base_{split}"] = _accuracy(measured.frame, "base_student", split)
    return line


# ----------------------------------------------------------------------------- the teacher term
TEACHER_TERM_QUESTION = (f"the teacher term matters: over the training traces, std of the teacher's per-trace mean "
                         f"log-prob >= {TEACHER_TERM_MIN_SPREAD_RATIO:g} x that of the base student's, and |Pearson "
                         f"r| between the two < {TEACHER_TERM_MAX_ABS_CORR:g}")


def teacher_term_target(teacher: np.ndarray, student: np.ndarray) -> Target:
    """Judge the teacher-term target from per-trace mean log-probs (one entry per training trace, same order):
    the teacher's (stored with the traces) and the base student's. Without a spread of its own the teacher's
    log-prob is a constant and DCOD's ratio log pi_student - log pi_teacher ranks traces exactly as the
    student term alone; near-collinear with the student's, it only rescales it (absorbed by beta)."""
    question = TEACHER_TERM_QUESTION
    teacher, student = np.asarray(teacher, float), np.asarray(student, float)
    if teacher.shape != student.shape or teacher.ndim != 1:
        raise ValueError(f"teacher_term_target: one teacher and one student mean per trace, got shapes "
                         f"{teacher.shape} and {student.shape}")
    if len(teacher) < 3 or not np.isfinite(teacher).all() or not np.isfinite(student).all():
        return Target(TEACHER_TERM, question, NOT_MEASURED,
                      f"{len(teacher)} traces with finite per-trace means, 3 or more needed")
    spread_t, spread_s = float(np.std(teacher)), float(np.std(student))
    if spread_s <= EPS:  # float noise of equal values
        return Target(TEACHER_TERM, question, NOT_MEASURED, "the base student's per-trace means do not vary")
    ratio = spread_t / spread_s
    # a constant teacher has no correlation with anything: r is undefined and the spread test fails anyway
    corr = float(np.corrcoef(teacher, student)[0, 1]) if spread_t > 0 else math.nan
    passed = _at_least(ratio, TEACHER_TERM_MIN_SPREAD_RATIO) and not math.isnan(corr) \
        and abs(corr) < TEACHER_TERM_MAX_ABS_CORR - EPS
    evidence = (f"{len(teacher)} traces: std of the per-trace mean log-prob teacher {spread_t:.4f}, base student "
                f"{spread_s:.4f} (ratio {ratio:.3f}, needs >= {TEACHER_TERM_MIN_SPREAD_RATIO:g}); Pearson r "
                f"{corr:+.3f} (|r| needs < {TEACHER_TERM_MAX_ABS_CORR:g}); means teacher {teacher.mean():.4f}, "
                f"student {student.mean():.4f}")
    return Target(TEACHER_TERM, question, PASS if passed else FAIL, evidence,
                  {"teacher_term_spread_ratio": ratio, "teacher_term_corr": corr})


def student_trace_logprobs(base_dir: Path, examples: list[dict], batch_size: int = 64) -> list[list[float]]:
    """The base student's log-prob of every completion token of every trace (teacher forcing, fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(Path(base_dir), dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for begin in range(0, len(examples), batch_size):
            batch = examples[begin:begin + batch_size]
            rows = [list(e["prompt_ids"]) + list(e["completion_ids"]) for e in batch]
            width = max(map(len, rows))
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for i, row in enumerate(rows):  # right padding: causal attention never sees the pads
                ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for i, e in enumerate(batch):
                start, n = len(e["prompt_ids"]) - 1, len(e["completion_ids"])  # position t predicts token t + 1
                targets = torch.tensor(list(e["completion_ids"]))
                out.append(logp[i, start:start + n].gather(-1, targets[:, None]).squeeze(-1).tolist())
    return out


def teacher_term_from_files(traces_path: Path, base_dir: Path) -> Target:
    """The teacher-term target of a work folder: its training traces (the teacher's stored log-probs) and its
    base student (scored here); not measured when either is missing."""
    from dcod.data import load_traces

    absent = [str(p) for p in (traces_path, base_dir / "config.json") if not Path(p).is_file()]
    if absent:
        return Target(TEACHER_TERM, TEACHER_TERM_QUESTION, NOT_MEASURED, f"missing {', '.join(absent)}")
    examples = load_traces(traces_path)
    student = student_trace_logprobs(base_dir, examples)
    return teacher_term_target(np.array([np.mean(e["teacher_logprobs"]) for e in examples]),
                               np.array([np.mean(lps) for lps in student]))


# ----------------------------------------------------------------------------- pre-training losses
def quarter_losses(log: pd.DataFrame) -> tuple[float, float]:
    """Mean training loss over the 3rd and the 4th quarter of the steps (a plateau shows as a small drop)."""
    if "loss" not in log or len(log) < 4:
        return math.nan, math.nan
    losses = log["loss"].to_numpy(float)
    quarter = len(losses) // 4
    return float(losses[2 * quarter:3 * quarter].mean()), float(losses[3 * quarter:].mean())


def pretraining_table(work: Path, pretrain_seeds=(), steps_factor: float | None = None,
                      main_seed: int | None = None, steps: int | None = None) -> pd.DataFrame:
    """Per base student: the pre-training seed and steps, and its loss over the last two quarters."""
    work = Path(work)
    entries = [("base_student", main_seed, steps, work)]
    entries += [(pretrain_seed_model(s), s, steps, pretrain_seed_dir(work, s)) for s in pretrain_seeds]
    if steps_factor is not None:
        entries.append((steps_factor_model(steps_factor), main_seed,
                        None if steps is None else round(steps * steps_factor), steps_factor_dir(work, steps_factor)))
    rows = []
    for model, seed, n_steps, folder in entries:
        path = pretrain_log(folder)
        q3, q4 = quarter_losses(read_train_log(path.parent)) if path.is_file() else (math.nan, math.nan)
        shown = path.relative_to(work).as_posix()  # relative to the work folder: the report names no machine path
        rows.append({"model": model, "pretrain_seed": seed, "pretrain_steps": n_steps, "loss_q3": q3,
                     "loss_q4": q4, "log": shown if path.is_file() else f"missing {shown}"})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- markdown
def row_meanings(student: str | None, oracle: str | None) -> list[tuple[str, str]]:
    meanings = [
        ("teacher", "the teacher as used for traces (mixed styles): the quality ceiling of the supervision"),
        ("teacher_direct / teacher_decomposed", "the teacher forced to one style: it must be reliable in both, "
         "otherwise a style shift could be explained by bad teacher steps"),
        ("base_student", "the student before distillation (native decomposed style): its starting accuracy"),
        (student or "baseline", "the student after plain distillation on the mixed traces, pooled over seeds: it "
         "writes both styles, so its direct- vs decomposed-step error rates show whether direct steps are beyond "
         "its capacity"),
    ]
    if oracle:
        meanings.append((oracle, "the oracle reference: SFT on traces of the teacher forced to the student's native "
                         "style, pooled over seeds (knowledge no real method has): how much the traces could help"))
    meanings.append(("base_student_pretrain_seed<S> / base_student_steps_x<f>", "the base student pre-trained "
                     "with another seed / with f times the steps: the size of the pre-training knife edge"))
    return meanings


def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    shown = frame.copy()
    shown["accuracy"] = shown["accuracy"].map(lambda v: f"{v:.1f}%")
    for column in ("direct_step_fraction", "step_error_rate_direct", "step_error_rate_decomposed"):
        shown[column] = shown[column].map(lambda v: "" if math.isnan(v) else f"{v:.4f}")
    for column in ("steps_direct", "errors_direct", "steps_decomposed", "errors_decomposed"):
        shown[column] = shown[column].map(lambda v: f"{v:.0f}")
    return shown


def render_markdown(frame: pd.DataFrame, targets: list[Target], missing: Missing | None = None,
                    pretraining: pd.DataFrame | None = None) -> str:
    lines = ["# Toy-world calibration", "",
             "Generated by `python -m dcod report calibration` from the evaluation samples; do not edit.",
             "Accuracy in %; step error rates are pooled errors / steps; empty = no such steps.", "",
             "## What each row checks", ""]
    lines += [f"- **{model}**: {meaning}."
              for model, meaning in row_meanings(trained_model(frame), model_of_role(frame, ORACLE))]
    lines += ["", "## Measurements", "", markdown_table(_formatted(frame)), ""]
    if pretraining is not None and not pretraining.empty:
        shown = pretraining.assign(**{q: pretraining[q].map(lambda v: number_or_dash(v, ".4f", ""))
                                      for q in ("loss_q3", "loss_q4")})
        lines += ["## Pre-training of the base students", "",
                  "Mean training loss over the 3rd and the 4th quarter of the pre-training steps (shown, not judged).",
                  "", markdown_table(shown), ""]
    lines += ["## Calibration targets", "",
              "Each status is computed from the numbers above with fixed thresholds "
              "(`src/dcod/reporting/calibration.py`); *not measured* means an input is missing, never a pass.", ""]
    for target in targets:
        lines.append(f"- **{target.status}**: {target.question}. Measured: {target.evidence}.")
    if missing:
        lines += ["", "## Missing inputs", ""]
        lines += [f"- {model} ({role}): {', '.join(paths)}" for model, (role, paths) in missing.items()]
    return "\n".join(lines) + "\n"


def targets_path(out: str | Path) -> Path:
    """``results/calibration.csv`` -> ``results/calibration_targets.csv``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_targets{out.suffix}")


def targets_frame(targets: list[Target]) -> pd.DataFrame:
    return pd.DataFrame([{"target": t.name, "status": t.status, "question": t.question, "evidence": t.evidence}
                         for t in targets], columns=TARGET_COLUMNS)


def knife_edge_knobs(profile, knife_work: Path | None = None) -> dict:
    """calibration_line's knife-edge keywords. Main world (``knife_work`` None): every other pre-training
    seed of the world (``ProfileConfig.knife_edge_pretrain_seeds``) and the steps factor, the latter only when
    the profile lists calibration.pretrain_seeds (the DAG builds the longer base student only then). Another
    world seed: its pre-training seeds, found under ``knife_work`` (the root that owns its base students),
    and no plateau."""
    if knife_work is not None:
        return {"pretrain_seeds": profile.knife_edge_pretrain_seeds(main_world=False), "knife_work": knife_work,
                "plateau": False}
    factor = profile.calibration.steps_factor if profile.calibration.pretrain_seeds else None
    return {"pretrain_seeds": profile.knife_edge_pretrain_seeds(main_world=True), "steps_factor": factor}


def write_calibration(args) -> None:
    from dcod.config import load_profile

    work = Path(need(args.work, "--work", "calibration"))
    seeds = need(parse_seeds(args.seeds), "--seeds", "calibration")
    profile = load_profile(need(args.profile, "--profile", "calibration"))
    oracle = oracle_experiment(profile, getattr(args, "experiments", None))
    knobs = knife_edge_knobs(profile)
    measured = build_calibration(work, seeds, profile.report.baseline, oracle, knobs["pretrain_seeds"],
                                 knobs["steps_factor"])
    out = Path(args.out)
    write_csv(out, measured.frame)
    targets = check_targets(measured.frame, measured.missing)
    targets.append(teacher_term_from_files(work / "traces" / "train.parquet", work / "base_student"))
    write_csv(targets_path(out), targets_frame(targets))
    pretraining = pretraining_table(work, knobs["pretrain_seeds"], knobs["steps_factor"], profile.pretrain.seed,
                                    profile.pretrain.steps)
    write_text(out.with_suffix(".md"), render_markdown(measured.frame, targets, measured.missing, pretraining))
    for model, (_, paths) in measured.missing.items():
        print(f"calibration: not measured: {model} (missing {', '.join(paths)})")
    for target in targets:
        print(f"calibration: {target.status} {target.name}: {target.evidence}")
