"""Robustness across worlds (docs/claims.md, "Worlds"): one row per world of ``results/robustness.csv``.

Each world (world seed x direct-style probability of the teacher) has its own world, traces and
calibration line, and the base student of its world seed (shared by the worlds of that seed: it does not
depend on the teacher's style mix; under ``pretrain.per_seed`` seed s > 0 of every run starts from that
world seed's base student of pre-training seed ``pretrain.seed + s``, while the base column and the
calibration line read the world seed's own one); the same offline experiments are trained on it with the profile's
``robustness.seeds`` and evaluated on ``robustness.splits``. Per world this module reports:

- accuracy (%) per split of the base student and of every experiment (mean over seeds);
- DCOD - B on ``id`` and ``long`` for every offline baseline B, with 95% CIs of the hierarchical
  bootstrap (``dcod.reporting.stats``: training seeds resampled per model, then problems, paired);
- the best other offline baseline, chosen on that world's ``validation`` split only, and DCOD - it;
- the share of the SFT -> oracle gap that DCOD closes, (dcod - sft) / (oracle - sft), left blank when the
  gap is under ``ORACLE_GAP_MIN`` points (a ratio of two near-equal numbers means nothing);
- the world's calibration line (``dcod.reporting.calibration.calibration_line``): PASS / FAIL / not
  measured per target. The knife-edge target is judged on every world, from the base students of its world
  seed (``knife_edge_owner``: the main world's for the main world seed, else those pre-trained in the
  smallest root of the seed, where the DAG builds them); the plateau target on the main world only; the
  teacher-term target on every world, from its own training traces scored by the base student of its world
  seed (the owner's ``base_student``, the one its calibration line reads).

The subject (DCOD) and the baseline (SFT) are the profile's ``report`` roles. Offline baselines are the
robustness experiments other than the subject and the student-style oracle reference. The robustness
experiments are the profile's ``robustness.experiments``, or, when it is None, every Table 1 experiment
whose method needs only the offline traces (no teacher in memory, no student rollouts) plus the
student-style reference: the rule the DAG uses (workflow/rules/common.smk).

Inputs per world folder ``R`` (``--worlds name=R/world/world.json,...``):
  R/world/world.json                       world seed (``world.seed``) and p_direct (``profile.teacher``)
  R/traces/train.json (when present)       p_direct again (``profile.teacher.p_direct``): must agree
  R/traces/train.parquet                   the teacher's stored log-probs (the teacher-term target)
  O/base_student                           the world seed's base student, which scores those traces
  R/eval/<model>/[seed<s>/]samples.jsonl   base_student, teacher_direct, teacher_decomposed, experiments
  O/calibration/pretrain_seed<S>/eval/base_student/samples.jsonl
                                           the knife-edge base students of the world seed, in its owner
                                           folder O (``knife_edge_owner``)
The main world is the one whose world seed and p_direct are the profile's own (the DAG reuses the main
run for it).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dcod.io import write_csv, write_text
from dcod.layout import seed_owner
from dcod.reporting import (eval_dirs, is_reference, markdown_table, need, number_or_dash, parse_names, read_samples,
                            require)
from dcod.reporting.calibration import (FAIL, NOT_MEASURED, PASS, TARGET_NAMES, TEACHER_TERM, calibration_line,
                                        knife_edge_knobs, oracle_experiment, teacher_term_from_files)
from dcod.reporting.stats import excludes_zero, hierarchical_bootstrap_diff
# Table 1's replicate count, seeds and gap rule: a world's numbers are computed exactly as Table 1's
from dcod.reporting.tables import BOOTSTRAP_REPLICATES, MIN_ORACLE_GAP as ORACLE_GAP_MIN, bootstrap_seed

COMPARED_SPLITS = ("id", "long")
SELECTION_SPLIT = "validation"  # the best other baseline is chosen here, never on a compared split
CALIBRATION_PREFIX = "calib_"
# every world's calibration targets: the calibration report's, the teacher term included
WORLD_TARGETS = (*TARGET_NAMES, TEACHER_TERM)
CALIBRATION_NUMBERS = ("sft_gain_id", "sft_gain_long", "oracle_gain_id", "sft_step_error_direct",
                       "sft_step_error_decomposed", "pretrain_seed_max_deviation", "plateau_shift_id",
                       "teacher_term_spread_ratio", "teacher_term_corr")


@dataclass
class World:
    name: str
    work: Path
    world_seed: int
    p_direct: float
    main: bool = False
    knife_edge: dict | None = None  # calibration_line's knife-edge keywords (None: not judged)
    base_student: Path | None = None  # the world seed's base student (None: <work>/base_student)


def parse_worlds(text: str | None) -> list[tuple[str, Path]]:
    """``name=<work>/world/world.json,...`` -> [(name, work folder)]; a folder path is accepted too."""
    worlds = []
    for item in parse_names(text):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--worlds: {item!r} is not of the form name=<work>/world/world.json")
        path = Path(path.strip())
        work = path.parent.parent if path.name == "world.json" else path
        worlds.append((name.strip(), work))
    names = [name for name, _ in worlds]
    if len(set(names)) != len(names):
        raise ValueError(f"--worlds: a world name appears twice in {names}")
    return worlds


def _read_json(path: Path) -> dict:
    with open(require(path)) as handle:
        return json.load(handle)


def _from_name(name: str) -> tuple[int | None, float | None]:
    """``w<seed>_p<p_direct>`` (the DAG's world names): a fallback for summaries that lack the numbers."""
    match = re.fullmatch(r"w(\d+)_p([0-9.]+)", name)
    return (int(match.group(1)), float(match.group(2))) if match else (None, None)


def world_facts(name: str, work: Path) -> tuple[int, float]:
    """(world seed, p_direct) of a world folder, from its world.json (cross-checked with the traces summary)."""
    marker = Path(work) / "world" / "world.json"
    summary = _read_json(marker)
    seed = summary.get("world", {}).get("seed", summary.get("profile", {}).get("world", {}).get("seed"))
    p_direct = summary.get("profile", {}).get("teacher", {}).get("p_direct")
    traces = Path(work) / "traces" / "train.json"
    if traces.is_file():
        traced = _read_json(traces).get("profile", {}).get("teacher", {}).get("p_direct")
        if traced is not None and p_direct is not None and not math.isclose(float(traced), float(p_direct)):
            raise ValueError(f"world {name}: {marker} says p_direct {p_direct} but {traces} says {traced}")
        p_direct = traced if traced is not None else p_direct
    named_seed, named_p = _from_name(name)
    seed = named_seed if seed is None else seed
    p_direct = named_p if p_direct is None else p_direct
    if seed is None or p_direct is None:
        raise ValueError(f"world {name}: {marker} records no world.seed / profile.teacher.p_direct and the name is "
                         "not of the form w<seed>_p<p_direct>")
    return int(seed), float(p_direct)


# ----------------------------------------------------------------------------- one world
def long_frame(samples: list[tuple[int, pd.DataFrame]], split: str) -> pd.DataFrame:
    """(seed, problem, value) rows of one model on one split: the bootstrap's input."""
    parts = [pd.DataFrame({"seed": seed, "problem": frame.loc[frame["split"] == split, "id"],
                           "value": frame.loc[frame["split"] == split, "correct"].astype(float)})
             for seed, frame in samples]
    return pd.concat(parts, ignore_index=True)


def mean_accuracy(samples: list[tuple[int, pd.DataFrame]], split: str, what: str) -> float:
    """Accuracy (%) on ``split``, mean over seeds; a seed without the split is an error."""
    values = []
    for seed, frame in samples:
        rows = frame[frame["split"] == split]
        if rows.empty:
            raise ValueError(f"{what} (seed {seed}): no samples on split {split!r}")
        values.append(100.0 * float(rows["correct"].mean()))
    return float(np.mean(values))


def bootstrap(a: pd.DataFrame, b: pd.DataFrame, split: str, names: tuple[str, str]) -> tuple[float, float, float]:
    """(a - b, low, high) in accuracy points."""
    point, low, high = hierarchical_bootstrap_diff(a, b, replicates=BOOTSTRAP_REPLICATES,
                                                   seed=bootstrap_seed(split), names=names)
    return 100.0 * point, 100.0 * low, 100.0 * high


def load_model(work: Path, name: str, seeds: list[int]) -> list[tuple[int, pd.DataFrame]]:
    """(seed, samples) per seed; a reference (evaluated once) is seed 0."""
    labels = [0] if is_reference(name) else seeds
    return [(seed, read_samples(folder)) for seed, folder in zip(labels, eval_dirs(work, name, seeds))]


def world_row(world: World, experiments: list[str], seeds: list[int], splits: list[str], subject: str,
              baseline: str, oracle: str | None, knife_edge: dict | None = None) -> dict:
    """One world's row (see the module docstring); ``knife_edge``: calibration_line's knife-edge keywords
    (``world_knife_edge``; None: neither knife-edge target judged)."""
    if SELECTION_SPLIT not in splits:
        raise ValueError(f"robustness.splits {splits} lack {SELECTION_SPLIT!r}: the best other baseline is "
                         "chosen there")
    models = {name: load_model(world.work, name, seeds) for name in ["base_student", *experiments]}
    label = lambda name: f"{world.work}/eval/{name}"  # noqa: E731
    row: dict = {"world": world.name, "main": world.main, "world_seed": world.world_seed, "p_direct": world.p_direct,
                 "n_seeds": len(seeds), "seeds": ";".join(map(str, seeds)), "subject": subject,
                 "baseline": baseline, "oracle": oracle or ""}
    for name in ["base_student", *experiments]:
        for split in splits:
            row[f"{name}_{split}_mean"] = mean_accuracy(models[name], split, label(name))
    others = [name for name in experiments if name not in (subject, oracle)]
    for other in others:
        for split in COMPARED_SPLITS:
            delta = bootstrap(long_frame(models[subject], split), long_frame(models[other], split), split,
                              (label(subject), label(other)))
            row.update(zip((f"delta_{split}_vs_{other}", f"delta_{split}_vs_{other}_ci_low",
                            f"delta_{split}_vs_{other}_ci_high"), delta))
    # the best other offline baseline on validation (ties: the first in experiment order)
    best = max(others, key=lambda name: (row[f"{name}_{SELECTION_SPLIT}_mean"], -others.index(name)))
    row["best_other"] = best
    row[f"best_other_{SELECTION_SPLIT}_mean"] = row[f"{best}_{SELECTION_SPLIT}_mean"]
    for split in COMPARED_SPLITS:
        for suffix in ("", "_ci_low", "_ci_high"):
            row[f"delta_{split}_vs_best_other{suffix}"] = row[f"delta_{split}_vs_{best}{suffix}"]
    for split in COMPARED_SPLITS:
        row[f"oracle_gap_closed_{split}"] = math.nan
        if oracle:
            gap = row[f"{oracle}_{split}_mean"] - row[f"{baseline}_{split}_mean"]
            if gap >= ORACLE_GAP_MIN:
                row[f"oracle_gap_closed_{split}"] = (row[f"{subject}_{split}_mean"]
                                                     - row[f"{baseline}_{split}_mean"]) / gap
    line = calibration_line(world.work, seeds, baseline, oracle, **(knife_edge or {}))
    term = teacher_term_from_files(world.work / "traces" / "train.parquet",
                                   world.base_student or world.work / "base_student")
    line[term.name] = term.status
    line.update(term.numbers)
    for target in WORLD_TARGETS:
        row[f"{CALIBRATION_PREFIX}{target}"] = line.get(target, "")
    for number in CALIBRATION_NUMBERS:
        row[f"{CALIBRATION_PREFIX}{number}"] = line.get(number, math.nan)
    return row


def knife_edge_owner(world: World, worlds: list[World], main_seed: int) -> Path | None:
    """The work folder holding the base students of ``world``'s world seed (``dcod.layout.seed_owner``, as
    the DAG pre-trains them); None when that is the main world and it is not listed (``world_knife_edge``
    then finds none and the target reads not measured)."""
    main = next((w.work for w in worlds if w.main), None)
    owner = seed_owner(world.world_seed, [w.work for w in worlds if w.world_seed == world.world_seed],
                       main_seed, main)
    return None if owner is None else Path(owner)


def world_knife_edge(profile, world: World, worlds: list[World]) -> dict | None:
    """calibration_line's knife-edge keywords for one world (``knife_edge_knobs``): the main world's own;
    another world of the main world seed judges the main world's base students, another world seed its own;
    neither judges the plateau."""
    if world.main:
        return knife_edge_knobs(profile)
    main_seed = int(profile.world.get("seed", 0))
    # the main world not listed: its base students are not found, so the target reads not measured
    owner = knife_edge_owner(world, worlds, main_seed) or world.work
    knobs = knife_edge_knobs(profile, owner)
    if world.world_seed == main_seed:
        knobs["pretrain_seeds"] = profile.knife_edge_pretrain_seeds(main_world=True)
    return knobs


def build_robustness(worlds: list[World], experiments: list[str], seeds: list[int], splits: list[str],
                     subject: str, baseline: str, oracle: str | None, knife_edge: dict | None = None) -> pd.DataFrame:
    for role, name in (("report.subject", subject), ("report.baseline", baseline)):
        if name not in experiments:
            raise ValueError(f"{role} {name!r} is not among the robustness experiments {experiments}")
    if not [name for name in experiments if name not in (subject, oracle)]:
        raise ValueError(f"no offline baseline among the robustness experiments {experiments}")
    rows = [world_row(world, experiments, seeds, splits, subject, baseline, oracle,
                      world.knife_edge if world.knife_edge is not None else knife_edge if world.main else None)
            for world in worlds]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- markdown
def _delta(row: pd.Series, split: str, versus: str) -> str:
    column = f"delta_{split}_vs_{versus}"
    low, point, high = (number_or_dash(row[c], "+.1f", "") for c in (column + "_ci_low", column, column + "_ci_high"))
    return f"{point} [{low}, {high}]"


def count_excluding_zero(frame: pd.DataFrame, column: str) -> tuple[int, int]:
    """Worlds whose CI of ``column`` lies wholly above / below 0."""
    sides = [excludes_zero(low, high) for low, high in zip(frame[f"{column}_ci_low"], frame[f"{column}_ci_high"])]
    return sides.count("above"), sides.count("below")


def few_seeds_caveat(n_seeds: int) -> list[str]:
    """Below 3 training seeds the bootstrap's seed level has a handful of distinct resamples (2 seeds: 3), so
    its intervals are coarser than their nominal 95% (docs/claims.md: Table 1 prints such a range and decides
    nothing from it); the report says so instead of presenting them as 95% intervals."""
    if n_seeds >= 3:
        return []
    return [f"**{n_seeds} training seed(s) per world**: the seed level of the bootstrap has few distinct "
            "resamples, so these intervals understate the seed-to-seed spread and are coarser than 95%; "
            "read them as descriptive, not as tests.", ""]


def render_markdown(frame: pd.DataFrame, experiments: list[str]) -> str:
    first = frame.iloc[0]
    subject, baseline, oracle = first["subject"], first["baseline"], first["oracle"]
    lines = ["# Robustness across worlds", "",
             "Generated by `python -m dcod report robustness` from each world's evaluation samples; do not edit.",
             f"Accuracy in %, mean over the training seeds ({first['seeds']}); differences in points with 95% CIs "
             "of the hierarchical bootstrap (seeds, then problems, paired). The best other offline baseline is "
             f"chosen on each world's `{SELECTION_SPLIT}` split. Oracle gap closed: ({subject} - {baseline}) / "
             f"({oracle or 'oracle'} - {baseline}), blank when that gap is under {ORACLE_GAP_MIN:g} point.", "",
             *few_seeds_caveat(int(first["n_seeds"])), "## Summary", ""]
    for split in COMPARED_SPLITS:
        for versus, label in ((baseline, baseline), ("best_other", "the best other offline baseline")):
            above, below = count_excluding_zero(frame, f"delta_{split}_vs_{versus}")
            lines.append(f"- {subject} - {label} on `{split}`: CI above 0 in {above} of {len(frame)} worlds, "
                         f"below 0 in {below}.")
    calibrated = sum(all(row[f"{CALIBRATION_PREFIX}{t}"] in (PASS, "") for t in WORLD_TARGETS)
                     and any(row[f"{CALIBRATION_PREFIX}{t}"] == PASS for t in WORLD_TARGETS)
                     for _, row in frame.iterrows())
    lines += [f"- Worlds whose judged calibration targets all PASS (not measured is not a pass): {calibrated} of "
              f"{len(frame)}.", ""]

    lines += ["## Differences", ""]

    def pair(row, pattern: str, spec: str) -> str:  # "id / long" cells
        return " / ".join(number_or_dash(row[pattern.format(s)], spec, "") for s in COMPARED_SPLITS)

    table = pd.DataFrame([{"world": row["world"] + (" (main)" if row["main"] else ""),
                           "world seed": row["world_seed"], "p_direct": f"{row['p_direct']:g}",
                           "base id / long": pair(row, "base_student_{}_mean", ".1f"),
                           f"{subject} - {baseline} id": _delta(row, "id", baseline),
                           f"{subject} - {baseline} long": _delta(row, "long", baseline),
                           "best other": row["best_other"],
                           f"{subject} - best other id": _delta(row, "id", "best_other"),
                           f"{subject} - best other long": _delta(row, "long", "best_other"),
                           "oracle gap closed id / long": pair(row, "oracle_gap_closed_{}", ".2f")}
                          for _, row in frame.iterrows()])
    lines += [markdown_table(table), "", "## Accuracy per experiment (validation / id / long)", ""]
    accuracy = pd.DataFrame([{"world": row["world"], **{name: " / ".join(number_or_dash(row[f"{name}_{s}_mean"],
                                                                                        ".1f", "")
                                                                         for s in (SELECTION_SPLIT, *COMPARED_SPLITS))
                                                         for name in ["base_student", *experiments]}}
                             for _, row in frame.iterrows()])
    lines += [markdown_table(accuracy), "", "## Calibration line per world", "",
              f"PASS / FAIL / {NOT_MEASURED} per target of `calibration.md`; no_knife_edge is judged per world "
              "seed, from the base students pre-trained for it (the same for every world of the seed); "
              "plateau on the main world only (blank elsewhere); teacher_term_matters on every world, from its "
              "training traces and the base student of its world seed.", ""]
    calibration = pd.DataFrame([{"world": row["world"], **{t: row[f"{CALIBRATION_PREFIX}{t}"] for t in WORLD_TARGETS}}
                                for _, row in frame.iterrows()])
    lines += [markdown_table(calibration), ""]
    if (frame[[f"{CALIBRATION_PREFIX}{t}" for t in WORLD_TARGETS]] == FAIL).any().any():
        lines += ["A world with a FAIL is outside the paper's regime on that target: read its differences "
                  "with that in mind.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command
def write_robustness(args) -> None:
    from dcod.config import load_profile

    profile = load_profile(need(args.profile, "--profile", "robustness"))
    if profile.robustness is None:
        raise ValueError(f"report robustness: profile {profile.source} has no robustness section")
    entries = parse_worlds(need(getattr(args, "worlds", None), "--worlds", "robustness"))
    experiments_dir = getattr(args, "experiments", None) or "experiments"
    # the list is dcod.layout.robustness_experiments, worked out by the DAG (which knows each method's needs)
    experiments = parse_names(getattr(args, "experiment_list", None)) or profile.robustness.experiments
    experiments = list(need(experiments, "--experiment-list", "robustness"))
    oracle = oracle_experiment(profile, experiments_dir)
    oracle = oracle if oracle in experiments else None
    main_seed, main_p = int(profile.world.get("seed", 0)), float(profile.teacher.p_direct)
    worlds = []
    for name, work in entries:
        seed, p_direct = world_facts(name, work)
        worlds.append(World(name, work, seed, p_direct, main=seed == main_seed and math.isclose(p_direct, main_p)))
    for world in worlds:
        world.knife_edge = world_knife_edge(profile, world, worlds)
        world.base_student = (knife_edge_owner(world, worlds, main_seed) or world.work) / "base_student"
    knife_edge = knife_edge_knobs(profile)
    frame = build_robustness(worlds, experiments, list(profile.robustness.seeds), list(profile.robustness.splits),
                             profile.report.subject, profile.report.baseline, oracle, knife_edge)
    out = Path(args.out)
    write_csv(out, frame)
    write_text(out.with_suffix(".md"), render_markdown(frame, experiments))
    print(f"robustness: {len(frame)} worlds -> {out} (+ {out.with_suffix('.md').name})")
