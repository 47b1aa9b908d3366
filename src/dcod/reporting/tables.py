"""Table 1 (main comparison) and Table 2 (ablations of the method under test): tidy CSV, one row per method.

Accuracy is in percent, mean and sample std (ddof=1) over training seeds; the spread is left empty for
a single seed rather than shown as 0, which would claim a precision we do not have.

Every interval is the hierarchical bootstrap of docs/claims.md (``dcod.reporting.stats``): training seeds
resampled per model, then problems resampled with the same draw for both models, 2,000 replicates with a
fixed seed per split, so the table is bit-reproducible and the intervals carry seed variance as well as
problem variance. Two families of differences:

- ``delta_<split>_vs_sft`` (+ ``_ci_low``/``_ci_high``): this row − the profile's ``report.baseline``, in
  accuracy points (named after the paper's baseline);
- ``dcod_minus_row_<metric>`` (+ CIs): the profile's ``report.subject`` − this row, for every held-out
  split (points) and for the trace-stability metrics ``agreement`` and ``malformed_rate`` (their own
  unit, per-problem values from stability.csv). These are what claims (a)–(c) are judged on; on the
  baseline's row they equal the subject's ``delta_*`` by construction (the same call).

``role`` separates the ``method`` rows from the ``reference`` rows (teacher, base student, and the oracle
trained on student-style traces, knowledge no method has); ``offline_only`` says whether a method's
declared needs are offline traces only (no rollouts, no teacher in memory): the offline baselines of
claim (a). ``oracle_gap_closed_<split>`` = (row − SFT) / (oracle − SFT) on ``id`` and ``long``, blank
when the oracle is less than 1 point above SFT (a ratio over a gap inside the noise means nothing).

Under the amendment "What the claims measure" (docs/claims.md) every difference is also given paired by
seed (``*_paired``, ``_paired_low``/``_high``/``_kind``: a 95% t interval over seeds, or below 3 seeds the
range of the per-seed differences, never a CI; ``dcod.reporting.stats``), with ``base_ratio_<split>``
(claim (c): retention over each seed's base student), ``dcod_minus_row_step_hazard_paired*`` (claim (b)),
the direct-step share at branch points, the step hazard and majority vote − mean sample accuracy, and
``ceiling_gap_closed_<split>``, the share of the SFT -> reweighting-ceiling (``oracle_weights``) gap. The
per-seed values behind a table go to ``<table>_seeds.csv``. Table 2 groups each ablation by the knob it
varies relative to its default row (``group_rows``).

``cap_share``: the share of a model's greedy evaluation samples (every split; prompts too long to generate
left out) that ran to the token cap (``finish_reason`` ``length`` in samples.jsonl) instead of ending on
one of its end tokens, mean over seeds. A share that rises from the base student to the trained
students is the symptom of a model that does not stop (docs/paper_setting.md, "Stop tokens").

Cost in machine-independent units (docs/claims.md (d)), means over seeds: tokens trained, sampled and
run through the teacher, the student's and teacher's parameter counts, and
``training_flops = 6·N·trained + 2·N·sampled + 2·N_teacher·teacher forward`` (the programmatic toy teacher
costs 0 FLOPs). A frozen reference's forward (iw-SFT's initial student) is outside that pre-registered
estimate and priced apart in ``reference_forward_flops``. Wall time goes to the timing CSV only.

What a run's method declared is read from its run.json (written at train time): its needs (whether the
one-off offline trace cost counts), its Table 2 knobs and the diagnostics its weights log. No method is
named here.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dcod.io import write_csv
from dcod.layout import TABLE_REFERENCES, is_offline
from dcod.reporting import (SEEDED_REFERENCE, eval_dirs, held_out_splits, is_reference, is_seeded, need,
                            paired_base, parse_names, parse_seeds, read_metrics, read_run, read_samples,
                            read_stability, read_traces_info, read_train_log, report_roles, run_dirs, split_order)
from dcod.reporting.stats import (hierarchical_bootstrap_diff, seed_paired_diff, seed_paired_hazard_diff,
                                  seed_paired_ratio)
from dcod.splits import claim_splits

BOOTSTRAP_REPLICATES = 2000
BOOTSTRAP_SEED = 20260514
ARITHMETIC_SPLITS = ("id", "long")  # where the toy's step styles are counted (direct_step_fraction)
COST_COLUMNS = ("wall_time_s", "student_tokens_trained", "tokens_sampled", "teacher_forward_tokens",
                "reference_forward_tokens", "student_parameters", "teacher_parameters", "training_flops",
                "reference_forward_flops")
STABILITY_METRICS = ("agreement", "malformed_rate")  # per-problem columns of stability.csv
# claim (b)'s measures of the amendment (docs/claims.md, "Claim (b)"), means and spreads over seeds
MEASURE_COLUMNS = ("step_hazard_mean", "step_hazard_std", "vote_gain_mean", "vote_gain_std")
GAP_SPLITS = ("id", "long")  # where the oracle gap closed is reported
MIN_ORACLE_GAP = 1.0  # points: below it the gap-closed ratio is left blank
RETENTION_SPLITS = claim_splits("retention")  # claim (c)'s splits: the retention ratio to the base student
FINAL_PHASE = 0.2  # diagnostics are averaged over the last 20% of optimiser steps
DESCRIPTIONS = {"teacher": "teacher (reference, evaluated once)",
                "base_student": "base student before distillation (reference, evaluated once)"}
PAIRED_BASE_DESCRIPTION = ("base students before distillation, one per seed: each seed's runs start from it "
                           "(reference)")
ORACLE_NOTE = "reference: uses knowledge no method has"


def describe(name: str, run: dict, oracle: bool) -> str:
    """Table 1's description of a row: the experiment's own, and for the oracle reference a note that it
    uses knowledge no method has, unless the description already says so."""
    description = run.get("experiment", {}).get("description") or DESCRIPTIONS.get(name, name)
    if oracle and ORACLE_NOTE.removeprefix("reference: ") not in description:
        description = f"{description} ({ORACLE_NOTE})"
    return description


@dataclass
class Evaluated:
    """Everything evaluation wrote for one model: one frame per seed (one in all for references)."""

    name: str
    seeds: list[int]
    metrics: list[pd.DataFrame]
    samples: list[pd.DataFrame]
    stability: list[pd.DataFrame] | None


def load_evaluated(work: Path, name: str, seeds: list[int], paired: bool = False) -> Evaluated:
    """``paired``: the profile's ``pretrain.per_seed`` (the base student then has one evaluation per seed)."""
    dirs = eval_dirs(work, name, seeds, paired)
    metrics = [read_metrics(folder) for folder in dirs]
    samples = [read_samples(folder) for folder in dirs]
    # stability.csv is absent when the profile switches it off; then it must be absent for every seed
    present = [(folder / "stability.csv").is_file() for folder in dirs]
    stability = [read_stability(folder) for folder in dirs] if any(present) else None
    return Evaluated(name, list(seeds) if is_seeded(name, paired) else [], metrics, samples, stability)


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


