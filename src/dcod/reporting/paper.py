"""The generated report, paper/report.md: every number is read from results/*.csv, every figure linked.

Nothing here is typed by hand except the decision rules, which are stated in the report itself. A
claim is "supported" only when the data say so at the stated level; the method may lose, and the
wording then says it does. Re-running on new results rewrites every sentence.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from dcod.io import write_text
from dcod.config import ReportConfig
from dcod.reporting import REFERENCES, held_out_splits, markdown_table, need, number_or_dash, paired_text
from dcod.reporting.calibration import check_targets
from dcod.reporting.claims import (HARD_SPLITS, IN_DISTRIBUTION_SPLITS, RETENTION_SPLITS, Claim,  # noqa: F401
                                   SUPPORTED, TITLE_A, accuracy_claim, claims_of, cost_claim, judge_claims, not_judged,
                                   offline_baselines, read_table3, retention_claim, robust_claim, robustness_verdicts,
                                   stability_claim)
from dcod.reporting.figures import FIGURE_NAMES, caption, figure_names
from dcod.reporting.tables import GROUP_COLUMNS, MIN_ORACLE_GAP, table2_knobs, table_splits
from dcod.reporting.traces import traces_section

def mean_std(row, column: str, digits: int = 1) -> str:
    mean, std = row.get(f"{column}_mean"), row.get(f"{column}_std")
    text = number_or_dash(mean, f",.{digits}f")
    return text if std is None or math.isnan(std) else f"{text} ± {number_or_dash(std, f',.{digits}f')}"


def delta_text(row, split: str) -> str:
    """Row − SFT on a split: the seed-paired interval where the table has one (docs/claims.md, "Intervals"),
    else the hierarchical bootstrap's (tables written before the paired columns, like the published one)."""
    if isinstance(row.get(f"delta_{split}_paired_kind"), str):
        return paired_text(row, f"delta_{split}_paired")
    delta = row.get(f"delta_{split}_vs_sft", math.nan)
    if math.isnan(delta):
        return "–"
    return f"{delta:+.1f} [{row[f'delta_{split}_ci_low']:+.1f}, {row[f'delta_{split}_ci_high']:+.1f}]"


def has_paired(table: pd.DataFrame) -> bool:
    return any(str(c).endswith("_paired_kind") for c in table.columns)


PAIRED_LEGEND = ("paired by seed (both models of a seed share its base student): [95% CI, t over seeds with the "
                 "problem level added], or, from fewer than 3 seeds, the range of the per-seed differences, which "
                 "is not a confidence interval and decides nothing")
BOOTSTRAP_LEGEND = "[95% CI; hierarchical bootstrap over training seeds, then problems paired across the two models]"


