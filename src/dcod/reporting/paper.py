"""The generated report, paper/report.md: every number is read from results/*.csv, every figure linked.

Nothing here is typed by hand except the decision rules, which are stated in the report itself. A
claim is "supported" only when the data say so at the stated level; the method may lose, and the
wording then says it does. Re-running on new results rewrites every sentence.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dcod.io import write_text
from dcod.config import ReportConfig
from dcod.reporting import held_out_splits, is_reference, markdown_table, need
from dcod.reporting.calibration import check_targets
from dcod.reporting.figures import FIGURE_NAMES, figure_names
from dcod.reporting.tables import table2_knobs, table_splits

# Which splits each claim is judged on: the toy's name first, then the paper profile's benchmarks.
IN_DISTRIBUTION_SPLITS = ("id", "gsm8k", "math", "math500")
HARD_SPLITS = ("long", "amc23", "aime24", "olympiadbench")
RETENTION_SPLITS = ("retention", "ifeval")  # the toy's second skill; IFEval (prompt-level strict)
COST_CLOSE, COST_FAR = 1.10, 1.25  # DCOD/SFT wall-time ratio: <= close: supported; > far: not supported
CAPTIONS = {
    "accuracy_per_split": "Accuracy per split and method (error bars: std over seeds).",
    "accuracy_vs_length": "Accuracy against chain length on held-out problems: where compounding errors show.",
    "dcod_diagnostics": "DCOD over training: adaptive β, ESS fraction and clip fraction, one line per seed.",
    "accuracy_vs_cost": "Accuracy against training wall time and tokens sampled, one point per method.",
    "trace_stability": "Answer agreement across sampled traces and malformed-output rate per method.",
}


def number(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def mean_std(row, column: str, digits: int = 1) -> str:
    mean, std = row.get(f"{column}_mean"), row.get(f"{column}_std")
    text = number(mean, digits)
    return text if std is None or math.isnan(std) else f"{text} ± {number(std, digits)}"


def delta_text(row, split: str) -> str:
    delta = row.get(f"delta_{split}_vs_sft", math.nan)
    if math.isnan(delta):
        return "–"
    return f"{delta:+.1f} [{row[f'delta_{split}_ci_low']:+.1f}, {row[f'delta_{split}_ci_high']:+.1f}]"


# ----------------------------------------------------------------------------- sections
def setup_section(profile, table1: pd.DataFrame) -> list[str]:
    student, teacher, train, ev = profile.student, profile.teacher, profile.train, profile.eval
    student_text = student.path or (f"a tiny Llama built from config (hidden size {student.hidden_size}, "
                                    f"{student.num_layers} layers, {student.num_heads} heads, MLP "
                                    f"{student.intermediate_size})")
    teacher_text = teacher.path or (f"the exact programmatic toy teacher (direct-style probability "
                                    f"{teacher.p_direct:g}, probability floor {teacher.floor:g})")
    lines = ["## Setup", "", f"- Profile: `{profile.name}`.", f"- Student: {student_text}.",
             f"- Teacher: {teacher_text}.",
             f"- Shared training budget for every method: {train.steps} optimiser steps of {train.batch_size} "
             f"sequences, {train.warmup_steps} warm-up steps; learning rate per method in Table 1's `lr` column "
             f"(the profile's default is {train.lr:g}; see Tuning).",
             f"- Seeds: {', '.join(map(str, profile.seeds))} (ablations: "
             f"{', '.join(map(str, profile.ablation_seeds or profile.seeds))}).",
             f"- Evaluation: greedy pass@1 on {', '.join(ev.splits)}; stability from {ev.stability_samples} "
             f"samples per problem on up to {ev.stability_problems} problems."]
    if profile.world:
        sizes = ", ".join(f"{key} {value}" for key, value in profile.world.items() if key.startswith("n_"))
        lines.append(f"- Toy world sizes: {sizes}.")
    lines += ["", "Methods:", ""] + [f"- `{row.method}`: {row.description}" for row in table1.itertuples()]
    return lines + [""]


def table1_section(table1: pd.DataFrame) -> list[str]:
    splits = table_splits(table1)
    rows = [r for _, r in table1.iterrows()]
    accuracy = pd.DataFrame([{"method": r["method"], "seeds": r["n_seeds"],
                              **{s: mean_std(r, s) for s in splits},
                              "direct steps": number(r["direct_step_fraction"], 2),
                              "agreement": mean_std(r, "agreement", 3),
                              "malformed": mean_std(r, "malformed_rate", 3)} for r in rows])
    cost = pd.DataFrame([{"method": r["method"], "wall time (s)": number(r["wall_time_s"]),
                          "student tokens trained": number(r["student_tokens_trained"], 0),
                          "tokens sampled": number(r["tokens_sampled"], 0),
                          "teacher forward tokens": number(r["teacher_forward_tokens"], 0),
                          "offline trace tokens": number(r["offline_trace_tokens"], 0)} for r in rows])
    deltas = pd.DataFrame([{"method": r["method"], **{f"Δ {s}": delta_text(r, s) for s in held_out_splits(splits)}}
                           for r in rows])
    return ["## Table 1: main comparison", "",
            "Accuracy in % (mean ± std over seeds; no spread for a single evaluation); `validation` is the tuning "
            "split and judges no claim; direct steps = share of arithmetic steps written in the direct style; "
            "agreement and malformed from sampled traces.", "",
            markdown_table(accuracy), "", "Training cost (means over seeds; offline trace tokens are the one-off "
            "teacher traces shared by every offline method):", "", markdown_table(cost), "",
            "Method − SFT in accuracy points, paired bootstrap over problems, [95% CI]:", "",
            markdown_table(deltas), ""]


# how Table 2 shows the diagnostics a weighted method logs (label, digits); others: their own name
DIAGNOSTIC_LABELS = {"beta": ("final β", 2), "ess_fraction": ("final ESS", 2), "clip_fraction": ("final clip", 3)}


def table2_section(table2: pd.DataFrame) -> list[str]:
    splits = held_out_splits(table_splits(table2))
    knobs = table2_knobs(table2)
    diagnostics = [c[len("final_"):] for c in table2.columns if c.startswith("final_")]
    labels = {key: DIAGNOSTIC_LABELS.get(key, (f"final {key}", 3)) for key in diagnostics}
    rows = [{"method": r["method"], "role": r["role"], **{k: r[k] for k in knobs},
             **{s: mean_std(r, s) for s in splits}, **{f"Δ {s}": delta_text(r, s) for s in splits},
             **{label: number(r[f"final_{key}"], digits) for key, (label, digits) in labels.items()}}
            for _, r in table2.iterrows()]
    note = [] if (table2["role"] == "ablation").any() else ["This profile has no ablation experiments.", ""]
    return ["## Table 2: DCOD ablations", "", *note,
            "Knobs of each variant, accuracy in % (mean ± std), method − SFT [95% CI], and DCOD diagnostics "
            "averaged over the last 20% of optimiser steps.", "", markdown_table(pd.DataFrame(rows)), ""]


def tuning_section(tuning: pd.DataFrame | None, table1: pd.DataFrame, table2: pd.DataFrame,
                   subject: str) -> list[str]:
    lines = ["## Tuning", ""]
    if tuning is None:
        return lines + ["This profile has no tuning grid (one learning rate): nothing was tuned.", ""]
    split = next(c for c in tuning.columns if c.endswith("_accuracy"))[: -len("_accuracy")]
    grid = tuning.pivot(index="experiment", columns="lr", values=f"{split}_accuracy")
    chosen = tuning[tuning["chosen"]].set_index("experiment")["lr"]
    used = table1.set_index("method")["lr"].astype(str)
    rows = [{"method": name, **{f"lr {lr:g}": number(grid.loc[name, lr]) for lr in grid.columns},
             "chosen": f"{chosen[name]:g}", "used in Table 1": used.get(name, "–")} for name in grid.index]
    lines += [f"Every Table 1 method trained once (seed {int(tuning['seed'].iloc[0])}) at each learning rate of "
              f"the same grid and scored on `{split}` only (accuracy %); the best is chosen (ties: the smaller "
              "learning rate). Test splits never inform a choice.", "", markdown_table(pd.DataFrame(rows)), ""]
    low, high = tuning["lr"].min(), tuning["lr"].max()
    at_edge = [name for name in grid.index if chosen[name] in (low, high)]
    if at_edge:
        lines += [f"At the edge of the grid (the best value may lie outside it): {', '.join(at_edge)}. The "
                  "grid was fixed before any result and is not widened after seeing them.", ""]
    variants = table2[(table2["method"] == subject) | (table2["role"] == "ablation")]
    if f"{split}_mean" in variants.columns and subject in set(variants["method"]) and len(variants) > 1:
        column = f"{split}_mean"
        best, default = variants.loc[variants[column].idxmax()], variants.set_index("method").loc[subject]
        margin = best[column] - default[column]
        verdict = ("the default is the validation-best variant" if margin <= 0 else
                   f"validation prefers `{best['method']}` by {margin:.1f} points (seeds {default['seeds']})")
        lines += [f"DCOD variant on `{split}` (Table 2): default `{subject}` {number(default[column])}%, best "
                  f"`{best['method']}` {number(best[column])}%: {verdict}.", ""]
    return lines


def calibration_section(calibration: pd.DataFrame | None) -> list[str]:
    if calibration is None:
        return ["## Calibration of the world", "", "Not applicable: this profile uses real models and data.", ""]
    lines = ["## Calibration of the world", "", "Full numbers in `calibration.md` beside the tables.", ""]
    lines += [f"- **{t.status}** {t.question}. Measured: {t.evidence}." for t in check_targets(calibration)]
    return lines + [""]


def figures_section(figures_dir: Path, out: Path, source: str = "toy") -> list[str]:
    lines = ["## Figures", ""]
    skipped = [name for name in FIGURE_NAMES if name not in figure_names(source)]
    if skipped:
        lines += [f"Not built for real benchmarks (toy world only): {', '.join(skipped)}.", ""]
    for name in figure_names(source):
        path = figures_dir / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"missing input {path} (run `dcod report figure:{name}` first)")
        relative = Path(os.path.relpath(path, start=out.parent)).as_posix()
        data = Path(relative).with_suffix(".csv").as_posix()
        lines += [f"![{CAPTIONS[name]}]({relative})", "", f"*{CAPTIONS[name]}* Data: `{data}`.", ""]
    return lines


# ----------------------------------------------------------------------------- claims
@dataclass
class Claim:
    title: str
    verdict: str
    sentence: str


def ci_verdict(low: float, high: float) -> str:
    if low > 0:
        return "supported"
    if high < 0:
        return "not supported"
    return "inconclusive"


def accuracy_claim(title: str, dcod, sft, candidates) -> Claim:
    splits = [s for s in candidates if not math.isnan(dcod.get(f"delta_{s}_vs_sft", math.nan))]
    if not splits:
        return Claim(title, "not evaluated", f"no split among {', '.join(candidates)} has a DCOD − SFT bootstrap.")
    verdicts = [ci_verdict(dcod[f"delta_{s}_ci_low"], dcod[f"delta_{s}_ci_high"]) for s in splits]
    verdict = ("not supported" if "not supported" in verdicts else
               "supported" if set(verdicts) == {"supported"} else "inconclusive")
    parts = [f"on {s}, DCOD {mean_std(dcod, s)}% vs SFT {mean_std(sft, s)}%, DCOD − SFT = "
             f"{delta_text(dcod, s)} points ({v})" for s, v in zip(splits, verdicts)]
    text = "; ".join(parts)
    return Claim(title, verdict, text[0].upper() + text[1:] + ".")


def interval_direction(dcod, sft, column: str, higher_is_better: bool) -> str | None:
    """better / worse when the mean ± std intervals do not overlap; tie when they do; None if unknown."""
    values = [row.get(f"{column}_{stat}") for row in (dcod, sft) for stat in ("mean", "std")]
    if any(v is None or math.isnan(v) for v in values):
        return None
    d_mean, d_std, s_mean, s_std = values
    if d_mean - d_std > s_mean + s_std:
        return "better" if higher_is_better else "worse"
    if d_mean + d_std < s_mean - s_std:
        return "worse" if higher_is_better else "better"
    return "tie"


def stability_claim(dcod, sft) -> Claim:
    title = "DCOD produces more stable reasoning traces than SFT"
    directions = [interval_direction(dcod, sft, "agreement", True),
                  interval_direction(dcod, sft, "malformed_rate", False)]
    sentence = (f"Answer agreement DCOD {mean_std(dcod, 'agreement', 3)} vs SFT {mean_std(sft, 'agreement', 3)}; "
                f"malformed rate DCOD {mean_std(dcod, 'malformed_rate', 3)} vs SFT {mean_std(sft, 'malformed_rate', 3)}"
                " (a difference counts when the mean ± std intervals do not overlap).")
    if None in directions:
        return Claim(title, "inconclusive", sentence + " Too few seeds or no stability data to judge.")
    verdict = ("supported" if "better" in directions and "worse" not in directions else
               "not supported" if "worse" in directions and "better" not in directions else "inconclusive")
    return Claim(title, verdict, sentence)


PRESERVED_SHARE = 0.9


def retention_claim(dcod, sft, base) -> Claim:
    split = next((s for s in RETENTION_SPLITS if f"{s}_mean" in dcod), None)
    title = "DCOD preserves instruction following (" + ("IFEval prompt-level strict accuracy)" if split == "ifeval"
                                                        else "retention of the base student's second skill)")
    if split is None:
        return Claim(title, "not evaluated", "this profile has no retention split.")
    direction = interval_direction(dcod, sft, split, True)
    # "preserves" is judged against the base student, not only against SFT: DCOD must keep at least
    # PRESERVED_SHARE of the base student's retention accuracy and not fall below SFT
    kept = dcod[f"{split}_mean"] / base[f"{split}_mean"] if base is not None and base[f"{split}_mean"] else None
    if direction == "worse" or (kept is not None and kept < PRESERVED_SHARE):
        verdict = "not supported"
    elif dcod[f"{split}_mean"] >= sft[f"{split}_mean"]:
        verdict = "supported"
    else:
        verdict = "inconclusive"
    base_text = f"; base student {mean_std(base, split)}%" if base is not None else ""
    kept_text = f"; DCOD keeps {100 * kept:.0f}% of the base student's accuracy" if kept is not None else ""
    return Claim(title, verdict, f"Retention accuracy DCOD {mean_std(dcod, split)}% vs SFT {mean_std(sft, split)}%"
                 f"{base_text}{kept_text} (supported when DCOD keeps at least {100 * PRESERVED_SHARE:.0f}% of the base "
                 f"student's retention and is not below SFT; not supported when it keeps less or its mean ± std lies "
                 f"wholly below SFT's).")


def cost_claim(table1: pd.DataFrame, dcod, sft, compared: tuple[str, str]) -> Claim:
    title = "DCOD's training cost is close to SFT's"
    ratio = dcod["wall_time_s"] / sft["wall_time_s"]
    verdict = "supported" if ratio <= COST_CLOSE else "not supported" if ratio > COST_FAR else "inconclusive"
    others = [f"{r['method']} {r['wall_time_s'] / sft['wall_time_s']:.2f}x" for _, r in table1.iterrows()
              if not math.isnan(r["wall_time_s"]) and r["method"] not in compared]
    return Claim(title, verdict, f"Wall time DCOD {number(dcod['wall_time_s'])} s vs SFT "
                 f"{number(sft['wall_time_s'])} s "
                 f"(ratio {ratio:.2f}; supported at <= {COST_CLOSE:.2f}, not supported above {COST_FAR:.2f}); "
                 f"tokens sampled in training DCOD {number(dcod['tokens_sampled'], 0)} vs SFT "
                 f"{number(sft['tokens_sampled'], 0)}. Other methods relative to SFT: {', '.join(others) or 'none'}.")


def baselines_claim(rows: dict, dcod, others: list[str]) -> Claim:
    """DCOD against every other baseline (``others``: the Table 1 experiments besides the two the claims
    compare) on the in-distribution and hard splits (mean ± std rule)."""
    title = "DCOD beats every other baseline of Table 1"
    splits = [s for s in (*IN_DISTRIBUTION_SPLITS, *HARD_SPLITS) if f"{s}_mean" in dcod]
    parts, directions = [], []
    for name in others:
        for split in splits:
            direction = interval_direction(dcod, rows[name], split, True)
            directions.append(direction)
            parts.append(f"{split} vs {name}: {mean_std(dcod, split)} vs {mean_std(rows[name], split)} "
                         f"({direction or 'unknown'})")
    if not parts:
        return Claim(title, "not evaluated", "Table 1 has none of these baselines.")
    verdict = ("not supported" if "worse" in directions else
               "supported" if set(directions) == {"better"} else "inconclusive")
    return Claim(title, verdict, "DCOD " + "; ".join(parts) + " (better / worse when the mean ± std intervals "
                 "over seeds do not overlap, tie otherwise; not supported when DCOD is worse on any).")


def judge_claims(table1: pd.DataFrame, report: ReportConfig | None = None) -> list[Claim] | None:
    """Every claim judged by its rule on a Table 1 (a fresh one or a published one); None without the
    rows of ``report.subject`` and ``report.baseline`` (default: the shipped profiles') it compares."""
    report = report or ReportConfig()
    rows = {r["method"]: r for _, r in table1.iterrows()}
    if report.subject not in rows or report.baseline not in rows:
        return None
    dcod, sft = rows[report.subject], rows[report.baseline]
    compared = (report.baseline, report.subject)
    others = [name for name in rows if name not in compared and not is_reference(name)]
    return [accuracy_claim("DCOD beats SFT on in-distribution accuracy", dcod, sft, IN_DISTRIBUTION_SPLITS),
            accuracy_claim("DCOD beats SFT on harder / long problems", dcod, sft, HARD_SPLITS),
            baselines_claim(rows, dcod, others), stability_claim(dcod, sft),
            retention_claim(dcod, sft, rows.get("base_student")), cost_claim(table1, dcod, sft, compared)]


def claims_section(table1: pd.DataFrame, report: ReportConfig) -> list[str]:
    lines = ["## Claims", ""]
    claims = judge_claims(table1, report)
    if claims is None:
        return lines + [f"Not evaluated: Table 1 needs both `{report.subject}` and `{report.baseline}` rows.", ""]
    lines += ["Claims 1–2 are supported only when the 95% paired-bootstrap CI of DCOD − SFT excludes 0 in DCOD's "
              "favour, not supported when it excludes 0 against DCOD, inconclusive otherwise.", ""]
    lines += [f"{i}. **{c.title}: {c.verdict}.** {c.sentence}" for i, c in enumerate(claims, start=1)]
    return lines + [""]


def read_result(results_dir: Path, name: str) -> pd.DataFrame:
    from dcod.reporting.tables import read_table

    return read_table(results_dir / name)


def write_report(args) -> None:
    from dcod.config import load_profile

    profile = load_profile(need(args.profile, "--profile", "paper"))
    results_dir, out = Path(args.results_dir), Path(args.out)
    table1, table2 = read_result(results_dir, "table1.csv"), read_result(results_dir, "table2.csv")
    # only the toy world has a calibration report (forced-style teachers exist only there)
    calibration = read_result(results_dir, "calibration.csv") if profile.data.source == "toy" else None
    lines = [f"# Distribution Corrected Offline Data Distillation: replication report (`{profile.name}` profile)",
             "", f"Generated by `python -m dcod report paper` from `{results_dir}/*.csv` and `{args.figures_dir}/`; "
             "do not edit: every number below is read from those files.", ""]
    # a profile with a learning-rate grid reports it (the rule makes results/tuning.csv an input)
    tuning = read_result(results_dir, "tuning.csv") if len(profile.tuning.lrs) > 1 else None
    lines += setup_section(profile, table1) + table1_section(table1) + table2_section(table2)
    lines += tuning_section(tuning, table1, table2, profile.report.subject)
    lines += calibration_section(calibration) + figures_section(Path(args.figures_dir), out, profile.data.source)
    lines += claims_section(table1, profile.report)
    write_text(out, "\n".join(lines))
    print(f"paper: -> {out}")
