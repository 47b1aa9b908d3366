"""The paper's claims (a)–(d), judged exactly by the pre-registered rules of docs/claims.md.

Everything is read from a written Table 1 (a fresh one, a published one, the float-path rerun's) and, for
the across-world part of claim (a), from results/robustness.csv; no number is typed here, only the
rules' thresholds, which docs/claims.md fixes. The intervals are Table 1's hierarchical-bootstrap ones:
``dcod_minus_row_<metric>`` on each compared row (the subject − that row); a comparison without an
interval can never make a claim supported (at best inconclusive, and the sentence says which interval is
missing). Every table read here has the ``role``, ``offline_only`` and ``dcod_minus_row_*`` columns (the
published snapshot in paper/published/ included): a table without them is refused (KeyError), not guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dcod.config import ReportConfig
from dcod.reporting import VALIDATION_SPLIT, number_or_dash
from dcod.splits import claim_splits

# Which splits each claim is judged on: every split whose declaration states that role (claim_role in a
# benchmark's YAML, dcod.splits.TOY_CLAIM_ROLES for the toy's), by precedence.
IN_DISTRIBUTION_SPLITS = claim_splits("in_distribution")
HARD_SPLITS = claim_splits("hard")
RETENTION_SPLITS = claim_splits("retention")  # the toy's second skill; IFEval (prompt-level strict)
PRESERVED_SHARE = 0.9  # (c): DCOD keeps at least this share of the base student's retention accuracy
FLOPS_CLOSE, FLOPS_FAR = 1.05, 1.25  # (d): DCOD/SFT training FLOPs: <= close supported, > far not supported
FLOOR_MARGIN = 0.05  # (b): a model's agreement within this of the floor 1/k is flagged
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_EVALUATED = "supported", "not supported", "inconclusive", "not evaluated"
# a smoke profile (ProfileConfig.results) tests the code path: its claims are listed, never judged
NOT_JUDGED = "not judged (smoke profile)"


@dataclass
class Claim:
    title: str
    verdict: str
    sentence: str
    key: str = ""  # (a)...(d)
    numbers: list[str] = field(default_factory=list)  # the numbers behind the verdict, one line each


def _value(row, column: str) -> float:
    value = row.get(column) if row is not None else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def interval_text(ci, digits: int = 1) -> str:
    if ci is None:
        return "no interval"
    point, low, high = ci
    return " ".join([number_or_dash(point, f"+.{digits}f"),
                     f"[{number_or_dash(low, f'+.{digits}f')}, {number_or_dash(high, f'+.{digits}f')}]"])


def side(ci) -> str | None:
    """'above' / 'below' when the 95% CI lies wholly above / below 0; None when it contains 0."""
    _, low, high = ci
    return "above" if low > 0 else "below" if high < 0 else None


def first_split(table: pd.DataFrame, candidates) -> str | None:
    return next((s for s in candidates if f"{s}_mean" in table.columns), None)


def truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true") or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) and value == 1)


# ----------------------------------------------------------------------------- who is compared
def is_reference_row(row) -> bool:
    return row["role"] == "reference"


def offline_baselines(table1: pd.DataFrame, subject: str) -> tuple[list[str], str]:
    """The offline baselines of Table 1 (declared needs: offline traces only), without the subject and the
    oracle reference, and how they were identified."""
    rows = [r for _, r in table1.iterrows() if r["method"] != subject and not is_reference_row(r)]
    return [r["method"] for r in rows if truthy(r["offline_only"])], "declared needs (run.json)"


def online_references(table1: pd.DataFrame, subject: str) -> list[str]:
    """Methods that sample or keep a teacher in memory (on-policy KD, self-distillation): priced only."""
    offline, _ = offline_baselines(table1, subject)
    return [r["method"] for _, r in table1.iterrows()
            if r["method"] not in (subject, *offline) and not is_reference_row(r)]


def versus(table1: pd.DataFrame, name: str, key: str):
    """(point, low, high) of subject − ``name`` on ``key`` (a split or a stability metric), or None."""
    rows = table1.set_index("method")
    if name not in rows.index:
        return None
    row = rows.loc[name]
    column = f"dcod_minus_row_{key}"
    paired = paired_interval(row, f"{column}_paired")
    if paired is not ABSENT:  # a table with the seed-paired columns is judged on them (a range: None)
        return paired
    ci = tuple(_value(row, c) for c in (column, f"{column}_ci_low", f"{column}_ci_high"))
    return None if any(math.isnan(v) for v in ci) else ci


ABSENT = object()  # a table without seed-paired columns (written before them, like the published snapshot)


def paired_interval(row, prefix: str):
    """A seed-paired interval of Table 1 (docs/claims.md, "Intervals"): (point, low, high) for a 95% t
    interval over seeds; None for a range from fewer than 3 seeds (it decides no claim) or a blank cell;
    ``ABSENT`` when the table has no such column."""
    kind = row.get(f"{prefix}_kind") if row is not None else None
    if kind is None:
        return ABSENT
    if not isinstance(kind, str) or kind == "range":
        return None
    ci = tuple(_value(row, prefix + suffix) for suffix in ("", "_low", "_high"))
    return None if any(math.isnan(v) for v in ci) else ci


def range_text(table1: pd.DataFrame, name: str, key: str, digits: int = 1) -> str | None:
    """``+x (range a to b over n seeds: not a CI)`` where Table 1's seed-paired subject − ``name`` on ``key`` is
    a range from fewer than 3 seeds; None otherwise."""
    rows = table1.set_index("method")
    prefix = f"dcod_minus_row_{key}_paired"
    if name not in rows.index or rows.loc[name].get(f"{prefix}_kind") != "range":
        return None
    row, spec = rows.loc[name], f"+.{digits}f"
    point, low, high = (_value(row, prefix + suffix) for suffix in ("", "_low", "_high"))
    return (f"{point:{spec}} (range {low:{spec}} to {high:{spec}} over {row.get('n_seeds')} seeds: not a CI, "
            "decides nothing)")


# ----------------------------------------------------------------------------- (a) accuracy
# docs/claims.md, "Claim (a) over Tables 1 and 3, made operational": support by intersection-union at 95%,
# refutation at the Bonferroni level 1 - 0.05/m over the m = 2 x baselines comparisons
LEVEL = 0.95
MIN_SEEDS = 3  # a comparison over fewer seeds is a range, not an interval: it decides nothing
TITLE_A = "(a) DCOD reaches higher accuracy than every offline baseline"
TITLE_A_TABLES = "(a) DCOD reaches higher accuracy than every offline baseline of Tables 1 and 3"


def accuracy_verdict(intervals: dict[str, dict[str, tuple | None]], id_split: str, long_split: str | None,
                     wide: dict[str, dict[str, tuple | None]] | None = None) -> str:
    """docs/claims.md (a) on one world: ``intervals[B][split]`` = DCOD − B with its 95% CI (None: missing).
    ``wide``: the same comparisons at the Bonferroni level, which alone can refute the claim; without it
    (the robustness worlds' older reading) the 95% intervals refute too."""
    if not intervals:
        return NOT_EVALUATED
    splits = [id_split, *([long_split] if long_split else [])]
    refuting = wide if wide is not None else intervals
    present = [ci for cis in refuting.values() for s in splits if (ci := cis.get(s)) is not None]
    if any(side(ci) == "below" for ci in present):
        return NOT_SUPPORTED
    complete = all(cis.get(s) is not None for cis in intervals.values() for s in splits)
    if (complete and all(side(cis[id_split]) == "above" for cis in intervals.values())
            and not (long_split and any(side(cis[long_split]) == "below" for cis in intervals.values()))):
        return SUPPORTED
    return INCONCLUSIVE


def widened(ci, n_seeds: int, level: float):
    """The interval at ``level`` from a 95% one: each half-width scaled by q(level) / q(95%), q Student's t
    quantile with n_seeds − 1 degrees of freedom (exact for the seed-paired t interval)."""
    from dcod.reporting.stats import t_quantile

    point, low, high = ci
    scale = t_quantile((1 + level) / 2, n_seeds - 1) / t_quantile((1 + LEVEL) / 2, n_seeds - 1)
    return point, point - (point - low) * scale, point + (high - point) * scale


@dataclass
class Baseline:
    """One offline baseline of claim (a): its name, the table it comes from and that table's row."""

    name: str
    table: str  # "1" or "3"
    row: pd.Series


def table_baselines(table1: pd.DataFrame, table3: pd.DataFrame | None, subject: str) -> tuple[list[Baseline], str]:
    """The offline baselines of Table 1 and, when given, Table 3 (its prior rows; a method in both counts
    once, from Table 1), in table order, and how they were identified."""
    names, how = offline_baselines(table1, subject)
    rows = table1.set_index("method")
    found = [Baseline(name, "1", rows.loc[name]) for name in names]
    if table3 is not None:
        prior = table3[table3["table"].astype(str) == "3"] if "table" in table3.columns else table3
        more, _ = offline_baselines(prior, subject)
        rows3 = prior.set_index("method")
        found += [Baseline(name, "3", rows3.loc[name]) for name in more if name not in names]
    return found, how


def strongest(baselines: list[Baseline], split: str = VALIDATION_SPLIT) -> Baseline | None:
    """The baseline with the highest mean on ``split`` (the tuning split; ties: the earlier one, Table 1
    first); None when no baseline has it."""
    scored = [(b, _value(b.row, f"{split}_mean")) for b in baselines]
    scored = [(b, v) for b, v in scored if not math.isnan(v)]
    return max(scored, key=lambda pair: pair[1])[0] if scored else None  # max keeps the first of ties


def comparison(baseline: Baseline, table: pd.DataFrame, subject_row, report: ReportConfig, split: str):
    """DCOD − baseline on ``split`` with its 95% CI from the baseline's own table, and the number of seeds
    behind it; (None, n) when the table has no interval or the seeds are too few for one."""
    ci = versus(table, baseline.name, split)
    n = min(_value(baseline.row, "n_seeds"), _value(subject_row, "n_seeds") if subject_row is not None else math.inf)
    if ci is None or math.isnan(n) or n < MIN_SEEDS:
        return None, n
    return ci, int(n)


def accuracy_claim(table1: pd.DataFrame, report: ReportConfig, table3: pd.DataFrame | None = None) -> Claim:
    """Claim (a) against every offline baseline of Table 1 and, when it has prior rows, Table 3."""
    with_prior = table3 is not None and "table" in table3.columns and (table3["table"].astype(str) == "3").any()
    title = TITLE_A_TABLES if with_prior else TITLE_A
    id_split, long_split = first_split(table1, IN_DISTRIBUTION_SPLITS), first_split(table1, HARD_SPLITS)
    baselines, how = table_baselines(table1, table3 if with_prior else None, report.subject)
    if id_split is None or not baselines:
        return Claim(title, NOT_EVALUATED, "Table 1 has no in-distribution split or no offline baseline.", "a")
    splits = [id_split, *([long_split] if long_split else [])]
    m = len(baselines) * len(splits)
    wide_level = 1 - (1 - LEVEL) / m
    subject_rows = table1.set_index("method")
    subject_row = subject_rows.loc[report.subject] if report.subject in subject_rows.index else None
    intervals, wide, seeds = {}, {}, {}
    for b in baselines:
        table = table1 if b.table == "1" else table3
        for s in splits:
            ci, seeds[b.name, s] = comparison(b, table, subject_row, report, s)
            intervals.setdefault(b.name, {})[s] = ci
            wide.setdefault(b.name, {})[s] = widened(ci, seeds[b.name, s], wide_level) if ci else None
    verdict = accuracy_verdict(intervals, id_split, long_split, wide)
    level_text = f"{100 * wide_level:.4g}%"

    def line(b: Baseline, s: str) -> str:
        ci = intervals[b.name][s]
        if ci is None:
            ranged = range_text(table1 if b.table == "1" else table3, b.name, s)
            if ranged:
                return f"DCOD − {b.name} (Table {b.table}) on {s}: {ranged}"
            n = seeds[b.name, s]
            point = _value(b.row, f"dcod_minus_row_{s}")
            why = (f"{number_or_dash(point, '+.1f')} over {n:g} seed(s): no interval, decides nothing"
                   if not math.isnan(n) and n < MIN_SEEDS else "no interval in this table")
            return f"DCOD − {b.name} (Table {b.table}) on {s}: {why}"
        return (f"DCOD − {b.name} (Table {b.table}) on {s}: {interval_text(ci)} accuracy points "
                f"(95% CI; {level_text}: {interval_text(wide[b.name][s])})")

    numbers = [line(b, s) for b in baselines for s in splits]
    best = strongest(baselines)
    by_table = "; ".join(f"Table {t}: {', '.join(b.name for b in baselines if b.table == t)}"
                         for t in ("1", "3") if any(b.table == t for b in baselines))
    sentence = f"Offline baselines ({how}): {by_table}. "
    if best is None:
        sentence += ("The strongest prior offline method is not named: the tables have no `validation` split "
                     "(a test split never chooses it). ")
    else:
        val = _value(best.row, f"{VALIDATION_SPLIT}_mean")
        numbers.insert(0, f"strongest prior offline method: {best.name} (Table {best.table}; validation {val:.1f}%)")
        sentence += (f"The strongest prior offline method (highest `validation` mean) is `{best.name}` (Table "
                     f"{best.table}, {val:.1f}%): DCOD − {best.name} " + ", ".join(
                         f"on `{s}` {interval_text(intervals[best.name][s])}" for s in splits) + ". ")
    sentence += (f"Rule (m = {m} comparisons): supported when every 95% CI of DCOD − baseline on `{id_split}` "
                 f"lies above 0 and none on `{long_split}` lies wholly below 0 (every comparison must hold, so no "
                 f"correction); not supported when some interval at the Bonferroni level 1 − 0.05/m = {level_text} "
                 "lies wholly below 0; intervals over fewer than 3 seeds decide nothing.")
    missing = [f"{b.name} on {s}" for b in baselines for s in splits if intervals[b.name][s] is None]
    if missing:
        sentence += f" No interval for {', '.join(missing)}: that comparison cannot support the claim."
    if verdict != SUPPORTED:
        sentence += " The results give no evidence for claim (a)"
        below = [f"{b.name} on `{s}`" for b in baselines for s in splits
                 if wide[b.name][s] is not None and side(wide[b.name][s]) == "below"]
        sentence += (f": DCOD trails {', '.join(below)} at the {level_text} level." if below else ".")
    return Claim(title, verdict, sentence, "a", numbers)


# ----------------------------------------------------------------------------- (b) stability
def stability_claim(table1: pd.DataFrame, report: ReportConfig) -> Claim:
    title = "(b) DCOD yields more stable reasoning traces than every offline baseline and the base student"
    rows = table1.set_index("method")
    baselines, _ = offline_baselines(table1, report.subject)
    compared = [*baselines, *(["base_student"] if "base_student" in rows.index else [])]
    if report.subject not in rows.index or not compared:
        return Claim(title, NOT_EVALUATED, "Table 1 lacks the subject or every comparison row.", "b")
    hazard_kinds = table1.get("dcod_minus_row_step_hazard_paired_kind")
    if hazard_kinds is not None and hazard_kinds.replace("", math.nan).notna().any():  # graded steps measured
        return hazard_claim(title, table1, report, compared)
    if hazard_kinds is not None:  # a table of the amendment without graded steps: not the old agreement rule
        return Claim(title, NOT_EVALUATED, "docs/claims.md judges (b) by the step hazard of sampled traces, which "
                     "needs graded steps (the toy world, with stability samples); this Table 1 has none. The paper "
                     "profile's equivalent (majority vote − mean sample accuracy with its interval) is not built yet.",
                     "b")
    agreement = {b: versus(table1, b, "agreement") for b in compared}
    malformed = {b: versus(table1, b, "malformed_rate") for b in compared}
    if all(ci is None for ci in (*agreement.values(), *malformed.values())):
        verdict = INCONCLUSIVE
    elif (any(ci is not None and side(ci) == "below" for ci in agreement.values())
          or any(ci is not None and side(ci) == "above" for ci in malformed.values())):
        verdict = NOT_SUPPORTED
    elif (all(ci is not None and side(ci) == "above" for ci in agreement.values())
          and all(ci is not None for ci in malformed.values())):
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    numbers = [f"DCOD − {b}: answer agreement "
               f"{range_text(table1, b, 'agreement', 3) or interval_text(agreement[b], 3)}, malformed-trace rate "
               f"{range_text(table1, b, 'malformed_rate', 3) or interval_text(malformed[b], 3)}" for b in compared]
    k = _value(rows.loc[report.subject], "stability_samples")
    if math.isnan(k) and "stability_samples" in rows.columns:
        k = float(pd.to_numeric(rows["stability_samples"], errors="coerce").max())
    if math.isnan(k):
        floor_text = "The number k of sampled traces per problem is not recorded in this table, so the floor 1/k is not stated."
    else:
        floor = 1.0 / k
        near = [f"{name} ({_value(r, 'agreement_mean'):.3f})" for name, r in rows.iterrows()
                if not math.isnan(_value(r, "agreement_mean")) and _value(r, "agreement_mean") - floor <= FLOOR_MARGIN]
        floor_text = (f"Agreement floor 1/k = {floor:.2f} (k = {k:g} traces, every answer different); within "
                      f"{FLOOR_MARGIN:.2f} of it: {', '.join(near) if near else 'no model'}.")
    missing = [b for b in compared if agreement[b] is None or malformed[b] is None]
    sentence = ("Answer agreement = share of the k sampled final answers equal to the most common one; malformed "
                "rate = share of traces without a parseable answer or with a step in neither style. Rule: "
                "supported when every 95% CI of DCOD − model on agreement lies above 0 and none on the malformed "
                "rate lies wholly above 0; not supported when an agreement CI lies wholly below 0 or a malformed "
                f"CI wholly above 0. {floor_text}")
    if missing:
        sentence += f" No interval for {', '.join(missing)}."
    return Claim(title, verdict, sentence, "b", numbers)


def hazard_claim(title: str, table1: pd.DataFrame, report: ReportConfig, compared: list[str]) -> Claim:
    """(b) by the step hazard of sampled traces (docs/claims.md, "Claim (b), stable reasoning traces"): supported
    when every seed-paired 95% interval of DCOD − B on the hazard lies wholly below 0 (B: every offline baseline
    and the base student), not supported when one lies wholly above 0; the other measures decide nothing."""
    rows = table1.set_index("method")
    hazard = {b: paired_interval(rows.loc[b], "dcod_minus_row_step_hazard_paired") for b in compared}
    hazard = {b: None if ci is ABSENT else ci for b, ci in hazard.items()}
    if any(ci is not None and side(ci) == "above" for ci in hazard.values()):
        verdict = NOT_SUPPORTED
    elif all(ci is not None and side(ci) == "below" for ci in hazard.values()):
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE

    def beside(name: str) -> str:  # reported, deciding nothing
        row = rows.loc[name]
        return (f"vote − mean {_value(row, 'vote_gain_mean'):+.3f}, agreement {_value(row, 'agreement_mean'):.3f}, "
                f"malformed {_value(row, 'malformed_rate_mean'):.3f}")

    numbers = [f"DCOD − {b}: step hazard " + (range_text(table1, b, "step_hazard", 3) or interval_text(hazard[b], 3))
               for b in compared]
    numbers += [f"{name}: step hazard {_value(rows.loc[name], 'step_hazard_mean'):.3f}; {beside(name)} (deciding nothing)"
                for name in [report.subject, *compared]]
    missing = [b for b in compared if hazard[b] is None]
    sentence = ("Step hazard = for each step position, the share of sampled traces whose step is wrong among those "
                "whose earlier steps are right, averaged over positions with at least 20 traces at risk. Rule: "
                "supported when every 95% interval of DCOD − model on the step hazard (paired by seed) lies wholly "
                "below 0; not supported when one lies wholly above 0; otherwise inconclusive. Majority vote − mean "
                "sample accuracy, answer agreement (which rewards mode-seeking) and the malformed rate are shown and "
                "decide nothing.")
    if missing:
        sentence += f" No 95% interval for {', '.join(missing)} (a range from fewer than 3 seeds is none)."
    return Claim(title, verdict, sentence, "b", numbers)


# ----------------------------------------------------------------------------- (c) retention
def retention_claim(dcod, sft, base) -> Claim:
    """(c) on rows of Table 1: the DCOD − SFT interval is read from the SFT row's ``dcod_minus_row_<split>``
    or, for older tables, from the DCOD row's ``delta_<split>_vs_sft``. A table with the retention ratio's
    interval (``base_ratio_<split>``) is judged on it (docs/claims.md, "Claim (c), retention")."""
    index = dcod.index if hasattr(dcod, "index") else dcod.keys()
    split = next((s for s in RETENTION_SPLITS if f"{s}_mean" in index), None)
    title = "(c) DCOD preserves instruction following (" + ("IFEval prompt-level strict accuracy)" if split == "ifeval"
                                                            else "retention of the base student's second skill)")
    if split is None:
        return Claim(title, NOT_EVALUATED, "this profile has no retention split.", "c")
    if f"base_ratio_{split}_kind" in index:
        return retention_ratio_claim(title, split, dcod, sft)
    ci = None
    for row, prefix, suffixes in ((sft, f"dcod_minus_row_{split}", ("", "_ci_low", "_ci_high")),
                                  (dcod, f"delta_{split}", ("_vs_sft", "_ci_low", "_ci_high"))):
        values = tuple(_value(row, prefix + suffix) for suffix in suffixes)
        if not any(math.isnan(v) for v in values):
            ci = values
            break
    base_mean = _value(base, f"{split}_mean") if base is not None else math.nan
    kept = _value(dcod, f"{split}_mean") / base_mean if base_mean and not math.isnan(base_mean) else math.nan
    below = ci is not None and side(ci) == "below"
    if (not math.isnan(kept) and kept < PRESERVED_SHARE) or below:
        verdict = NOT_SUPPORTED
    elif not math.isnan(kept) and ci is not None:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    numbers = [f"{split} accuracy: DCOD {_value(dcod, f'{split}_mean'):.1f}%, SFT {_value(sft, f'{split}_mean'):.1f}%, "
               f"base student {base_mean:.1f}%",
               "DCOD keeps " + ("–" if math.isnan(kept) else f"{100 * kept:.1f}%") + " of the base student's accuracy",
               f"DCOD − SFT on {split}: {interval_text(ci)} points"]
    sentence = (f"Rule: supported when DCOD keeps at least {100 * PRESERVED_SHARE:.0f}% of the base student's {split} "
                "accuracy and the 95% CI of DCOD − SFT does not lie wholly below 0; not supported when it keeps less "
                "or that CI lies wholly below 0.")
    if ci is None or math.isnan(kept):
        sentence += " " + ("No DCOD − SFT interval. " if ci is None else "") + (
            "No base student row." if math.isnan(kept) else "")
    return Claim(title, verdict, sentence.strip(), "c", numbers)


def retention_ratio_claim(title: str, split: str, dcod, sft) -> Claim:
    """(c) judged on the interval, not the point: per seed DCOD's retention accuracy over its base student's,
    with the t interval over seeds (``base_ratio_<split>*`` of the DCOD row), and DCOD − SFT paired by seed
    (the SFT row's ``dcod_minus_row_<split>_paired*``). An interval from fewer than 3 seeds is a range and
    decides nothing: inconclusive."""
    ratio_kind = dcod.get(f"base_ratio_{split}_kind")
    ratio = tuple(_value(dcod, f"base_ratio_{split}{suffix}") for suffix in ("", "_low", "_high"))
    diff = paired_interval(sft, f"dcod_minus_row_{split}_paired")
    diff = None if diff is ABSENT else diff
    ratio_ok = ratio_kind == "t" and not any(math.isnan(v) for v in ratio)
    below = diff is not None and side(diff) == "below"
    if (ratio_ok and ratio[2] < PRESERVED_SHARE) or below:
        verdict = NOT_SUPPORTED
    elif ratio_ok and diff is not None and ratio[1] >= PRESERVED_SHARE:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    ratio_text = (f"{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}] (95% CI, t over seeds)" if ratio_ok else
                  f"{ratio[0]:.3f} (range {ratio[1]:.3f} to {ratio[2]:.3f}: fewer than 3 seeds, not a CI)"
                  if ratio_kind == "range" else "undefined: a base student answers none of the split on some seed"
                  if ratio_kind == "undefined" else "not measured")
    numbers = [f"{split} accuracy: DCOD {_value(dcod, f'{split}_mean'):.1f}%, SFT {_value(sft, f'{split}_mean'):.1f}%",
               f"DCOD's {split} accuracy / its base student's, per seed: {ratio_text}",
               f"DCOD − SFT on {split} (paired by seed): " + (f"{interval_text(diff)} points" if diff is not None
                                                               else "no 95% interval (fewer than 3 seeds)")]
    sentence = (f"Rule: supported when the 95% interval of DCOD's {split} accuracy over its base student's (per "
                f"seed, t over seeds) has its lower end at or above {PRESERVED_SHARE:.2f} and the interval of "
                f"DCOD − SFT does not lie wholly below 0; not supported when the ratio's upper end is below "
                f"{PRESERVED_SHARE:.2f} or that difference lies wholly below 0; otherwise inconclusive. An interval "
                "from fewer than 3 seeds is a range and decides nothing.")
    return Claim(title, verdict, sentence, "c", numbers)


# ----------------------------------------------------------------------------- (d) cost
def cost_claim(table1: pd.DataFrame, report: ReportConfig) -> Claim:
    title = "(d) DCOD needs no online rollouts, at a training cost close to SFT"
    rows = table1.set_index("method")
    if report.subject not in rows.index or report.baseline not in rows.index:
        return Claim(title, NOT_EVALUATED, "Table 1 lacks the subject or the baseline row.", "d")
    dcod, sft = rows.loc[report.subject], rows.loc[report.baseline]
    sampled, teacher = _value(dcod, "tokens_sampled"), _value(dcod, "teacher_forward_tokens")
    ratio = _value(dcod, "training_flops") / _value(sft, "training_flops")
    online = (not math.isnan(sampled) and sampled > 0) or (not math.isnan(teacher) and teacher > 0)
    if online or (not math.isnan(ratio) and ratio > FLOPS_FAR):
        verdict = NOT_SUPPORTED
    elif sampled == 0 and teacher == 0 and not math.isnan(ratio) and ratio <= FLOPS_CLOSE:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE

    def priced(name, row) -> str:
        flops = _value(row, "training_flops")
        relative = flops / _value(sft, "training_flops")
        return (f"{name}: " + ("training FLOPs not recorded" if math.isnan(flops) else f"{flops:.3g} training FLOPs")
                + ("" if math.isnan(relative) else f" ({relative:.2f}× SFT)")
                + f", {_value(row, 'student_tokens_trained'):,.0f} student tokens trained, "
                f"{_value(row, 'tokens_sampled'):,.0f} tokens sampled, "
                f"{_value(row, 'teacher_forward_tokens'):,.0f} teacher forward tokens")

    numbers = [priced(report.subject, dcod), priced(report.baseline, sft)]
    numbers += [priced(name, rows.loc[name]) + " (priced as a reference, not a claim)"
                for name in online_references(table1, report.subject)]
    trace_tokens = _value(dcod, "offline_trace_tokens")
    if not math.isnan(trace_tokens):
        numbers.append(f"one-off teacher traces shared by every offline method: {trace_tokens:,.0f} tokens")
    reference = _value(dcod, "reference_forward_tokens")
    if not math.isnan(reference) and reference > 0:
        numbers.append(f"DCOD also ran a frozen reference over {reference:,.0f} tokens "
                       f"({_value(dcod, 'reference_forward_flops'):.3g} FLOPs, outside the pre-registered estimate)")
    sentence = (f"Training FLOPs = 6·N·tokens trained + 2·N·tokens sampled + 2·N_teacher·teacher forward tokens "
                f"(N the student's parameters; the programmatic toy teacher counts 0). Rule: supported when DCOD "
                f"samples no token and runs no teacher forward during training and its FLOPs are at most "
                f"{FLOPS_CLOSE:.2f}× SFT's; not supported when it samples or runs the teacher, or exceeds "
                f"{FLOPS_FAR:.2f}×. DCOD/SFT FLOPs ratio: " + ("not recorded in this table" if math.isnan(ratio)
                                                               else f"{ratio:.3f}") + ". Wall time decides nothing.")
    return Claim(title, verdict, sentence, "d", numbers)


# ----------------------------------------------------------------------------- the paper's DCOD reading
# docs/claims.md, "The paper's method for claim (a)": the candidates besides the default are the Table 2 rows
# that vary only the granularity to one of these, or only β to ess_floor (read from Table 2's ``varies``)
READING_CANDIDATES = {"granularity": ("token", "step"), "beta": ("ess_floor",)}


def reading_choice(table2: pd.DataFrame, seeds2: pd.DataFrame, subject: str, seed: int,
                   split: str = "validation") -> pd.DataFrame | None:
    """Which DCOD reading is the paper's method, chosen on ``split`` only at the tuning ``seed`` (Table 2's runs
    of that seed train at the learning rate the grid chose for the subject): one row per candidate with its
    accuracy and ``chosen`` (the best; ties: the default). None when Table 2 has no candidate or no grouping."""
    if "varies" not in table2.columns or subject not in set(table2["method"]):
        return None
    candidates = [subject] + [r["method"] for _, r in table2.iterrows()
                              if r.get("role") == "ablation" and r.get("default") == subject
                              and r.get("varies") in READING_CANDIDATES
                              and str(r.get(r["varies"])) in READING_CANDIDATES[r["varies"]]]
    if len(candidates) == 1:
        return None
    column = f"{split}_accuracy"
    scores = seeds2[(seeds2["seed"] == seed) & seeds2["method"].isin(candidates)].set_index("method")
    missing = [name for name in candidates if name not in scores.index or pd.isna(scores.loc[name].get(column))]
    if missing:
        raise ValueError(f"table2_seeds.csv: no {split} accuracy at the tuning seed {seed} for {missing}: the DCOD "
                         "reading is chosen there (docs/claims.md); add the seed to ablation_seeds")
    values = [float(scores.loc[name, column]) for name in candidates]
    best = max(range(len(values)), key=lambda i: (values[i], i == 0))  # ties: the default
    return pd.DataFrame({"candidate": candidates, column: values,
                         "chosen": [i == best for i in range(len(candidates))]})


def with_reading(claim: Claim, choice: pd.DataFrame | None, subject: str) -> Claim:
    """Claim (a) with the validation-only choice of the DCOD reading: its scores among the numbers, and not
    evaluated when the choice is not the subject (Table 1 would then judge another method than the paper's)."""
    if choice is None:
        return claim
    column = next(c for c in choice.columns if c.endswith("_accuracy"))
    chosen = choice.loc[choice["chosen"], "candidate"].iloc[0]
    scores = ", ".join(f"{r['candidate']} {r[column]:.1f}%" for _, r in choice.iterrows())
    numbers = [*claim.numbers, f"DCOD reading chosen on {column[: -len('_accuracy')]} at the tuning seed: {chosen} "
               f"({scores})"]
    if chosen == subject:
        return Claim(claim.title, claim.verdict, claim.sentence, claim.key, numbers)
    sentence = (f"Not judged: docs/claims.md makes the DCOD reading that scores best on validation the paper's method, "
                f"and that is `{chosen}`, not Table 1's `{subject}`. Make experiments/{subject} that reading and "
                f"regenerate Table 1. (Judged on `{subject}` it would read: {claim.verdict}.)")
    return Claim(claim.title, NOT_EVALUATED, sentence, claim.key, numbers)


# ----------------------------------------------------------------------------- all of them
def judge_claims(table1: pd.DataFrame, report: ReportConfig | None = None,
                 reading: pd.DataFrame | None = None, table3: pd.DataFrame | None = None) -> list[Claim] | None:
    """Claims (a)–(d) judged on a Table 1 (fresh, published, or another float path's) and, for claim (a),
    its Table 3 when given; None without the rows of ``report.subject`` and ``report.baseline`` (default:
    the shipped profiles'). ``reading``: the validation-only choice of the DCOD reading (``reading_choice``),
    where Table 2 was read."""
    report = report or ReportConfig()
    names = set(table1["method"])
    if report.subject not in names or report.baseline not in names:
        return None
    rows = table1.set_index("method")
    base = rows.loc["base_student"] if "base_student" in rows.index else None
    return [with_reading(accuracy_claim(table1, report, table3), reading, report.subject),
            stability_claim(table1, report),
            retention_claim(rows.loc[report.subject], rows.loc[report.baseline], base), cost_claim(table1, report)]


# ----------------------------------------------------------------------------- the verdict file
# results/claims.csv: claims (a)-(d) judged once on a run's Table 1 and, for (a), Table 3 (``dcod report
# claims``); the report reads it. One row per claim; ``numbers`` one line per number behind it.
CLAIMS_FILE = "claims.csv"
# the same rules on Table 1 alone (claim (a) without Table 3): what a comparison of two Table 1s reads (a
# published snapshot, the float-path rerun), so that it never waits for Table 3's runs
CLAIMS_TABLE1_FILE = "claims_table1.csv"
CLAIMS_COLUMNS = ["claim", "title", "verdict", "sentence", "numbers"]


def claims_frame(claims: list[Claim] | None) -> pd.DataFrame:
    rows = [{"claim": c.key, "title": c.title, "verdict": c.verdict, "sentence": c.sentence,
             "numbers": "\n".join(c.numbers)} for c in claims or []]
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS)