# ----------------------------------------------------------------------------- sections
def _learning_rate_source(profile) -> str:
    """Where the profile's learning rates come from (ProfileConfig.learning_rates), in words."""
    rates = profile.learning_rates
    if rates is None:
        return f"one untuned value for every method ({profile.train.lr:g}, the profile's `train.lr`)"
    chosen = f"each method's choice of the tuning grid on `{profile.tuning.split}`"
    if rates.source == "table":
        return f"{chosen}, as stored in the profile (copied from `{rates.tuned_from}`; see Tuning)"
    return f"{chosen} in this run (see Tuning)"


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
             f"sequences, {train.warmup_steps} warm-up steps; learning rate per method in Table 1's `lr` column: "
             f"{_learning_rate_source(profile)}.",
             f"- Seeds: {', '.join(map(str, profile.seeds))} (ablations: "
             f"{', '.join(map(str, profile.ablation_seeds or profile.seeds))})" + (
                 f"; seed s starts from the base student pre-trained with seed {profile.pretrain.seed} + s, so a "
                 "seed is a (pre-training, training) pair and every interval carries both draws."
                 if profile.pretrain.per_seed and not student.path else "."),
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

    def name(r) -> str:  # the oracle is a reference a method could not reach: never read as a competitor
        return f"{r['method']} (reference)" if r["role"] == "reference" and not is_plain_reference(r) else r["method"]

    accuracy = pd.DataFrame([{"method": name(r), "seeds": r["n_seeds"],
                              **{s: mean_std(r, s) for s in splits},
                              "direct steps": number_or_dash(r["direct_step_fraction"], ",.2f"),
                              "agreement": mean_std(r, "agreement", 3),
                              "malformed": mean_std(r, "malformed_rate", 3), **measure_cells(table1, r)}
                             for r in rows])
    cost = pd.DataFrame([{"method": name(r),
                          "student tokens trained": number_or_dash(r["student_tokens_trained"], ",.0f"),
                          "tokens sampled": number_or_dash(r["tokens_sampled"], ",.0f"),
                          "teacher forward tokens": number_or_dash(r["teacher_forward_tokens"], ",.0f"),
                          "training FLOPs": number_or_dash(r.get("training_flops"), ".3g"),
                          "offline trace tokens": number_or_dash(r["offline_trace_tokens"], ",.0f"),
                          "wall time (s)": number_or_dash(r.get("wall_time_s"), ",.1f")} for r in rows])
    deltas = pd.DataFrame([{"method": name(r), **{f"Δ {s}": delta_text(r, s) for s in held_out_splits(splits)}}
                           for r in rows])
    lines = ["## Table 1: main comparison", "",
             "Accuracy in % (mean ± std over training seeds; no spread for a single evaluation); `validation` is the "
             "tuning split and judges no claim; direct steps = share of arithmetic steps written in the direct style; "
             "agreement (share of sampled final answers equal to the most common one) and malformed (share of "
             "sampled traces without a parseable answer or with a step in neither style) from sampled traces." + (
                 f" {MEASURE_LEGEND}" if any(measure_cells(table1, r) for r in rows) else ""), ""]
    oracle = [r["method"] for r in rows if r["role"] == "reference" and not is_plain_reference(r)]
    if oracle:
        lines += [f"`{'`, `'.join(oracle)}` is a reference, not a method: SFT on traces of the teacher forced to the "
                  "student's native style, knowledge no real method has. It is never a baseline to beat; it shows "
                  "how much of the gap above SFT a perfect offline correction could close.", ""]
    lines += [markdown_table(accuracy), "",
              "Training cost in machine-independent units (means over seeds): training FLOPs = 6·N·tokens trained + "
              "2·N·tokens sampled + 2·N_teacher·teacher forward tokens (N the student's parameter count; the "
              "programmatic toy teacher counts 0); offline trace tokens are the one-off teacher traces shared by every "
              "offline method. Wall time is this machine's (the `machine` column of the table) and decides nothing.", "",
              markdown_table(cost), "",
              f"Method − SFT in accuracy points, "
              f"{PAIRED_LEGEND if has_paired(table1) else BOOTSTRAP_LEGEND}:", "", markdown_table(deltas), ""]
    return lines + oracle_gap_lines(table1, oracle) + ceiling_gap_lines(table1)


def measure_cells(table1: pd.DataFrame, row) -> dict:
    """The amendment's measures (docs/claims.md, "Direct steps", "Claim (b)") where the table has them: the
    direct-step share at branch points, the step hazard and majority vote − mean sample accuracy."""
    cells = {}
    if "direct_branch_fraction" in table1.columns and table1["direct_branch_fraction"].notna().any():
        cells["direct at branch points"] = number_or_dash(row["direct_branch_fraction"], ",.2f")
    for column, label in (("step_hazard", "step hazard"), ("vote_gain", "vote − mean")):
        if f"{column}_mean" in table1.columns and table1[f"{column}_mean"].notna().any():
            cells[label] = mean_std(row, column, 3)
    return cells


MEASURE_LEGEND = ("Where shown: direct at branch points = share of the steps where the two styles differ written in "
                  "the direct style; step hazard = for each step position, the share of sampled traces whose step is "
                  "wrong among those whose earlier steps are right, averaged over positions with at least 20 traces "
                  "at risk; vote − mean = majority-vote accuracy over the sampled traces minus their mean accuracy.")


def is_plain_reference(row) -> bool:
    """The teacher and base student (not trained on the traces) as opposed to a trained reference like the
    oracle; the base student may have one evaluation per seed (pretrain.per_seed)."""
    return row["method"] in REFERENCES


def oracle_gap_lines(table1: pd.DataFrame, oracle: list[str]) -> list[str]:
    columns = [c for c in table1.columns if c.startswith("oracle_gap_closed_")]
    lines = ["Oracle gap closed: (method − SFT) / (oracle − SFT) accuracy on each split; 0% = no better than SFT, "
             "100% = as good as the oracle reference.", ""]
    if not oracle or not columns:
        return lines + ["Not produced in this run: Table 1 has no oracle reference row.", ""]
    splits = [c[len("oracle_gap_closed_"):] for c in columns]
    methods = table1[table1["role"] == "method"]
    blank = [s for s in splits if methods[f"oracle_gap_closed_{s}"].isna().all()]
    rows = [{"method": r["method"], **{s: number_or_dash(r[f"oracle_gap_closed_{s}"], ".0%") for s in splits}}
            for _, r in methods.iterrows()]
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    if blank:
        lines += [f"Left blank on {', '.join(blank)}: the oracle is less than {MIN_ORACLE_GAP:g} accuracy point above "
                  "SFT there, so the ratio would divide by noise.", ""]
    return lines