def direct_branch_fraction(metrics: pd.DataFrame) -> float:
    """Share of the steps at branch points (where the two styles' renderings differ) written in the direct
    style, pooled over the id and long splits (docs/claims.md, "Direct steps"); NaN for an evaluation
    written before the branch counts existed."""
    rows = metrics[metrics["split"].isin(ARITHMETIC_SPLITS)]
    if rows.empty or "steps_direct_branch" not in rows or "steps_decomposed" not in rows:
        return math.nan
    direct = rows["steps_direct_branch"].fillna(0).sum()
    total = direct + rows["steps_decomposed"].fillna(0).sum()
    return float(direct / total) if total else math.nan


HAZARD_MIN_AT_RISK = 20  # docs/claims.md, "Claim (b)": a step position counts with at least this many traces at risk


def step_hazard(stability: pd.DataFrame) -> float:
    """The step hazard of one evaluation's sampled traces (docs/claims.md, "Claim (b)"): for each step
    position j, errors / traces at risk (steps 1..j−1 right), pooled over problems, averaged over the
    positions with at least ``HAZARD_MIN_AT_RISK`` traces at risk; NaN when stability.csv has no hazard
    counts (written before them, or no graded steps) or no position qualifies."""
    if stability is None or "hazard_at_risk" not in stability or stability.empty:
        return math.nan
    at_risk: dict[int, int] = {}
    errors: dict[int, int] = {}
    for risk, error in zip(stability["hazard_at_risk"], stability["hazard_errors"]):
        if not isinstance(risk, str) or not risk:
            continue
        for j, (r, e) in enumerate(zip(risk.split(";"), str(error).split(";"))):
            at_risk[j], errors[j] = at_risk.get(j, 0) + int(r), errors.get(j, 0) + int(e)
    rates = [errors[j] / at_risk[j] for j in at_risk if at_risk[j] >= HAZARD_MIN_AT_RISK]
    return float(np.mean(rates)) if rates else math.nan


def hazard_counts(evaluated: Evaluated) -> dict | None:
    """seed -> (at risk, errors) as (problems × positions) arrays, problems sorted by ``split/id`` (the
    input of ``stats.seed_paired_hazard_diff``); None without hazard counts in stability.csv."""
    counts = {}
    for seed, frame in zip(evaluated.seeds or [0], evaluated.stability or []):
        if frame is None or "hazard_at_risk" not in frame or frame.empty:
            return None
        graded = frame[frame["hazard_at_risk"].apply(lambda cell: isinstance(cell, str) and cell != "")]
        if graded.empty:
            return None
        graded = graded.assign(key=graded["split"].astype(str) + "/" + graded["id"].astype(str)).sort_values("key")
        rows = [[int(v) for v in cell.split(";")] for cell in graded["hazard_at_risk"]]
        errs = [[int(v) for v in str(cell).split(";")] for cell in graded["hazard_errors"]]
        width = max(len(r) for r in rows)
        pad = lambda values: np.array([v + [0] * (width - len(v)) for v in values])  # noqa: E731
        counts[seed] = (pad(rows), pad(errs))
    return counts or None


