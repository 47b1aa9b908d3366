"""Tables under the amendment "What the claims measure" (docs/claims.md): seed-paired intervals (t over seeds,
a range below 3 seeds), the retention ratio to the base student, the SFT -> reweighting-ceiling gap share,
per-seed CSVs and Table 2 grouped by the knob each ablation varies.

A hand-made work folder of three seeds where every answer is known: on ``id`` and ``long`` (400 problems)
sft answers the first 50% + 5%·seed, dcod 30 points more on every seed, kd one problem more than sft, and
the ceiling (oracle_weights) 40 points more than sft; on ``retention`` (20 problems) the base student and
every trained model answer the first 80%, dcod the first 75% (400 problems).
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcod.methods import get_method
from dcod.reporting import claims, paper, tables

SIZES = {"id": 400, "long": 400, "retention": 400}  # enough problems for a 3-seed t interval to decide
SEEDS = [0, 1, 2]
T_975_DF2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)
DCOD = {"granularity": "sequence", "discount": 1.0, "beta": None, "ess_target": 0.5, "beta_max": 100.0,
        "clip": 5.0, "reference": "teacher", "token_loss": "nll"}
# name -> (method, table, params, extra accuracy over sft on id/long, in percent)
MODELS = {"sft": ("sft", "main", {}, 0), "kd": ("kd", "main", {}, None), "dcod": ("dcod", "main", DCOD, 30),
          "oracle_weights": ("oracle_weights", "main", {}, 40),
          "iw_sft": ("iw_sft", "main", {}, 0), "iw_sft_teacher": ("iw_sft", "ablation", {"reference": "teacher"}, 0),
          "dcod_clip2": ("dcod", "ablation", {**DCOD, "clip": 2.0}, 30),
          "dcod_clip3": ("dcod", "ablation", {**DCOD, "clip": 3.0}, 30),
          "dcod_token": ("dcod", "ablation", {**DCOD, "granularity": "token"}, 30),
          "dcod_dup": ("dcod", "ablation", DCOD, 30)}
# logged clip fraction per step: dcod_clip3's clip never binds (0 at every step of every seed)
CLIP_LOG = {"dcod_clip3": lambda step: 0.0, "dcod_clip2": lambda step: 0.2 if step > 5 else 0.0}


def correct(name: str, seed: int, split: str, i: int, n: int) -> bool:
    """Whether ``name`` (seed) answers problem i of n: the first p% of each split, in whole percents."""
    if name == "teacher":
        return True
    if split == "retention":
        return 100 * i < (75 if name == "dcod" else 80) * n
    if name == "base_student":
        return 100 * i < 30 * n
    sft = 100 * i < (50 + 5 * seed) * n
    if name == "kd":
        return sft or i == n - 1
    return 100 * i < (50 + 5 * seed + MODELS[name][3]) * n


def write_eval(folder: Path, name: str, seed: int) -> None:
    folder.mkdir(parents=True)
    rows, metrics = [], []
    for split, n in SIZES.items():
        answers = [correct(name, seed, split, i, n) for i in range(n)]
        rows += [{"id": f"{split}-{i}", "split": split, "correct": ok, "task": "arith", "steps_direct": 0,
                  "steps_decomposed": 2, "finish_reason": "stop"} for i, ok in enumerate(answers)]
        metrics.append({"split": split, "n": n, "accuracy": float(np.mean(answers)), "steps_direct": 0,
                        "steps_decomposed": 2 * n})
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(metrics).to_csv(folder / "metrics.csv", index=False)
    pd.DataFrame(columns=["id", "split", "k", "samples", "agreement", "malformed_rate"]).to_csv(
        folder / "stability.csv", index=False)


def write_run(folder: Path, name: str, seed: int) -> None:
    method, table, params, _ = MODELS[name]
    cls = get_method(method)
    checked = cls.Params(**params)
    folder.mkdir(parents=True)
    run = {"seed": seed, "student_tokens_trained": 1000, "tokens_sampled": 0, "teacher_forward_tokens": 0,
           "reference_forward_tokens": 0, "student_parameters": 100, "wall_time_s": 1.0,
           "experiment": {"name": name, "method": method, "description": name, "table": table, "params": params,
                          "train": {}},
           "needs": cls.needs(checked).as_dict(), "report_columns": list(cls.report_columns(checked).items()),
           "weight_diagnostics": list(cls.weight_diagnostics)}
    (folder / "run.json").write_text(json.dumps(run))
    log = []
    for step in range(1, 11):
        record = {"step": step, "loss": 1.0}
        record.update({key: 0.5 for key in cls.weight_diagnostics})
        if "clip_fraction" in record:
            record["clip_fraction"] = CLIP_LOG.get(name, lambda s: 0.01)(step)
        log.append(record)
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tables") / "work"
    write_eval(root / "eval" / "teacher", "teacher", 0)
    for seed in SEEDS:
        write_eval(root / "eval" / "base_student" / f"seed{seed}", "base_student", seed)
        for name in MODELS:
            write_eval(root / "eval" / name / f"seed{seed}", name, seed)
            write_run(root / "runs" / name / f"seed{seed}", name, seed)
    (root / "traces").mkdir()
    (root / "traces" / "train.json").write_text(json.dumps({"tokens_generated": 10, "generation_seconds": 1.0}))
    return root


@pytest.fixture(scope="module")
def table1(work) -> pd.DataFrame:
    return tables.build_table1(work, ["sft", "kd", "dcod", "oracle_weights"], SEEDS, "sft", "dcod", paired=True)


def test_paired_difference_is_t_over_seeds_with_the_problem_level(table1):
    row = table1.set_index("method").loc["dcod"]
    # d_s = 30 points on every seed (no seed variance); D_p = per-problem difference averaged over the seeds
    sft = np.array([[i < (0.5 + 0.05 * s) * 400 for i in range(400)] for s in SEEDS], float)
    dcod = np.array([[i < (0.8 + 0.05 * s) * 400 for i in range(400)] for s in SEEDS], float)
    half = T_975_DF2 * math.sqrt((dcod - sft).mean(axis=0).var(ddof=1) / 400)
    assert row["delta_id_paired_kind"] == "t"
    assert row["delta_id_paired"] == pytest.approx(30.0)
    assert (row["delta_id_paired_low"], row["delta_id_paired_high"]) == pytest.approx((30 - 100 * half, 30 + 100 * half))
    # the subject − row columns are the same comparison the other way round
    sft_row = table1.set_index("method").loc["sft"]
    assert sft_row["dcod_minus_row_id_paired"] == pytest.approx(30.0)
    assert sft_row["dcod_minus_row_id_paired_low"] == pytest.approx(row["delta_id_paired_low"])


def test_fewer_than_three_seeds_give_a_range_never_a_ci(work):
    table = tables.build_table1(work, ["sft", "kd", "dcod"], [0, 1], "sft", "dcod", paired=True).set_index("method")
    dcod = table.loc["dcod"]  # dcod − sft: 30 points on both seeds
    assert dcod["delta_id_paired_kind"] == "range"
    assert (dcod["delta_id_paired"], dcod["delta_id_paired_low"], dcod["delta_id_paired_high"]) == pytest.approx(
        (30.0, 30.0, 30.0))
    text = paper.delta_text(dcod, "id")
    assert text == "+30.0 (range +30.0 to +30.0)" and "[" not in text


def test_retention_ratio_to_each_seeds_base_student(table1):
    row = table1.set_index("method").loc["dcod"]
    assert row["base_ratio_retention_kind"] == "t"
    # 300/400 over 320/400 on every seed: 0.9375 with no seed spread
    assert (row["base_ratio_retention"], row["base_ratio_retention_low"], row["base_ratio_retention_high"]) \
        == pytest.approx((0.9375,) * 3)
    assert table1.set_index("method").loc["base_student", "base_ratio_retention"] == 1.0


def test_ceiling_is_a_reference_and_the_gap_share_is_stated(table1, work):
    rows = table1.set_index("method")
    assert rows.loc["oracle_weights", "role"] == "reference"
    assert "knowledge no method has" in rows.loc["oracle_weights", "description"]
    assert rows.loc["dcod", "ceiling_gap_closed_id"] == pytest.approx(0.75)  # 30 of 40 points
    assert rows.loc["kd", "ceiling_gap_closed_id"] == pytest.approx(0.25 / 40)  # one problem of 400 on every seed
    assert math.isnan(rows.loc["teacher", "ceiling_gap_closed_id"])
    # the ceiling is not an offline baseline of claim (a)
    assert "oracle_weights" not in claims.offline_baselines(table1, "dcod")[0]
    # two seeds: the ceiling's interval against SFT is a range, which decides nothing: no share
    two = tables.build_table1(work, ["sft", "dcod", "oracle_weights"], [0, 1], "sft", "dcod", paired=True)
    assert two["ceiling_gap_closed_id"].isna().all()
    assert "Not stated on any split" in "\n".join(paper.ceiling_gap_lines(two))


def test_seed_table_has_one_row_per_model_and_seed(work):
    frame = tables.seed_table(work, ["teacher", "base_student", "sft"], SEEDS, paired=True)
    assert len(frame) == 1 + 3 + 3
    assert math.isnan(frame.loc[frame["method"] == "teacher", "seed"].iloc[0])
    sft = frame[frame["method"] == "sft"].set_index("seed")
    assert list(sft["id_accuracy"]) == pytest.approx([50.0, 55.0, 60.0])
    assert tables.seeds_path("results/table1.csv") == Path("results/table1_seeds.csv")


def test_table2_groups_by_the_knob_each_ablation_varies(work):
    names = ["sft", "dcod", "iw_sft", "dcod_clip2", "dcod_clip3", "dcod_token", "iw_sft_teacher"]
    table = tables.build_table2(work, names, SEEDS, "dcod", "sft").set_index("method")
    assert table.loc["dcod_clip2", "group"] == "clip" and table.loc["dcod_clip2", "default"] == "dcod"
    assert table.loc["dcod_token", "group"] == "granularity" and table.loc["dcod_token", "varies"] == "granularity"
    assert table.loc["iw_sft_teacher", "group"] == "iw_sft: reference"
    assert table.loc["iw_sft_teacher", "default"] == "iw_sft"
    # a clip that never bound over the run is marked; one that bound at some step is not
    assert table.loc["dcod_clip3", "never_acted"] == "clip"
    assert pd.isna(table.loc["dcod_clip2", "never_acted"]) or table.loc["dcod_clip2", "never_acted"] == ""
    text = "\n".join(paper.table2_section(table.reset_index()))
    assert "### clip (default `dcod`)" in text and "### iw_sft: reference (default `iw_sft`)" in text
    clip = text.split("### clip")[1].split("###")[0]
    assert clip.index("| dcod |") < clip.index("| dcod_clip2 |")  # the default row first
    assert "never acted: clip" in clip
    assert text.index("### granularity") < text.index("### clip")  # the method's knob order


def test_table2_refuses_an_ablation_identical_to_its_default(work):
    with pytest.raises(ValueError, match="experiments/dcod_dup: every knob equals its default 'dcod'"):
        tables.build_table2(work, ["sft", "dcod", "dcod_dup"], SEEDS, "dcod", "sft")


# ----------------------------------------------------------------------------- claims on the paired columns
def test_claims_are_judged_on_the_paired_intervals(table1):
    judged = {c.key: c for c in claims.judge_claims(table1)}
    assert judged["a"].verdict == claims.SUPPORTED
    assert "no evidence for" not in judged["a"].sentence
    assert "DCOD − kd (Table 1) on id: +29.8 [" in "\n".join(judged["a"].numbers)
    # retention: the ratio's interval 0.9375 lies above 0.9, but DCOD − SFT (−5 points on every seed) lies
    # wholly below 0: not supported
    assert judged["c"].verdict == claims.NOT_SUPPORTED
    assert "0.938 [0.938, 0.938] (95% CI, t over seeds)" in "\n".join(judged["c"].numbers)


def test_claim_a_says_no_evidence_when_a_paired_interval_is_below(table1):
    losing = table1.copy()
    sft = losing["method"] == "sft"
    losing.loc[sft, ["dcod_minus_row_id_paired", "dcod_minus_row_id_paired_low", "dcod_minus_row_id_paired_high"]] = \
        [-3.0, -5.0, -1.0]
    # below 0 at 95% but not at the Bonferroni level over the m comparisons (docs/claims.md, "Claim (a) over
    # Tables 1 and 3"): no evidence for the claim, yet not refuted
    claim = claims.accuracy_claim(losing, claims.ReportConfig())
    assert claim.verdict == claims.INCONCLUSIVE
    assert "The results give no evidence for claim (a)" in claim.sentence
    losing.loc[sft, ["dcod_minus_row_id_paired", "dcod_minus_row_id_paired_low", "dcod_minus_row_id_paired_high"]] = \
        [-30.0, -32.0, -28.0]  # far below 0: below at the Bonferroni level too
    claim = claims.accuracy_claim(losing, claims.ReportConfig())
    assert claim.verdict == claims.NOT_SUPPORTED
    assert "The results give no evidence for claim (a): DCOD trails sft on `id`" in claim.sentence


@pytest.mark.parametrize("ratio, difference, verdict", [
    ((0.95, 0.92, 0.98), (1.0, -2.0, 4.0), claims.SUPPORTED),
    ((0.95, 0.85, 1.05), (1.0, -2.0, 4.0), claims.INCONCLUSIVE),  # the interval straddles 0.9
    ((0.80, 0.75, 0.85), (1.0, -2.0, 4.0), claims.NOT_SUPPORTED),  # its upper end below 0.9
    ((0.95, 0.92, 0.98), (-3.0, -5.0, -1.0), claims.NOT_SUPPORTED),  # DCOD − SFT wholly below 0
])
def test_claim_c_reads_the_ratio_interval_not_its_point(ratio, difference, verdict):
    dcod = pd.Series({"retention_mean": 76.0, **dict(zip(["base_ratio_retention", "base_ratio_retention_low",
                                                          "base_ratio_retention_high"], ratio)),
                      "base_ratio_retention_kind": "t"})
    sft = pd.Series({"retention_mean": 75.0, **dict(zip(["dcod_minus_row_retention_paired",
                                                         "dcod_minus_row_retention_paired_low",
                                                         "dcod_minus_row_retention_paired_high"], difference)),
                     "dcod_minus_row_retention_paired_kind": "t"})
    assert claims.retention_claim(dcod, sft, None).verdict == verdict
    ranged = {**dcod, "base_ratio_retention_kind": "range"}  # two seeds: decides nothing
    assert claims.retention_claim(pd.Series(ranged), sft, None).verdict in (claims.INCONCLUSIVE, claims.NOT_SUPPORTED)
    if verdict == claims.SUPPORTED:
        assert claims.retention_claim(pd.Series(ranged), sft, None).verdict == claims.INCONCLUSIVE


def hazard_table(intervals: dict) -> pd.DataFrame:
    """A Table 1 with the step-hazard columns: ``intervals[name]`` = (point, low, high, kind) of dcod − name."""
    rows = []
    for name, (point, low, high, kind) in intervals.items():
        rows.append({"method": name, "role": "method" if name != "base_student" else "reference", "offline_only": True,
                     "n_seeds": 5, "step_hazard_mean": 0.1, "vote_gain_mean": 0.02, "agreement_mean": 0.8,
                     "malformed_rate_mean": 0.0, "dcod_minus_row_step_hazard_paired": point,
                     "dcod_minus_row_step_hazard_paired_low": low, "dcod_minus_row_step_hazard_paired_high": high,
                     "dcod_minus_row_step_hazard_paired_kind": kind})
    rows.append({"method": "dcod", "role": "method", "offline_only": True, "n_seeds": 5, "step_hazard_mean": 0.05,
                 "dcod_minus_row_step_hazard_paired_kind": ""})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kd, verdict", [
    ((-0.05, -0.08, -0.02, "t"), claims.SUPPORTED),
    ((0.01, -0.02, 0.04, "t"), claims.INCONCLUSIVE),
    ((0.05, 0.02, 0.08, "t"), claims.NOT_SUPPORTED),
    ((-0.05, -0.08, -0.02, "range"), claims.INCONCLUSIVE),  # fewer than 3 seeds decide nothing
])
def test_claim_b_is_judged_on_the_step_hazard(kd, verdict):
    table = hazard_table({"sft": (-0.04, -0.06, -0.01, "t"), "kd": kd, "base_student": (-0.1, -0.2, -0.05, "t")})
    claim = claims.stability_claim(table, claims.ReportConfig())
    assert claim.verdict == verdict
    assert "step hazard" in claim.sentence and "decide nothing" in claim.sentence


def test_hazard_counts_read_stability_csv_in_problem_order():
    frame = pd.DataFrame({"id": ["b", "a", "c"], "split": ["id"] * 3, "samples": [4, 4, 4],
                          "hazard_at_risk": ["4;3", "4;4;2", ""], "hazard_errors": ["1;0", "0;2;1", ""]})
    evaluated = tables.Evaluated("m", [0], [], [], [frame])
    risk, errors = tables.hazard_counts(evaluated)[0]
    assert risk.tolist() == [[4, 4, 2], [4, 3, 0]] and errors.tolist() == [[0, 2, 1], [1, 0, 0]]  # a, b; c ungraded
    assert tables.hazard_counts(tables.Evaluated("m", [0], [], [], [frame.drop(columns=["hazard_at_risk"])])) is None


# ----------------------------------------------------------------------------- the paper's DCOD reading
def reading_tables(scores: dict[str, float]):
    """Table 2 (grouping columns only) and its per-seed values: ``scores`` = validation accuracy at seed 0."""
    knobs = {"dcod": ("", "", "sequence", "adaptive"), "dcod_token": ("dcod", "granularity", "token", "adaptive"),
             "dcod_step": ("dcod", "granularity", "step", "adaptive"), "dcod_ess_floor": ("dcod", "beta", "sequence", "ess_floor"),
             "dcod_prefix": ("dcod", "granularity", "prefix", "adaptive"), "dcod_clip2": ("dcod", "clip", "sequence", "adaptive")}
    table2 = pd.DataFrame([{"method": name, "role": "reference" if name == "dcod" else "ablation", "default": d,
                            "varies": v, "granularity": g, "beta": b} for name, (d, v, g, b) in knobs.items()])
    # seed 1 ranks the readings the other way round: only the tuning seed (0) may decide
    seeds = pd.DataFrame([{"method": name, "seed": seed, "validation_accuracy": score if seed == 0 else 100 - score}
                          for name, score in scores.items() for seed in (0, 1)])
    return table2, seeds


def test_the_dcod_reading_is_chosen_on_validation_at_the_tuning_seed(table1):
    base = {"dcod": 60.0, "dcod_token": 55.0, "dcod_step": 58.0, "dcod_ess_floor": 59.0, "dcod_prefix": 90.0,
            "dcod_clip2": 90.0}  # prefix and clip are not candidates, whatever they score
    choice = claims.reading_choice(*reading_tables(base), "dcod", 0)
    assert list(choice["candidate"]) == ["dcod", "dcod_token", "dcod_step", "dcod_ess_floor"]
    assert choice.loc[choice["chosen"], "candidate"].tolist() == ["dcod"]
    tie = claims.reading_choice(*reading_tables({**base, "dcod_token": 60.0}), "dcod", 0)
    assert tie.loc[tie["chosen"], "candidate"].tolist() == ["dcod"]  # ties: the default
    judged = {c.key: c for c in claims.judge_claims(table1, reading=choice)}
    assert judged["a"].verdict == claims.SUPPORTED and "chosen on validation at the tuning seed: dcod" in judged["a"].numbers[-1]
    better = claims.reading_choice(*reading_tables({**base, "dcod_step": 61.0}), "dcod", 0)
    assert better.loc[better["chosen"], "candidate"].tolist() == ["dcod_step"]
    claim = {c.key: c for c in claims.judge_claims(table1, reading=better)}["a"]
    assert claim.verdict == claims.NOT_EVALUATED and "`dcod_step`, not Table 1's `dcod`" in claim.sentence
    with pytest.raises(ValueError, match="no validation accuracy at the tuning seed 2"):
        claims.reading_choice(*reading_tables(base), "dcod", 2)


def test_claim_b_is_not_judged_by_agreement_on_a_new_table_without_graded_steps(table1):
    # the fixture's stability.csv is header-only: no hazard counts, so no step hazard interval
    claim = claims.stability_claim(table1, claims.ReportConfig())
    assert claim.verdict == claims.NOT_EVALUATED and "step hazard" in claim.sentence


def test_a_base_student_without_retention_leaves_the_ratio_undefined_not_an_error(work):
    evaluated = tables.load_evaluated(work, "dcod", SEEDS)
    base = tables.load_evaluated(work, "base_student", SEEDS, paired=True)
    for frame in base.samples[1:2]:  # seed 1's base student answers no retention problem
        frame.loc[frame["split"] == "retention", "correct"] = False
    point, low, high, kind = tables.retention_ratio(evaluated, base, "retention")
    assert kind == "undefined" and math.isnan(point)
    dcod = pd.Series({"retention_mean": 75.0, "base_ratio_retention": point, "base_ratio_retention_low": low,
                      "base_ratio_retention_high": high, "base_ratio_retention_kind": kind})
    claim = claims.retention_claim(dcod, pd.Series({"retention_mean": 80.0}), None)
    assert claim.verdict == claims.INCONCLUSIVE and "undefined" in "\n".join(claim.numbers)