def ceiling_gap_lines(table1: pd.DataFrame) -> list[str]:
    """The share of the SFT -> reweighting-ceiling gap each method closes (docs/claims.md, "The reweighting
    ceiling"), where Table 1 has the ceiling row's columns."""
    columns = [c for c in table1.columns if c.startswith("ceiling_gap_closed_")]
    if not columns or "description" not in table1.columns:
        return []
    lines = ["Reweighting ceiling gap closed: (method − SFT) / (ceiling − SFT), the ceiling being SFT on the same "
             "teacher traces with weight 0 on every trace that writes a direct-style step at a branch point "
             "(knowledge no method has).", ""]
    splits = [c[len("ceiling_gap_closed_"):] for c in columns]
    methods = table1[table1["role"] == "method"]
    blank = [s for s in splits if methods[f"ceiling_gap_closed_{s}"].isna().all()]
    if len(blank) == len(splits):
        return lines + ["Not stated on any split: no ceiling row in Table 1, or its seed-paired 95% interval against "
                        "SFT does not lie above 0 (or comes from fewer than 3 seeds), so the gap may be noise.", ""]
    rows = [{"method": r["method"], **{s: number_or_dash(r[f"ceiling_gap_closed_{s}"], ".0%") for s in splits}}
            for _, r in methods.iterrows()]
    lines += [markdown_table(pd.DataFrame(rows)), ""]
    if blank:
        lines += [f"Left blank on {', '.join(blank)}: the ceiling's interval against SFT does not lie above 0 there.",
                  ""]
    return lines


# how Table 2 shows the diagnostics a weighted method logs (label, digits); others: their own name
DIAGNOSTIC_LABELS = {"beta": ("final β", 2), "ess_fraction": ("final ESS", 2), "clip_fraction": ("final clip", 3)}


def table2_section(table2: pd.DataFrame) -> list[str]:
    splits = held_out_splits(table_splits(table2))
    knobs = table2_knobs(table2)
    diagnostics = [c[len("final_"):] for c in table2.columns if c.startswith("final_")]
    labels = {key: DIAGNOSTIC_LABELS.get(key, (f"final {key}", 3)) for key in diagnostics}
    rows = [{"method": r["method"], "role": r["role"], **{k: r[k] for k in knobs},
             **{s: mean_std(r, s) for s in splits}, **{f"Δ {s}": delta_text(r, s) for s in splits},
             **{label: number_or_dash(r[f"final_{key}"], f",.{digits}f") for key, (label, digits) in labels.items()}}
            for _, r in table2.iterrows()]
    note = [] if (table2["role"] == "ablation").any() else ["This profile has no ablation experiments.", ""]
    if "group" in table2.columns and (table2["role"] == "ablation").any():
        return table2_groups(table2, splits, labels)
    return ["## Table 2: DCOD ablations", "", *note,
            "Knobs of each variant, accuracy in % (mean ± std), method − SFT [95% CI, hierarchical bootstrap over "
            "seeds and problems], and DCOD diagnostics averaged over the last 20% of optimiser steps.", "", markdown_table(pd.DataFrame(rows)), ""]