def read_claims(path: Path) -> list[Claim] | None:
    """The claims of a verdict file; None when it holds none (Table 1 lacked the subject or the baseline)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != CLAIMS_COLUMNS:
        raise ValueError(f"{path}: expected the columns {CLAIMS_COLUMNS} (written by `dcod report claims`), "
                         f"got {list(frame.columns)}")
    claims = [Claim(r["title"], r["verdict"], r["sentence"], r["claim"], r["numbers"].split("\n") if r["numbers"]
                    else []) for _, r in frame.iterrows()]
    return claims or None


def read_table3(results_dir: Path) -> pd.DataFrame | None:
    """A results folder's Table 3, or None where it has none (a snapshot published before Table 3, a
    float-path rerun, which reruns Table 1 only)."""
    from dcod.reporting.tables import read_table

    path = Path(results_dir) / "table3.csv"
    return read_table(path) if path.is_file() else None


def claims_of(results_dir: Path, table1: pd.DataFrame, report: ReportConfig | None = None,
              table1_only: bool = False) -> list[Claim] | None:
    """A run's claims: its verdict file where one was written (a fresh run), else judged by the same rules on
    its Table 1 and Table 3 (a published snapshot or a float-path rerun, which have none). ``table1_only``:
    judged on Table 1 alone (``claims_table1.csv``), what two Table 1s are compared on."""
    path = Path(results_dir) / (CLAIMS_TABLE1_FILE if table1_only else CLAIMS_FILE)
    if path.is_file():
        return read_claims(path)
    return judge_claims(table1, report, table3=None if table1_only else read_table3(results_dir))


def not_judged(claims: list[Claim] | None, profile_name: str) -> list[Claim] | None:
    """The claims of a smoke profile: each listed with the verdict NOT_JUDGED and no numbers (its numbers test
    the code path, docs/reproducibility.md "Smoke profiles"; a verdict on them would read as a result)."""
    sentence = (f"Not judged: the `{profile_name}` profile declares `results: smoke`, a run too small to measure "
                "anything; its numbers test the code path only.")
    return [Claim(c.title, NOT_JUDGED, sentence, c.key) for c in claims] if claims is not None else None


def write_claims_table1(args) -> None:
    """``claims_table1.csv``: the claims judged on Table 1 alone (``CLAIMS_TABLE1_FILE``), without Table 2's
    reading choice either, so that the comparison of two Table 1s never waits for Tables 2 and 3."""
    write_claims(args, table1_only=True)


def write_claims(args, table1_only: bool = False) -> None:
    """results/claims.csv from Table 1, Table 3 and, where written beside it, Table 2 (the DCOD reading's
    choice); ``table1_only``: from Table 1 alone."""
    from dcod.config import load_profile
    from dcod.io import write_csv
    from dcod.reporting import need
    from dcod.reporting.tables import read_table

    profile = load_profile(need(args.profile, "--profile", "claims"), getattr(args, "set", None) or ())
    results = Path(need(args.results_dir, "--results-dir", "claims"))
    table1 = read_table(results / "table1.csv")
    reading = None
    if not table1_only and (results / "table2_seeds.csv").is_file():  # the DCOD reading, chosen on validation
        reading = reading_choice(read_table(results / "table2.csv"), pd.read_csv(results / "table2_seeds.csv"),
                                 profile.report.subject, profile.tuning.seed, profile.tuning.split)
    claims = judge_claims(table1, profile.report, reading, table3=None if table1_only else read_table3(results))
    if profile.results == "smoke":
        claims = not_judged(claims, profile.name)
    write_csv(args.out, claims_frame(claims))
    print(f"claims: {len(claims or [])} judged -> {args.out}")


# ----------------------------------------------------------------------------- across worlds
ROBUSTNESS_SPLITS = ("id", "long")
_VERSUS = re.compile(r"^delta_(?P<split>id|long)_vs_(?P<name>.+)_ci_low$")


def world_intervals(row, baselines: list[str]) -> tuple[dict[str, dict[str, tuple | None]], list[str]]:
    """DCOD − B intervals of one robustness world from robustness.csv's ``delta_<split>_vs_<B>`` columns (+
    ``_ci_low``/``_ci_high``; ``best_other`` stands for the baseline named in the ``best_other`` column),
    and the offline baselines that have no column there."""
    found: dict[str, dict[str, tuple]] = {}
    for column in row.index:
        match = _VERSUS.match(str(column))
        if not match:
            continue
        name, split = match["name"], match["split"]
        if name == "best_other":
            name = str(row.get("best_other", "")) or None
            if not name or name == "nan":
                continue
        prefix = f"delta_{split}_vs_{match['name']}"
        ci = tuple(_value(row, c) for c in (prefix, f"{prefix}_ci_low", f"{prefix}_ci_high"))
        if not any(math.isnan(v) for v in ci):
            found.setdefault(name, {})[split] = ci
    judged = {name: {s: found.get(name, {}).get(s) for s in ROBUSTNESS_SPLITS}
              for name in [*baselines, *[n for n in found if n not in baselines]]}
    missing = [name for name in baselines if name not in found]
    return judged, missing


def robustness_verdicts(robustness: pd.DataFrame, baselines: list[str]) -> pd.DataFrame:
    """Claim (a)'s verdict on every robustness world; a world lacking some offline baseline's columns can
    be not supported (a present CI below 0) or inconclusive, never supported."""
    records = []
    for _, row in robustness.iterrows():
        intervals, missing = world_intervals(row, baselines)
        verdict = accuracy_verdict({k: v for k, v in intervals.items() if any(v.values())}, "id", "long")
        if missing and verdict == SUPPORTED:
            verdict = INCONCLUSIVE
        records.append({"world": row.get("world"), "verdict": verdict, "judged_against": ", ".join(
            name for name, cis in intervals.items() if any(cis.values())), "missing": ", ".join(missing)})
    return pd.DataFrame(records, columns=["world", "verdict", "judged_against", "missing"])


def robust_claim(main: Claim, worlds: pd.DataFrame | None) -> Claim:
    """(a) across worlds: robustly only if the main world is supported and no robustness world is not."""
    title = "(a) across worlds: DCOD's accuracy advantage holds robustly"
    if worlds is None or worlds.empty:
        return Claim(title, NOT_EVALUATED, "No robustness worlds were produced in this run "
                     "(results/robustness.csv absent).", "a*")
    counts = worlds["verdict"].value_counts()
    count_text = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in (SUPPORTED, INCONCLUSIVE, NOT_SUPPORTED))
    robust = main.verdict == SUPPORTED and int(counts.get(NOT_SUPPORTED, 0)) == 0
    verdict = SUPPORTED if robust else NOT_SUPPORTED
    sentence = (f"Main world: {main.verdict}; {len(worlds)} robustness worlds: {count_text}. Rule: robustly only "
                "if the main world is supported and no robustness world is not supported.")
    incomplete = worlds[worlds["missing"].astype(str) != ""]
    if not incomplete.empty:
        sentence += (f" {len(incomplete)} world(s) lack the DCOD − baseline columns of "
                     f"{', '.join(sorted(set(', '.join(incomplete['missing']).split(', '))))} in robustness.csv: "
                     "they can be inconclusive or not supported there, never supported.")
    return Claim(title, verdict, sentence, "a*")