def vote_gain(stability: pd.DataFrame) -> float:
    """Majority-vote accuracy over the k samples minus their mean accuracy, mean over problems (docs/claims.md,
    "Claim (b)"); NaN for a stability.csv written before ``majority_accuracy``."""
    if stability is None or "majority_accuracy" not in stability or stability.empty:
        return math.nan
    sampled = stability[stability["samples"] > 0]
    return float((sampled["majority_accuracy"] - sampled["sample_accuracy"]).mean()) if len(sampled) else math.nan


def cap_share(samples: pd.DataFrame) -> float:
    """Share of the generated samples of one evaluation that hit the token cap; NaN when none was generated
    or when samples.jsonl predates ``finish_reason``."""
    if "finish_reason" not in samples:
        return math.nan
    generated = samples["finish_reason"][samples["finish_reason"] != "skipped"]  # skipped: prompt_too_long
    return float((generated == "length").mean()) if len(generated) else math.nan


def problem_values(evaluated: Evaluated, split: str) -> pd.DataFrame:
    """Correctness (0/1) per seed and problem on ``split``: the long frame the bootstrap resamples."""
    frames = []
    for seed, samples in zip(evaluated.seeds or [0], evaluated.samples):
        rows = samples[samples["split"] == split]
        frames.append(pd.DataFrame({"seed": seed, "problem": rows["id"].to_numpy(),
                                    "value": rows["correct"].astype(float).to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def stability_values(evaluated: Evaluated, metric: str) -> pd.DataFrame | None:
    """One stability metric per seed and problem (the problems of every split the pass sampled)."""
    if not evaluated.stability:
        return None
    # a pass without stability samples (``stability_samples: 0``: the smol profile, Table 2 rows, robustness
    # worlds) writes a header-only stability.csv: the metric is not measured, not an error
    empty = [frame.empty for frame in evaluated.stability]
    if all(empty):
        return None
    if any(empty):
        seeds = [seed for seed, e in zip(evaluated.seeds or [0], empty) if e]
        raise ValueError(f"{evaluated.name}: stability.csv has rows for some seeds and none for seeds {seeds}: "
                         "re-evaluate them with the same stability_samples")
    frames = []
    for seed, frame in zip(evaluated.seeds or [0], evaluated.stability):
        for column in ("id", "split", metric):
            if column not in frame:
                raise ValueError(f"{evaluated.name} (seed {seed}): stability.csv has no {column!r} column")
        frames.append(pd.DataFrame({"seed": seed, "problem": frame["split"].astype(str) + "/" + frame["id"].astype(str),
                                    "value": frame[metric].astype(float).to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def bootstrap_seed(key: str) -> list[int]:
    """The fixed replicate seed of one split or metric: every comparison on it uses the same problem draws."""
    return [BOOTSTRAP_SEED, zlib.crc32(key.encode())]


def difference(left: Evaluated, right: Evaluated, key: str, scale: float) -> tuple[float, float, float]:
    """(mean(left) − mean(right), CI) × ``scale`` on a split (``key`` a split) or a stability metric. A model
    against itself is the same training runs, not two independent draws of runs: exactly 0."""
    if key in STABILITY_METRICS:
        a, b = stability_values(left, key), stability_values(right, key)
        if a is None or b is None:
            return (math.nan,) * 3
    else:
        if not any((s["split"] == key).any() for s in left.samples):
            return (math.nan,) * 3
        a, b = problem_values(left, key), problem_values(right, key)
    if left.name == right.name:
        return 0.0, 0.0, 0.0
    where = f"split {key!r}" if key not in STABILITY_METRICS else f"stability metric {key!r}"
    point, low, high = hierarchical_bootstrap_diff(a, b, replicates=BOOTSTRAP_REPLICATES, seed=bootstrap_seed(key),
                                                   names=(f"{left.name} ({where})", f"{right.name} ({where})"))
    return scale * point, scale * low, scale * high


# ----------------------------------------------------------------------------- seed-paired intervals
# docs/claims.md, "Intervals" (the amendment "What the claims measure"): both models of a seed start from its
# base student, so differences are paired by seed, with a t interval over seeds plus the problem level
# (dcod.reporting.stats.seed_paired_diff); from fewer than 3 seeds the columns hold the range of the per-seed
# differences and ``_kind`` says ``range``: never a 95% CI, and it decides no claim. Written beside the
# hierarchical-bootstrap columns (which tables written before this amendment, the published snapshot's, hold).
PAIRED_SUFFIXES = ("_paired", "_paired_low", "_paired_high", "_paired_kind")


def paired_difference(left: Evaluated, right: Evaluated, key: str, scale: float) -> tuple:
    """(mean(left) − mean(right), low, high, kind) × ``scale``, paired by seed, on a split or a stability
    metric (``kind``: ``t`` or ``range``; ``same`` for a model against itself, exactly 0)."""
    if key in STABILITY_METRICS:
        a, b = stability_values(left, key), stability_values(right, key)
        if a is None or b is None:
            return math.nan, math.nan, math.nan, ""
    else:
        if not any((s["split"] == key).any() for s in left.samples):
            return math.nan, math.nan, math.nan, ""
        a, b = problem_values(left, key), problem_values(right, key)
    if left.name == right.name:
        return 0.0, 0.0, 0.0, "same"
    where = f"split {key!r}" if key not in STABILITY_METRICS else f"stability metric {key!r}"
    result = seed_paired_diff(a, b, names=(f"{left.name} ({where})", f"{right.name} ({where})"))
    return scale * result["point"], scale * result["low"], scale * result["high"], result["kind"]


def retention_ratio(evaluated: Evaluated, base: Evaluated | None, split: str) -> tuple:
    """(mean over seeds of retention(seed) / base student's(seed), low, high, kind): claim (c)'s ratio with
    the t interval over seeds (docs/claims.md, "Claim (c), retention"); NaN without a base student."""
    if base is None or not any((s["split"] == split).any() for s in evaluated.samples):
        return math.nan, math.nan, math.nan, ""
    if evaluated.name == base.name:
        return 1.0, 1.0, 1.0, "same"
    base_values = problem_values(base, split)
    if (base_values.groupby("seed")["value"].mean() == 0).any():  # a base student that answers none: no ratio
        return math.nan, math.nan, math.nan, "undefined"
    result = seed_paired_ratio(problem_values(evaluated, split), base_values,
                               names=(f"{evaluated.name} (split {split!r})", f"{base.name} (split {split!r})"))
    return result["point"], result["low"], result["high"], result["kind"]


def paired_columns(row: dict, evaluated: Evaluated, splits: list[str], baseline: Evaluated | None,
                   subject: Evaluated | None, base: Evaluated | None) -> None:
    """The seed-paired columns of one row, in place: ``delta_<split>_paired*`` (row − baseline),
    ``dcod_minus_row_<key>_paired*`` (subject − row) and ``base_ratio_<split>*`` on the retention splits."""
    empty = (math.nan, math.nan, math.nan, "")
    for split in held_out_splits(splits):
        values = paired_difference(evaluated, baseline, split, 100.0) if baseline is not None else empty
        row.update(zip((f"delta_{split}{suffix}" for suffix in PAIRED_SUFFIXES), values))
    for key in [*held_out_splits(splits), *STABILITY_METRICS]:
        values = empty
        if subject is not None and subject.name != evaluated.name:
            values = paired_difference(subject, evaluated, key, 1.0 if key in STABILITY_METRICS else 100.0)
        row.update(zip((f"dcod_minus_row_{key}{suffix}" for suffix in PAIRED_SUFFIXES), values))
    values = empty
    if subject is not None and subject.name != evaluated.name:
        mine, theirs = hazard_counts(subject), hazard_counts(evaluated)
        if mine is not None and theirs is not None:
            result = seed_paired_hazard_diff(mine, theirs, min_at_risk=HAZARD_MIN_AT_RISK)
            values = (result["point"], result["low"], result["high"], result["kind"])
    row.update(zip((f"dcod_minus_row_step_hazard{suffix}" for suffix in PAIRED_SUFFIXES), values))
    for split in retention_splits(splits):
        values = retention_ratio(evaluated, base, split)
        row.update(zip((f"base_ratio_{split}{suffix}" for suffix in ("", "_low", "_high", "_kind")), values))


def retention_splits(splits: list[str]) -> list[str]:
    """The splits claim (c) reads (their declarations' claim role), in the table's order."""
    return [split for split in splits if split in RETENTION_SPLITS]


def paired_order(splits: list[str]) -> list[str]:
    """The seed-paired columns in table order (after the bootstrap ones)."""
    held = held_out_splits(splits)
    return ([f"delta_{s}{suffix}" for s in held for suffix in PAIRED_SUFFIXES]
            + [f"dcod_minus_row_{k}{suffix}" for k in [*held, *STABILITY_METRICS] for suffix in PAIRED_SUFFIXES]
            + [f"dcod_minus_row_step_hazard{suffix}" for suffix in PAIRED_SUFFIXES]
            + [f"base_ratio_{s}{suffix}" for s in retention_splits(splits) for suffix in ("", "_low", "_high", "_kind")])


def accuracy_row(evaluated: Evaluated, splits: list[str], baseline: Evaluated | None,
                 subject: Evaluated | None = None, base: Evaluated | None = None) -> dict:
    row: dict = {"method": evaluated.name, "n_seeds": len(evaluated.metrics),
                 "seeds": ";".join(map(str, evaluated.seeds))}
    for split in splits:
        row[f"{split}_mean"], row[f"{split}_std"] = mean_std(split_accuracy(evaluated, split))
    row["direct_step_fraction"] = mean_std(direct_step_fraction(m) for m in evaluated.metrics)[0]
    row["direct_branch_fraction"] = mean_std(direct_branch_fraction(m) for m in evaluated.metrics)[0]
    for column, measure in (("step_hazard", step_hazard), ("vote_gain", vote_gain)):
        row[f"{column}_mean"], row[f"{column}_std"] = mean_std(measure(frame) for frame in evaluated.stability or [])
    for column in STABILITY_METRICS:
        values = [frame[column].mean() for frame in evaluated.stability] if evaluated.stability else []
        row[f"{column}_mean"], row[f"{column}_std"] = mean_std(values)
    # an evaluation without stability samples (Table 2 rows, robustness worlds) writes an empty stability.csv
    samples = [int(frame["samples"].max()) for frame in evaluated.stability or []
               if "samples" in frame and frame["samples"].notna().any()]
    row["stability_samples"] = max(samples) if samples else math.nan
    row["cap_share"] = mean_std(cap_share(frame) for frame in evaluated.samples)[0]
    for split in held_out_splits(splits):
        delta = difference(evaluated, baseline, split, 100.0) if baseline is not None else (math.nan,) * 3
        row[f"delta_{split}_vs_sft"], row[f"delta_{split}_ci_low"], row[f"delta_{split}_ci_high"] = delta
    for key in [*held_out_splits(splits), *STABILITY_METRICS]:
        versus = (math.nan,) * 3
        if subject is not None and subject.name != evaluated.name:
            versus = difference(subject, evaluated, key, 1.0 if key in STABILITY_METRICS else 100.0)
        prefix = f"dcod_minus_row_{key}"
        row[prefix], row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = versus
    paired_columns(row, evaluated, splits, baseline, subject, base)
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


def is_offline_only(run: dict) -> bool:
    """Offline traces only: trains on the stored traces, samples no rollout and keeps no teacher in memory
    (docs/claims.md, "Offline baselines"); a frozen copy of the initial student does not count as online."""
    return is_offline(_declared(run, "needs"))


def is_oracle(run: dict) -> bool:
    """The oracle reference: trained on the teacher's traces forced to the student's native style."""
    return run.get("experiment", {}).get("traces", "teacher") == "student_style"


def is_ceiling(run: dict) -> bool:
    """The reweighting ceiling (docs/claims.md): a method that declared knowledge no method has
    (``Needs.oracle_knowledge``, e.g. the traces' step styles); a reference row, never a baseline."""
    return bool(run.get("needs", {}).get("oracle_knowledge"))


def safetensors_parameters(folder: Path) -> int | None:
    """The exact parameter count from the headers of a model folder's ``*.safetensors`` (no tensor read)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        total += sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    return total


def llama_parameters(config: dict) -> int:
    """A Llama's parameter count from its config.json (embeddings, attention with grouped KV heads, gated
    MLP, RMS norms, an untied head when it has one), for a model folder without safetensors."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads)
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    mlp = 3 * hidden * config["intermediate_size"]
    head = 0 if config.get("tie_word_embeddings", True) else vocab * hidden
    return vocab * hidden + head + layers * (attention + mlp + 2 * hidden) + hidden


def model_parameters(folder: Path) -> int | None:
    counted = safetensors_parameters(folder)
    if counted is not None:
        return counted
    config = Path(folder) / "config.json"
    if config.is_file():
        with open(config) as handle:
            data = json.load(handle)
        if data.get("model_type") == "llama":
            return llama_parameters(data)
    return None


def student_parameters(run: dict, run_dir: Path, work: Path) -> float:
    """N: run.json's record if training wrote one, else the trained model folder, else the base student
    (every method trains the same architecture); NaN with a warning when none is readable."""
    if run.get("student_parameters") is not None:
        return float(run["student_parameters"])
    for folder in (Path(run_dir) / "model", Path(work) / "base_student"):
        counted = model_parameters(folder)
        if counted is not None:
            return float(counted)
    print(f"report: no parameter count for {run_dir} (no run.json 'student_parameters', no model folder): "
          "its FLOPs stay empty", file=sys.stderr)
    return math.nan


def teacher_parameters(run: dict, teacher) -> float:
    """N_teacher: run.json's record, 0 for the programmatic toy teacher, else the local teacher folder."""
    if run.get("teacher_parameters") is not None:
        return float(run["teacher_parameters"])
    if teacher is None or teacher.kind == "programmatic":
        return 0.0
    counted = model_parameters(Path(teacher.path)) if teacher.path and Path(teacher.path).is_dir() else None
    return math.nan if counted is None else float(counted)


def run_cost(run: dict, run_dir: Path, work: Path, teacher) -> dict:
    """One run's cost in machine-independent units (docs/claims.md (d))."""
    cost = {column: float(run.get(column, math.nan)) for column in
            ("wall_time_s", "student_tokens_trained", "tokens_sampled", "teacher_forward_tokens",
             "reference_forward_tokens")}
    n = student_parameters(run, run_dir, work)
    forward = cost["teacher_forward_tokens"]
    n_teacher = teacher_parameters(run, teacher) if forward else 0.0  # no forward: no teacher term
    cost.update(student_parameters=n, teacher_parameters=n_teacher if forward else math.nan)
    cost["training_flops"] = (6 * n * cost["student_tokens_trained"] + 2 * n * cost["tokens_sampled"]
                              + (2 * n_teacher * forward if forward else 0.0))
    reference = cost["reference_forward_tokens"]
    cost["reference_forward_flops"] = 2 * n * reference if not math.isnan(reference) else math.nan
    return cost


def cost_row(runs: list[dict], traces: dict | None, costs: list[dict] | None = None) -> dict:
    """Training cost, mean over seeds; the one-off offline trace cost for methods that use the traces."""
    costs = costs or [{column: float(run.get(column, math.nan)) for column in COST_COLUMNS} for run in runs]
    row = {column: mean_std(cost.get(column, math.nan) for cost in costs)[0] for column in COST_COLUMNS}
    offline = traces is not None and uses_offline_traces(runs[0])
    row["offline_trace_tokens"] = float(traces["tokens_generated"]) if offline else math.nan
    row["offline_trace_seconds"] = float(traces["generation_seconds"]) if offline else math.nan
    return row


def oracle_gap_closed(rows: list[dict], baseline: str) -> None:
    """``oracle_gap_closed_<split>`` on every method row (in place): how much of the SFT -> oracle gap it
    closes; blank for references, without an oracle or a baseline row, or when the gap is under a point."""
    by_name = {row["method"]: row for row in rows}
    oracle = next((row for row in rows if row.get("_oracle")), None)
    for split in GAP_SPLITS:
        column = f"oracle_gap_closed_{split}"
        gap = math.nan
        if oracle is not None and baseline in by_name and f"{split}_mean" in oracle:
            gap = oracle[f"{split}_mean"] - by_name[baseline][f"{split}_mean"]
        for row in rows:
            usable = row["role"] == "method" and not math.isnan(gap) and gap >= MIN_ORACLE_GAP
            row[column] = ((row[f"{split}_mean"] - by_name[baseline][f"{split}_mean"]) / gap
                           if usable and f"{split}_mean" in row else math.nan)
        if oracle is not None:
            oracle[column] = 1.0 if not math.isnan(gap) and gap >= MIN_ORACLE_GAP else math.nan


def ceiling_gap_closed(rows: list[dict], baseline: str) -> None:
    """``ceiling_gap_closed_<split>`` on every method row (in place): the share of the SFT -> reweighting
    ceiling gap it closes, (M − SFT) / (ceiling − SFT) (docs/claims.md, "The reweighting ceiling"); only
    where the ceiling's seed-paired 95% interval against SFT lies above 0 (a t interval: a range from fewer
    than 3 seeds decides nothing), else blank, as for references and tables without a ceiling row."""
    by_name = {row["method"]: row for row in rows}
    ceiling = next((row for row in rows if row.get("_ceiling")), None)
    for split in GAP_SPLITS:
        column = f"ceiling_gap_closed_{split}"
        usable = (ceiling is not None and baseline in by_name and f"{split}_mean" in ceiling
                  and ceiling.get(f"delta_{split}_paired_kind") == "t"
                  and ceiling[f"delta_{split}_paired_low"] > 0)
        gap = ceiling[f"{split}_mean"] - by_name[baseline][f"{split}_mean"] if usable else math.nan
        for row in rows:
            row[column] = ((row[f"{split}_mean"] - by_name[baseline][f"{split}_mean"]) / gap
                           if usable and row["role"] == "method" and f"{split}_mean" in row else math.nan)
        if ceiling is not None:
            ceiling[column] = 1.0 if usable else math.nan


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


def build_rows(work: Path, names: list[str], seeds: list[int], baseline: str, subject: str | None = None,
               teacher=None, paired: bool = False) -> tuple[list[dict], list[str]]:
    """One row per model (accuracy, stability, bootstraps vs ``baseline`` and from ``subject``, cost) and
    the split order; ``teacher`` (the profile's TeacherConfig) prices teacher forwards in FLOPs;
    ``paired``: the profile's ``pretrain.per_seed`` (the base-student row is then a mean over seeds)."""
    evaluated = {name: load_evaluated(work, name, seeds, paired) for name in names}
    dirs = {name: [] if is_reference(name) else run_dirs(work, name, seeds) for name in names}
    runs = {name: [read_run(d) for d in dirs[name]] for name in names}
    needs_traces = any(runs[name] and uses_offline_traces(runs[name][0]) for name in names)
    traces = read_traces_info(work) if needs_traces else None
    splits = split_order([m for ev in evaluated.values() for m in ev.metrics])
    reference = evaluated.get(baseline)
    if reference is None:
        print(f"report: no baseline {baseline!r} among {names}: the delta columns stay empty", file=sys.stderr)
    tested = evaluated.get(subject) if subject else None
    if subject and tested is None:
        print(f"report: no subject {subject!r} among {names}: the dcod_minus_row columns stay empty", file=sys.stderr)
    rows = []
    for name in names:
        row = accuracy_row(evaluated[name], splits, reference, tested, evaluated.get(SEEDED_REFERENCE))
        run = runs[name][0] if runs[name] else {}
        oracle, ceiling = bool(run) and is_oracle(run), bool(run) and is_ceiling(run)
        row["description"] = (PAIRED_BASE_DESCRIPTION if paired and name == SEEDED_REFERENCE
                              else describe(name, run, oracle or ceiling))
        row["role"] = "reference" if not run or oracle or ceiling else "method"
        row["offline_only"] = (is_offline_only(run) if run else math.nan)
        costs = [run_cost(r, d, work, teacher) for r, d in zip(runs[name], dirs[name])]
        cost = cost_row(runs[name], traces, costs) if runs[name] else dict.fromkeys(
            [*COST_COLUMNS, "offline_trace_tokens", "offline_trace_seconds"], math.nan)
        lrs = sorted({float(r["train"]["lr"]) for r in runs[name] if "lr" in r.get("train", {})})
        rows.append({**row, **cost, "lr": ";".join(f"{lr:g}" for lr in lrs),
                     "code_version": code_versions(evaluated[name], runs[name]),
                     "machine": machines(evaluated[name], runs[name]), "_runs": runs[name], "_oracle": oracle,
                     "_ceiling": ceiling})
    oracle_gap_closed(rows, baseline)
    ceiling_gap_closed(rows, baseline)
    return rows, splits


def table_splits(table: pd.DataFrame) -> list[str]:
    """The split order of a written table, read back from its ``<split>_mean``/``<split>_std`` pairs."""
    stability = {"agreement", "malformed_rate", "step_hazard", "vote_gain"}
    return [column[: -len("_mean")] for column in table.columns if column.endswith("_mean")
            and f"{column[: -len('_mean')]}_std" in table.columns and column[: -len("_mean")] not in stability]


def order_columns(frame: pd.DataFrame, splits: list[str], extra: list[str]) -> pd.DataFrame:
    accuracy = [f"{split}_{stat}" for split in splits for stat in ("mean", "std")]
    stability = ["agreement_mean", "agreement_std", "malformed_rate_mean", "malformed_rate_std", "stability_samples",
                 "cap_share"]
    deltas = [f"delta_{split}_{kind}" for split in held_out_splits(splits)
              for kind in ("vs_sft", "ci_low", "ci_high")]
    versus = [f"dcod_minus_row_{key}{kind}" for key in [*held_out_splits(splits), *STABILITY_METRICS]
              for kind in ("", "_ci_low", "_ci_high")]
    gaps = [f"{kind}_gap_closed_{split}" for kind in ("oracle", "ceiling") for split in GAP_SPLITS if split in splits]
    columns = ["method", "description", "role", "offline_only", "lr", "n_seeds", "seeds", *accuracy,
               "direct_step_fraction", "direct_branch_fraction", *stability, *MEASURE_COLUMNS, *COST_COLUMNS, "offline_trace_tokens", "offline_trace_seconds",
               *deltas, *versus, *paired_order(splits), *gaps, *extra, "code_version", "machine"]
    return frame[columns]


def public(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])


def build_table1(work: Path, experiments: list[str], seeds: list[int], baseline: str, subject: str | None = None,
                 teacher=None, paired: bool = False) -> pd.DataFrame:
    rows, splits = build_rows(work, [*TABLE_REFERENCES, *experiments], seeds, baseline, subject, teacher,
                              paired)
    return order_columns(public(rows), splits, [])


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
                 baseline: str, teacher=None) -> pd.DataFrame:
    """The ablations beside ``subject`` and ``baseline`` (role: reference): each run's declared knobs
    (report_columns) and the final-phase mean of the diagnostics its weights log. Its ``role`` column
    (reference / ablation / main) replaces Table 1's reference / method one."""
    rows, splits = build_rows(work, experiments, seeds, baseline, None, teacher)
    extra = ["table2_role"]
    for row in rows:
        run = row.pop("_runs")[0]
        row.pop("_oracle"), row.pop("_ceiling")
        row["_run"] = run
        table = run.get("experiment", {}).get("table")
        row["table2_role"] = "reference" if row["method"] in (baseline, subject) else table
        knobs = dict(_declared(run, "report_columns"))  # [name, value] pairs in the method's order
        row.update(knobs)
        row.update(final_phase_diagnostics(work, row["method"], seeds, _declared(run, "weight_diagnostics")))
        extra += [column for column in knobs if column not in extra]
    diagnostics = [column for row in rows for column in row if column.startswith("final_")]
    extra += list(dict.fromkeys(diagnostics))
    group_rows(rows, subject, work, seeds)
    extra += list(GROUP_COLUMNS)
    frame = order_columns(public(rows), splits, extra)
    frame = frame.drop(columns=["role"]).rename(columns={"table2_role": "role"})
    return frame[[c for c in frame.columns
                  if not c.startswith(("dcod_minus_row_", "oracle_gap_closed_", "ceiling_gap_closed_", "base_ratio_"))]]


# Table 2 as a question (docs/claims.md, "What the claims measure"): each ablation is grouped by the knob it
# varies relative to its default row, derived from the knobs its run declared (report_columns), never typed.
GROUP_COLUMNS = ("group", "default", "varies", "never_acted")
# a knob whose action a logged diagnostic shows: it never acted when the diagnostic is 0 at every logged step
# of every seed (a clip that never binds trains exactly like no clip)
KNOB_DIAGNOSTICS = {"clip": "clip_fraction"}


def _knobs(row: dict) -> dict:
    run = row["_run"]
    return {**dict(_declared(run, "report_columns")),
            **{f"train.{k}": v for k, v in sorted(run.get("experiment", {}).get("train", {}).items())}}


def run_diagnostic_max(work: Path, name: str, seeds: list[int], key: str) -> float:
    """The largest value of one logged diagnostic over every optimiser step of every seed."""
    values = []
    for folder in run_dirs(work, name, seeds):
        log = read_train_log(folder)
        if key not in log.columns:
            raise ValueError(f"{folder / 'train_log.jsonl'}: no diagnostic {key!r}, so Table 2 cannot tell "
                             "whether its knob acted")
        values.append(float(log[key].max()))
    return max(values) if values else math.nan


def group_rows(rows: list[dict], subject: str, work: Path, seeds: list[int]) -> None:
    """``group``/``default``/``varies``/``never_acted`` on every Table 2 row (in place). An ablation's default is
    the subject when it runs the subject's method, else the Table 2 row of its own method that is not an
    ablation (iw_sft for iw_sft with the teacher reference); ``varies`` lists the knobs whose values differ
    from the default's (the method's knob order, then ``train.`` overrides) and ``group`` names the first. An
    ablation that varies nothing is a duplicate of its default: an error naming it."""
    by_name = {row["method"]: row for row in rows}
    method_of = {row["method"]: row["_run"].get("experiment", {}).get("method") for row in rows}
    defaults = {method_of[name]: name for name, row in by_name.items() if row["table2_role"] != "ablation"}
    if subject in by_name:
        defaults[method_of[subject]] = subject
    for row in rows:
        row.update(dict.fromkeys(GROUP_COLUMNS, ""))
        if row["table2_role"] != "ablation":
            continue
        default = defaults.get(method_of[row["method"]])
        if default is None:
            row["group"] = f"{method_of[row['method']]} (no default row in this table)"
            continue
        mine, theirs = _knobs(row), _knobs(by_name[default])
        varies = [knob for knob in mine if str(mine[knob]) != str(theirs.get(knob))]
        if not varies:
            raise ValueError(f"experiments/{row['method']}: every knob equals its default {default!r}'s "
                             f"({mine}): a duplicate row of Table 2; remove it or change a knob")
        prefix = "" if default == subject else f"{method_of[row['method']]}: "
        row.update(group=prefix + varies[0], default=default, varies=";".join(varies))
        idle = [knob for knob in varies if knob in KNOB_DIAGNOSTICS
                and run_diagnostic_max(work, row["method"], seeds, KNOB_DIAGNOSTICS[knob]) == 0]
        row["never_acted"] = ";".join(idle)


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


def seeds_path(table_path: str | Path) -> Path:
    """``results/table1.csv`` -> ``results/table1_seeds.csv``: the per-seed values behind a table."""
    table_path = Path(table_path)
    return table_path.with_name(f"{table_path.stem}_seeds{table_path.suffix}")


def seed_table(work: Path, names: list[str], seeds: list[int], paired: bool = False) -> pd.DataFrame:
    """One row per (model, seed) with the per-seed values a table's means and intervals are computed from
    (docs/claims.md, "Intervals": published so that anyone can recompute an interval): accuracy (%) per
    split, direct-step share, stability means and cap share. A reference evaluated once has seed blank."""
    records = []
    for name in names:
        evaluated = load_evaluated(work, name, seeds, paired)
        stability = evaluated.stability or [None] * len(evaluated.metrics)
        for index, (metrics, samples) in enumerate(zip(evaluated.metrics, evaluated.samples)):
            record = {"method": name, "seed": evaluated.seeds[index] if evaluated.seeds else math.nan}
            record.update({f"{split}_accuracy": 100.0 * float(metrics.loc[metrics["split"] == split, "accuracy"].iloc[0])
                           for split in split_order([metrics])})
            record["direct_step_fraction"] = direct_step_fraction(metrics)
            record["direct_branch_fraction"] = direct_branch_fraction(metrics)
            frame = stability[index]
            record["step_hazard"], record["vote_gain"] = step_hazard(frame), vote_gain(frame)
            for column in STABILITY_METRICS:
                record[column] = (float(frame[column].mean()) if frame is not None and not frame.empty
                                  else math.nan)
            record["cap_share"] = cap_share(samples)
            records.append(record)
    return pd.DataFrame(records)


def _write_split(frame: pd.DataFrame, out: str | Path, what: str) -> None:
    write_csv(timing_path(out), frame[["method", *TIMING_COLUMNS]])
    write_csv(out, frame.drop(columns=list(TIMING_COLUMNS)))
    print(f"{what}: {len(frame)} rows -> {out} (wall times -> {timing_path(out)})")


def _teacher(args):
    from dcod.config import load_profile

    return load_profile(args.profile).teacher if args.profile else None


def write_table1(args) -> None:
    roles = report_roles(args.profile)
    work, experiments, seeds = _inputs(args, "table1")
    paired = paired_base(args.profile)
    table = build_table1(work, experiments, seeds, roles.baseline, roles.subject, _teacher(args), paired)
    _write_split(table, args.out, "table1")
    write_csv(seeds_path(args.out), seed_table(work, ["teacher", "base_student", *experiments], seeds, paired))


def write_table2(args) -> None:
    roles = report_roles(args.profile)
    work, experiments, seeds = _inputs(args, "table2")
    table = build_table2(work, experiments, seeds, roles.subject, roles.baseline, _teacher(args))
    _write_split(table, args.out, "table2")
    write_csv(seeds_path(args.out), seed_table(work, experiments, seeds))