def table2_groups(table2: pd.DataFrame, splits: list[str], labels: dict) -> list[str]:
    """Table 2 as a question: one small table per knob, the default row first, then each ablation that varies
    that knob (its ``group``, derived by dcod.reporting.tables.group_rows); a knob that never acted over the
    run (its diagnostic 0 at every step) is marked, so its row is not read as evidence about the knob."""
    knobs = table2_knobs(table2)
    table2 = table2.astype({c: object for c in GROUP_COLUMNS}).fillna({c: "" for c in GROUP_COLUMNS})
    rows = table2.set_index("method", drop=False)
    ablations = table2[table2["role"] == "ablation"]

    def order(group: str) -> tuple:  # the subject's knobs in the method's order, then other methods' groups
        knob = group.rpartition(": ")[2]
        return (": " in group, knobs.index(knob) if knob in knobs else len(knobs), group)

    def line(r, varied: list[str]) -> dict:
        acted = "never acted: " + r["never_acted"].replace(";", ", ") if r["never_acted"] else ""
        return {"method": r["method"], **{k: r[k] for k in varied}, **{s: mean_std(r, s) for s in splits},
                **{f"Δ {s}": delta_text(r, s) for s in splits},
                **{label: number_or_dash(r[f"final_{key}"], f",.{digits}f") for key, (label, digits) in labels.items()},
                "knob acted": acted}

    legend = PAIRED_LEGEND if has_paired(table2) else BOOTSTRAP_LEGEND
    lines = ["## Table 2: DCOD ablations, one question per knob", "",
             "Each table varies one knob of its default row (the first row), everything else held: which knob an "
             "ablation varies is read from the knobs its run declared, never typed. Accuracy in % (mean ± std over "
             f"the ablation seeds), method − SFT in points, {legend}; DCOD diagnostics averaged over the last 20% "
             "of optimiser steps. \"knob acted\" marks a knob whose diagnostic was 0 at every step of every seed "
             "(a clip that never binds trains exactly like no clip).", ""]
    for group in sorted(set(ablations["group"]), key=order):
        members = ablations[ablations["group"] == group]
        varied = list(dict.fromkeys(k for v in members["varies"] for k in v.split(";") if k in knobs))
        default = members["default"].iloc[0]
        records = ([line(rows.loc[default], varied)] if default in rows.index else [])
        records += [line(r, varied) for _, r in members.iterrows()]
        lines += [f"### {group}" + (f" (default `{default}`)" if default else ""), "",
                  markdown_table(pd.DataFrame(records)), ""]
    return lines


def table3_section(table3: pd.DataFrame | None, subject: str) -> list[str]:
    """Table 3 (results/table3.csv): the prior offline methods beside the runs they are read against."""
    from dcod.reporting.table3 import markdown_lines

    lines = ["## Table 3: prior offline methods", ""]
    if table3 is None:
        return lines + ["Not produced in this run (`results/table3.csv` absent).", ""]
    return lines + markdown_lines(table3, subject) + [
        "Claim (a) reads every offline method of Tables 1 and 3 (see Claims); `table3.md` beside the tables marks a "
        "method absent from the published snapshot.", ""]


def tuning_section(tuning: pd.DataFrame | None, table1: pd.DataFrame, table2: pd.DataFrame,
                   subject: str) -> list[str]:
    lines = ["## Tuning", ""]
    if tuning is None:
        return lines + ["This profile has no tuning grid (one learning rate): nothing was tuned.", ""]
    split = next(c for c in tuning.columns if c.endswith("_accuracy"))[: -len("_accuracy")]
    grid = tuning.pivot(index="experiment", columns="lr", values=f"{split}_accuracy")
    chosen = tuning[tuning["chosen"]].set_index("experiment")["lr"]
    used = table1.set_index("method")["lr"].astype(str)
    rows = [{"method": name, **{f"lr {lr:g}": number_or_dash(grid.loc[name, lr], ",.1f") for lr in grid.columns},
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
        lines += [f"DCOD variant on `{split}` (Table 2): default `{subject}` "
                  f"{number_or_dash(default[column], ',.1f')}%, best "
                  f"`{best['method']}` {number_or_dash(best[column], ',.1f')}%: {verdict}.", ""]
    return lines


def calibration_section(calibration: pd.DataFrame | None) -> list[str]:
    if calibration is None:
        return ["## Calibration of the world", "", "Not applicable: this profile uses real models and data.", ""]
    lines = ["## Calibration of the world", "", "Full numbers in `calibration.md` beside the tables.", ""]
    lines += [f"- **{t.status}** {t.question}. Measured: {t.evidence}." for t in check_targets(calibration)]
    return lines + [""]


def regime_warning(calibration: pd.DataFrame | None) -> list[str]:
    """A line at the top of the report when the world misses a calibration target: every comparison
    below is then measured outside the regime the targets define (docs/toy_world.md)."""
    if calibration is None:
        return []
    failed = [t for t in check_targets(calibration) if t.status != "PASS"]
    if not failed:
        return ["**Calibration**: every target of the world's calibration report passes.", ""]
    listed = "; ".join(f"{t.question} ({t.status})" for t in failed)
    return [f"**Read this first — the world misses {len(failed)} calibration target(s)**: {listed}. Table 1 and "
            "the claims below are measured in that regime, not in the one the targets define; see "
            "\"Calibration of the world\" and docs/toy_world.md.", ""]


# ----------------------------------------------------------------------------- smoke profiles
def smoke_warning(profile) -> list[str]:
    """The first lines of a smoke profile's report (ProfileConfig.results; docs/reproducibility.md, "Smoke
    profiles"): what its numbers are for, before any number."""
    return [f"**Smoke run: these numbers test the code path only.** The `{profile.name}` profile declares "
            "`results: smoke`: a run too small to measure anything (a few problems, a few optimiser steps). No "
            "claim is judged, and no accuracy, difference or interval below is evidence about any method; the "
            "share of generations that ran to the token cap (\"Generations cut at the token cap\", after Table 2) "
            "says how many answers were cut off.", ""]


def cap_share_section(profile, table1: pd.DataFrame, work: str | Path | None) -> list[str]:
    """Per model and split, the share of its greedy evaluation generations that hit the token cap
    (``finish_reason`` ``length`` in samples.jsonl; tables.cap_share), mean over seeds. A cut-off answer is
    graded on whatever number the truncated text holds, so a smoke accuracy is read against this."""
    from dcod.reporting import eval_dirs, read_samples
    from dcod.reporting.tables import cap_share

    work = Path(work) if work else Path("work") / profile.name
    lines = ["## Generations cut at the token cap", "",
             f"Share of greedy evaluation generations that ran to the cap (`eval.max_new_tokens` = "
             f"{profile.eval.max_new_tokens}) instead of ending by themselves, per model and split (mean over "
             f"seeds), from `{work}/eval/<model>/[seed<s>/]samples.jsonl` (`finish_reason`).", ""]
    if not work.is_dir():
        pooled = pd.DataFrame([{"model": r["method"], "all splits": number_or_dash(100 * r["cap_share"], ".0f")}
                               for _, r in table1.iterrows()]) if "cap_share" in table1 else None
        note = f"The work folder `{work}` is absent: Table 1's `cap_share` (every split pooled), in %."
        return lines + ([note, "", markdown_table(pooled), ""] if pooled is not None else [note, ""])
    rows = []
    for name in table1["method"]:
        frames = [read_samples(folder) for folder in eval_dirs(work, name, profile.seeds, profile.pretrain.per_seed)]
        shares = {split: [cap_share(f[f["split"] == split]) for f in frames] for split in profile.eval.splits}
        rows.append({"model": name, **{split: number_or_dash(100 * pd.Series(v).mean(), ".0f")
                                       for split, v in shares.items()}})
    return lines + ["In %:", "", markdown_table(pd.DataFrame(rows)), ""]


def smoke_claims_section(claims) -> list[str]:
    lines = ["## Claims", "", "Not judged: a smoke profile's numbers test the code path only (`results/claims.csv` "
             "lists each claim with the verdict \"not judged (smoke profile)\"). The pre-registered rules of "
             "`docs/claims.md` are judged on the `toy` and `paper` profiles.", ""]
    return lines + [f"- {c.title}: **{c.verdict}**" for c in claims or []] + [""]


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
        lines += [f"![{caption(name)}]({relative})", "", f"*{caption(name)}* Data: `{data}`.", ""]
    return lines


# ----------------------------------------------------------------------------- claims
def claims_section(claims: list[Claim] | None, report: ReportConfig, robust: Claim | None = None,
                   float_path: tuple[str, dict[str, str]] | None = None, paired: bool = False,
                   table1_alone: Claim | None = None) -> list[str]:
    """The verdict on each claim; ``float_path`` = (kernel label, claim title → verdict of the float-path
    rerun's Table 1): a claim whose verdict the float kernels alone change is marked as not settled.
    ``paired``: Table 1 has the seed-paired columns the claims are then judged on. ``table1_alone``: claim (a)
    judged on this run's Table 1 alone, when the claim read Table 3 too (the float-path rerun has Table 1
    only, so that is the reading compared across float paths)."""
    intervals = ("Every difference is paired by seed (both models of a seed share its base student): a 95% "
                 "interval is t over seeds with the problem level added; from fewer than 3 seeds it is the range "
                 "of the per-seed differences, not a CI, and decides no claim." if paired else
                 "Every interval is a 95% hierarchical bootstrap (training seeds resampled per model, then problems "
                 "resampled with the same draws for both models; 2,000 replicates, fixed seed), so it includes "
                 "seed variance.")
    lines = ["## Claims", "", f"Judged exactly by the pre-registered rules of `docs/claims.md`. {intervals}", ""]
    if claims is None:
        return lines + [f"Not evaluated: Table 1 needs both `{report.subject}` and `{report.baseline}` rows.", ""]
    claims = [*claims[:1], *([robust] if robust is not None else []), *claims[1:]]
    label, other = float_path if float_path is not None else ("", {})
    flipped = flipped_verdicts(claims, other)
    alone_flip = flipped_verdicts([table1_alone], other) if table1_alone is not None else {}
    for claim in claims:  # claim (a) over Tables 1 and 3: unsettled when its Table 1 reading flips
        if claim.key == "a" and claim.title != TITLE_A and alone_flip:
            flipped[claim.title] = f"{alone_flip[table1_alone.title]} on Table 1 alone, {table1_alone.verdict} here"
    summary = pd.DataFrame([{"claim": c.title, "verdict": f"**{c.verdict}**" + (
                                 f" (`{label}` kernels: {flipped[c.title]}; not settled)" if c.title in flipped else ""),
                             "numbers behind it": "; ".join(c.numbers[:3]) + (" …" if len(c.numbers) > 3 else "")}
                            for c in claims])
    lines += [markdown_table(summary), ""]
    for claim in claims:
        lines += [f"### {claim.title}: {claim.verdict}", "", claim.sentence, ""]
        if claim.title in flipped and claim.title in other:
            lines += [unsettled_text(claim.verdict, flipped[claim.title], label), ""]
        elif claim.title in flipped:
            lines += [unsettled_text(table1_alone.verdict, alone_flip[table1_alone.title], label)
                      + " (Judged on Table 1 alone: the float-path check reruns Table 1 only.)", ""]
        lines += [f"- {number_line}" for number_line in claim.numbers] + ([""] if claim.numbers else [])
    return lines


def table1_reading(claims: list[Claim] | None, table1: pd.DataFrame, report: ReportConfig) -> Claim | None:
    """Claim (a) judged on Table 1 alone, when ``claims``' claim (a) read Table 3 too; else None."""
    if not claims or claims[0].key != "a" or claims[0].title == TITLE_A:
        return None
    return accuracy_claim(table1, report)


def flipped_verdicts(claims: list[Claim], other: dict[str, str]) -> dict[str, str]:
    """Claim title → the other run's verdict, for the claims both runs judge with different verdicts."""
    return {c.title: other[c.title] for c in claims if c.title in other and other[c.title] != c.verdict}


def unsettled_text(verdict: str, other: str, label: str) -> str:
    """What a verdict that differs between the two float paths means (section "Float-path spread")."""
    text = (f"**Not settled by this evidence.** The same Table 1 under the `{label}` float kernels reads "
            f"*{other}* where this run reads *{verdict}*: the float kernels alone change this verdict, so the "
            "intervals are not yet tight enough to decide it on this machine; more seeds, more evaluation problems "
            "or a sturdier world could settle it; a looser rule would not.")
    if SUPPORTED not in (verdict, other):
        text += " Neither run supports the claim."
    return text


# ----------------------------------------------------------------------------- robustness
def robustness_section(robustness: pd.DataFrame | None, table1: pd.DataFrame, report: ReportConfig,
                       figures_dir: Path, out: Path, main: list[Claim] | None) -> tuple[list[str], Claim | None]:
    """The robustness worlds' table (from results/robustness.csv), claim (a) per world and across worlds."""
    lines = ["## Robustness worlds", ""]
    if robustness is None:
        return lines + ["Not produced in this run (`results/robustness.csv` absent).", ""], robust_claim(
            Claim("", "", ""), None)
    baselines, _ = offline_baselines(table1, report.subject)
    worlds = robustness_verdicts(robustness, baselines)
    robust = robust_claim(main[0], worlds) if main else None

    def ci(row, prefix):
        values = [row.get(f"{prefix}{suffix}", math.nan) for suffix in ("", "_ci_low", "_ci_high")]
        return "–" if any(pd.isna(v) for v in values) else f"{values[0]:+.1f} [{values[1]:+.1f}, {values[2]:+.1f}]"

    # the calibration line per world: robustness.csv's calib_<target> columns holding PASS / FAIL / not measured
    calibration = [c for c in robustness.columns if str(c).startswith("calib_")
                   and robustness[c].dropna().astype(str).isin(["PASS", "FAIL", "not measured", ""]).all()
                   and robustness[c].notna().any()]
    rows = []
    for (_, row), (_, verdict) in zip(robustness.iterrows(), worlds.iterrows()):
        main_world = str(row.get("main", "")).lower() == "true"
        record = {"world": f"{row.get('world')}" + (" (main)" if main_world else ""),
                  "world seed": row.get("world_seed", "–"), "direct-style probability": row.get("p_direct", "–"),
                  "seeds": row.get("n_seeds", "–")}
        for split in ("id", "long"):
            record[f"DCOD − {report.baseline} {split}"] = ci(row, f"delta_{split}_vs_{report.baseline}")
        record["best other (validation)"] = row.get("best_other", "–")
        for split in ("id", "long"):
            record[f"DCOD − best other {split}"] = ci(row, f"delta_{split}_vs_best_other")
        for split in ("id", "long"):
            record[f"oracle gap closed {split}"] = number_or_dash(row.get(f"oracle_gap_closed_{split}"), ".0%")
        record["claim (a)"] = verdict["verdict"]
        rows.append(record)
    lines += ["DCOD − baseline in accuracy points [95% hierarchical-bootstrap CI]; each world has its own world, "
              "traces and base student; claim (a) is judged on every world by the same rule as the main world "
              "(against every offline baseline, not only the two shown). Full numbers in `robustness.md` beside "
              "the tables.", "", markdown_table(pd.DataFrame(rows)), ""]
    if calibration:
        line = pd.DataFrame([{"world": row.get("world"), **{c[len("calib_"):].replace("_", " "): row[c]
                                                             for c in calibration}}
                             for _, row in robustness.iterrows()]).fillna("")
        lines += ["Calibration line per world (PASS / FAIL / not measured per target of `calibration.md`):", "",
                  markdown_table(line), ""]
    else:
        lines += ["robustness.csv has no calibration column (`calib_<target>`): the per-world calibration lines "
                  "are not shown.", ""]
    figure = figures_dir / "robustness.png"
    if figure.is_file():
        relative = Path(os.path.relpath(figure, start=out.parent)).as_posix()
        lines += [f"![{caption('robustness')}]({relative})", ""]
    else:
        lines += ["The robustness figure (`figures/robustness.png`) was not produced in this run.", ""]
    return lines, robust


# ----------------------------------------------------------------------------- float paths
def float_path_section(results_dir: Path, claims: list[Claim] | None, report: ReportConfig,
                       name: str | None) -> list[str]:
    """The spread between Table 1 and its rerun under other float kernels (results/float_path.csv), and
    whether every claim's verdict is the same on both."""
    lines = ["## Float-path spread", ""]
    differences_path = results_dir / "float_path.csv"
    other_path = float_path_table(results_dir, name)
    if not differences_path.is_file() and other_path is None:
        return lines + ["Not produced in this run (no `results/float_path.csv`, no second float-path Table 1).", ""]
    label = other_path.parent.name if other_path is not None else (name or "second")
    lines += [f"The same Table 1 rerun on the same machine under the `{label}` float kernels (run A) against the "
              "main run (run B): the spread a reader should expect from floating-point paths alone.", ""]
    if differences_path.is_file():
        frame = pd.read_csv(differences_path)
        if "difference" not in frame or "column" not in frame:
            raise ValueError(f"{differences_path}: expected the columns method, column, run_a, run_b, difference "
                             f"(written by `dcod report compare`), got {list(frame.columns)}")
        accuracy = frame[frame["column"].astype(str).str.endswith("_mean")
                         & ~frame["column"].isin(["agreement_mean", "malformed_rate_mean"])].dropna(subset=["difference"])
        if accuracy.empty:
            lines += ["No accuracy cell is comparable between the two runs.", ""]
        else:
            worst = accuracy.loc[accuracy["difference"].abs().idxmax()]
            lines += [f"Accuracy differences (run B − run A): largest {worst['difference']:+.1f} points ({worst['method']}, "
                      f"{str(worst['column'])[: -len('_mean')]}), mean absolute {accuracy['difference'].abs().mean():.2f} "
                      f"points over {len(accuracy)} method × split cells.", ""]
            pivot = accuracy.pivot(index="method", columns="column", values="difference")
            pivot.columns = [str(c)[: -len("_mean")] for c in pivot.columns]
            lines += [markdown_table(pivot.map(lambda v: f"{v:+.1f}").reset_index()), ""]
    else:
        lines += ["`results/float_path.csv` (the per-method differences) was not produced in this run.", ""]
    if other_path is not None:
        ours, verdicts = claims or [], float_path_verdicts(other_path, report)
        rows = [{"claim": c.title, "main run": c.verdict, f"{label} run": verdicts.get(c.title, "absent"),
                 "agrees": "yes" if verdicts.get(c.title) == c.verdict else "**no**"} for c in ours]
        agree = sum(r["agrees"] == "yes" for r in rows)
        lines += [f"Claim verdicts: {agree} of {len(rows)} agree between the two float paths.", "",
                  markdown_table(pd.DataFrame(rows)), ""]
        if flipped_verdicts(ours, verdicts):
            lines += ["A verdict that differs between the two paths is one the float kernels alone change: that "
                      "claim is not settled by this evidence (section Claims says so beside its verdict).", ""]
    else:
        lines += ["The second float path's Table 1 is absent: its claim verdicts are not compared.", ""]
    return lines


def float_path_table(results_dir: Path, name: str | None) -> Path | None:
    """The float-path rerun's Table 1 (``results/float_paths/<name>/table1.csv``; any name when None), or None."""
    candidates = ([results_dir / "float_paths" / name / "table1.csv"] if name else
                  sorted((results_dir / "float_paths").glob("*/table1.csv")))
    return next((p for p in candidates if p.is_file()), None)


def float_path_verdicts(path: Path, report: ReportConfig) -> dict[str, str]:
    """Claim title → verdict, judged on the float-path rerun's Table 1 by the same rules."""
    from dcod.reporting.tables import read_table

    return {c.title: c.verdict for c in judge_claims(read_table(path), report) or []}


def read_optional(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def read_result(results_dir: Path, name: str) -> pd.DataFrame:
    from dcod.reporting.tables import read_table

    return read_table(results_dir / name)


def write_report(args) -> None:
    from dcod.config import load_profile

    profile = load_profile(need(args.profile, "--profile", "paper"), getattr(args, "set", None) or ())
    smoke = profile.results == "smoke"
    results_dir, out = Path(args.results_dir), Path(args.out)
    table1, table2 = read_result(results_dir, "table1.csv"), read_result(results_dir, "table2.csv")
    # only the toy world has a calibration report (forced-style teachers exist only there)
    calibration = read_optional(results_dir / "calibration.csv") if profile.data.source == "toy" else None
    lines = [f"# Distribution Corrected Offline Data Distillation: replication report (`{profile.name}` profile)",
             "", f"Generated by `python -m dcod report paper` from `{results_dir}/*.csv` and `{args.figures_dir}/`; "
             "do not edit: every number below is read from those files.", ""]
    # a profile with a learning-rate grid reports it (the rule makes results/tuning.csv an input)
    tuning = read_result(results_dir, "tuning.csv") if len(profile.tuning.lrs) > 1 else None
    lines += smoke_warning(profile) if smoke else []
    lines += regime_warning(calibration)
    table3 = read_table3(results_dir)
    lines += setup_section(profile, table1) + table1_section(table1) + table2_section(table2)
    lines += cap_share_section(profile, table1, getattr(args, "work", None)) if smoke else []
    lines += table3_section(table3, profile.report.subject)
    lines += tuning_section(tuning, table1, table2, profile.report.subject)
    claims = claims_of(results_dir, table1, profile.report)  # results/claims.csv, judged once by its rule
    robustness, robust = robustness_section(read_optional(results_dir / "robustness.csv"), table1, profile.report,
                                            Path(args.figures_dir), out, claims)
    calibration_lines = (calibration_section(calibration) if calibration is not None or profile.data.source != "toy"
                         else ["## Calibration of the world", "", "Not produced in this run "
                               "(`results/calibration.csv` absent).", ""])
    lines += calibration_lines + robustness
    check = profile.float_path_check
    check_name = check.name if check else None
    # the float-path rerun has Table 1 only: its verdicts are compared with this run's Table 1 reading
    alone = table1_reading(claims, table1, profile.report)
    lines += float_path_section(results_dir, [alone, *claims[1:]] if alone else claims, profile.report, check_name)
    lines += figures_section(Path(args.figures_dir), out, profile.data.source)
    lines += traces_section(profile, getattr(args, "work", None))  # dcod/reporting/traces.py
    other = float_path_table(results_dir, check_name)
    if smoke:
        lines += smoke_claims_section(not_judged(claims, profile.name))  # whatever claims.csv says
    else:
        lines += claims_section(claims, profile.report, robust, (other.parent.name, float_path_verdicts(
            other, profile.report)) if other is not None else None, has_paired(table1), alone)
    write_text(out, "\n".join(lines))
    print(f"paper: -> {out}")
