"""Calibration targets (docs/toy_world.md, dcod.reporting.calibration): PASS / FAIL at the thresholds, and
"not measured" (never PASS) when an input is missing.

A synthetic work folder with 100 problems per split, so one problem is one accuracy point and every
threshold can be hit exactly: the reference world sits *on* every ">=" threshold (sft id = base + 5,
oracle id = base + 15, sft direct-step error = 2 x decomposed, knife-edge deviation = 4) and one point
inside the strict ones (plateau shift 2 < 3, long < id). Each test moves one number by one point.
"""

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dcod.reporting import calibration

ROOT = Path(__file__).resolve().parents[2]
N = 100
SPLITS = ("validation", "id", "long")
SEEDS = [0, 1]
PRETRAIN_SEEDS = [1235, 1236]


def write_samples(folder: Path, correct: dict, direct_errors: int = 0, decomposed_errors: int = 0) -> None:
    """``correct[split]`` right answers of N; each problem has one direct and one decomposed step, the first
    ``direct_errors`` / ``decomposed_errors`` problems of each arithmetic split getting that step wrong."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in SPLITS:
        for i in range(N):
            rows.append({"id": f"{split}-{i:05d}", "split": split, "task": "arith", "k": 2,
                         "correct": i < correct[split], "steps_direct": 1, "errors_direct": int(i < direct_errors), "steps_decomposed": 1,
                         "errors_decomposed": int(i < decomposed_errors), "steps_malformed": 0})
    (folder / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def acc(validation, id_, long):
    return {"validation": validation, "id": id_, "long": long}


# the reference world: every target PASS, sitting on its threshold
DEFAULT = {
    "base_student": acc(40, 50, 30),
    ("sft", 0): acc(40, 54, 30), ("sft", 1): acc(40, 56, 30),  # pooled 55 = base + 5
    ("oracle_sft", 0): acc(60, 65, 40), ("oracle_sft", 1): acc(60, 65, 40),  # base + 15
    "pretrain_seed1235": acc(40, 54, 30), "pretrain_seed1236": acc(40, 46, 30),  # mean 50, deviation 4
    "steps_x1.5": acc(40, 52, 30),  # shift 2 < 3
}
SFT_ERRORS = (40, 20)  # direct 0.40 = 2 x decomposed 0.20


def make_work(root: Path, changes: dict | None = None, sft_errors=SFT_ERRORS) -> Path:
    spec = {**DEFAULT, **(changes or {})}
    work = root / "work"
    for name in ("teacher", "teacher_direct", "teacher_decomposed"):
        write_samples(work / "eval" / name, acc(N, N, N))
    write_samples(work / "eval" / "base_student", spec["base_student"], 30, 15)
    for name in ("sft", "oracle_sft"):
        for seed in SEEDS:
            errors = sft_errors if name == "sft" else (10, 10)
            write_samples(work / "eval" / name / f"seed{seed}", spec[(name, seed)], *errors)
    for seed in PRETRAIN_SEEDS:
        write_samples(calibration.calibration_eval_dir(calibration.pretrain_seed_dir(work, seed)),
                      spec[f"pretrain_seed{seed}"])
    write_samples(calibration.calibration_eval_dir(calibration.steps_factor_dir(work, 1.5)), spec["steps_x1.5"])
    return work


def line(work: Path, pretrain_seeds=PRETRAIN_SEEDS, steps_factor=1.5) -> dict:
    return calibration.calibration_line(work, SEEDS, "sft", "oracle_sft", pretrain_seeds=pretrain_seeds,
                                        steps_factor=steps_factor)


def statuses(result: dict) -> dict:
    return {name: result[name] for name in calibration.TARGET_NAMES if name in result}


def test_reference_world_passes_every_target_on_its_thresholds(tmp_path):
    result = line(make_work(tmp_path))
    assert statuses(result) == dict.fromkeys(calibration.TARGET_NAMES, "PASS")
    assert result["sft_gain_id"] == pytest.approx(5.0) and result["oracle_gain_id"] == pytest.approx(15.0)
    assert result["sft_step_error_direct"] == pytest.approx(0.4)
    assert result["sft_step_error_decomposed"] == pytest.approx(0.2)
    assert result["pretrain_seed_max_deviation"] == pytest.approx(4.0)
    assert result["plateau_shift_id"] == pytest.approx(2.0)
    assert result["base_id"] == pytest.approx(50.0)


@pytest.mark.parametrize("changes, sft_errors, target", [
    ({("sft", 1): acc(40, 55, 30)}, SFT_ERRORS, "sft_helps"),  # pooled 54.5: half a point short of base + 5
    ({("sft", 0): acc(40, 54, 29), ("sft", 1): acc(40, 56, 29)}, SFT_ERRORS, "sft_helps"),  # long below base
    ({("oracle_sft", 1): acc(60, 63, 40)}, SFT_ERRORS, "oracle_helps"),  # mean 64 = base + 14
    ({}, (39, 20), "capacity_gap"),  # 0.39 < 2 x 0.20
    ({("sft", 0): acc(40, 54, 54), ("sft", 1): acc(40, 56, 56)}, SFT_ERRORS, "errors_compound"),  # long = id
    ({"pretrain_seed1235": acc(40, 55, 30)}, SFT_ERRORS, "no_knife_edge"),  # mean 50.33, deviation 4.67
    ({"steps_x1.5": acc(40, 53, 30)}, SFT_ERRORS, "plateau"),  # shift 3, not < 3
    ({"steps_x1.5": acc(40, 47, 30)}, SFT_ERRORS, "plateau"),  # shift -3
])
def test_one_point_past_a_threshold_fails_that_target_only(tmp_path, changes, sft_errors, target):
    result = statuses(line(make_work(tmp_path, changes, sft_errors)))
    assert result[target] == "FAIL"
    assert {name for name, status in result.items() if status != "PASS"} == {target}


def test_teacher_unreliable_in_one_style_fails(tmp_path):
    work = make_work(tmp_path)
    write_samples(work / "eval" / "teacher_direct", acc(N, 94, N))
    assert line(work)["teacher_reliable"] == "FAIL"
    write_samples(work / "eval" / "teacher_direct", acc(N, 95, N))
    assert line(work)["teacher_reliable"] == "PASS"


@pytest.mark.parametrize("remove, targets", [
    ("eval/oracle_sft/seed1", {"oracle_helps"}),
    ("eval/sft/seed0", {"sft_helps", "capacity_gap", "errors_compound"}),
    ("eval/teacher_decomposed", {"teacher_reliable"}),
    ("calibration/pretrain_seed1236/eval/base_student", {"no_knife_edge"}),
    ("calibration/steps_x1.5/eval/base_student", {"plateau"}),
    ("eval/base_student", {"sft_helps", "oracle_helps", "errors_compound", "no_knife_edge", "plateau"}),
])
def test_missing_inputs_are_not_measured_and_named(tmp_path, remove, targets):
    work = make_work(tmp_path)
    (work / remove / "samples.jsonl").unlink()
    measured = calibration.build_calibration(work, SEEDS, "sft", "oracle_sft", PRETRAIN_SEEDS, 1.5)
    found = {t.name: t for t in calibration.check_targets(measured.frame, measured.missing)}
    assert {name for name, t in found.items() if t.status == "not measured"} == targets
    for name in targets:
        assert str(work / remove / "samples.jsonl") in found[name].evidence, name
    assert {name for name, t in found.items() if t.status == "PASS"} == set(calibration.TARGET_NAMES) - targets


def test_knife_edge_not_measured_without_pretrain_seeds_and_absent_off_main(tmp_path):
    work = make_work(tmp_path)
    main = line(work, pretrain_seeds=[], steps_factor=None)
    assert main["no_knife_edge"] == main["plateau"] == "not measured"
    other = calibration.calibration_line(work, SEEDS, "sft", "oracle_sft")  # a robustness world
    assert "no_knife_edge" not in other and "plateau" not in other and other["sft_helps"] == "PASS"
    no_oracle = calibration.calibration_line(work, SEEDS, "sft", None)
    assert no_oracle["oracle_helps"] == "not measured"


def keep_direct_steps(work: Path, kept: int) -> None:
    """Leave the first ``kept`` direct steps (pooled over the SFT seeds), every one of them wrong."""
    for seed in SEEDS:
        path = work / "eval" / "sft" / f"seed{seed}" / "samples.jsonl"
        rows = []
        for text in path.read_text().splitlines():
            row = json.loads(text)
            step = row["split"] in calibration.ARITHMETIC_SPLITS and kept > 0
            kept -= step
            rows.append({**row, "steps_direct": int(step), "errors_direct": int(step)})
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_capacity_gap_not_measured_without_direct_steps(tmp_path):
    work = make_work(tmp_path)
    keep_direct_steps(work, 0)
    assert line(work)["capacity_gap"] == "not measured"


def test_capacity_gap_needs_enough_direct_steps_to_judge(tmp_path):
    # every kept direct step wrong: a gap as wide as it gets, judged only on enough steps
    work = make_work(tmp_path)
    keep_direct_steps(work, calibration.STUDENT_MIN_DIRECT_STEPS - 1)
    few = calibration.check_targets(calibration.build_calibration(work, SEEDS, "sft", "oracle_sft").frame)
    gap = next(target for target in few if target.name == "capacity_gap")
    assert gap.status == "not measured" and "too few direct steps" in gap.evidence
    keep_direct_steps(work, calibration.STUDENT_MIN_DIRECT_STEPS)
    assert line(work)["capacity_gap"] == "PASS"


def write_profile(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "config" / "profiles" / "ci.yaml").read_text())
    data.pop("ablations", None)  # a hand list replaces ci's derived one
    data["experiments"] = ["sft", "kd", "dcod", "oracle_sft"]
    data["calibration"] = {"pretrain_seeds": PRETRAIN_SEEDS, "steps_factor": 1.5}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_report_writes_table_targets_and_markdown(tmp_path):
    work = make_work(tmp_path, {("oracle_sft", 1): acc(60, 63, 40)})
    log = [{"step": s + 1, "loss": loss} for s, loss in enumerate([4.0, 4.0, 4.0, 4.0, 2.0, 2.0, 1.0, 1.0])]
    (work / "base_student_run").mkdir()
    (work / "base_student_run" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    out = tmp_path / "results" / "calibration.csv"
    args = argparse.Namespace(work=str(work), seeds="0,1", profile=str(write_profile(tmp_path)),
                              experiments=str(ROOT / "experiments"), out=str(out))
    calibration.write_calibration(args)
    frame = pd.read_csv(out)
    oracle_id = frame[(frame["model"] == "oracle_sft") & (frame["split"] == "id")].iloc[0]
    assert oracle_id["role"] == "oracle" and oracle_id["n_seeds"] == 2 and oracle_id["accuracy"] == pytest.approx(64.0)
    assert {"base_student_pretrain_seed1235", "base_student_pretrain_seed1236",
            "base_student_steps_x1.5"} <= set(frame["model"])
    targets = pd.read_csv(calibration.targets_path(out)).set_index("target")
    # the teacher-term target comes last, from the traces and the base student (absent here: not measured)
    assert list(targets.index) == [*calibration.TARGET_NAMES, calibration.TEACHER_TERM]
    assert targets.loc[calibration.TEACHER_TERM, "status"] == "not measured"
    assert targets.loc["oracle_helps", "status"] == "FAIL" and targets.loc["plateau", "status"] == "PASS"
    markdown = out.with_suffix(".md").read_text()
    assert "**FAIL**: student-style traces help much more" in markdown
    assert "+14.0, needs >= +15" in markdown and "largest deviation 4.0 points" in markdown
    # the ci profile's pre-training seed and steps; the loss over the 3rd and the 4th quarter of the steps
    assert "| base_student | 1234 | 12 | 2.0000 | 1.0000 | base_student_run/train_log.jsonl |" in markdown
    assert "| base_student_steps_x1.5 | 1234 | 18 |  |  | missing calibration/steps_x1.5/" in markdown
    # the checks read back from the written table agree with the report's
    again = {t.name: t.status for t in calibration.check_targets(frame)}
    assert again == targets["status"].drop(calibration.TEACHER_TERM).to_dict()


@pytest.mark.parametrize("changes, warned", [({}, False), ({("oracle_sft", 1): acc(60, 63, 40)}, True)])
def test_report_opens_with_the_failed_targets(tmp_path, changes, warned):
    """The generated report says first when the world misses a calibration target, naming it."""
    from dcod.reporting.paper import regime_warning

    work = make_work(tmp_path, changes)
    out = tmp_path / "results" / "calibration.csv"
    calibration.write_calibration(argparse.Namespace(work=str(work), seeds="0,1", profile=str(write_profile(tmp_path)),
                                                     experiments=str(ROOT / "experiments"), out=str(out)))
    text = " ".join(regime_warning(pd.read_csv(out)))
    assert ("Read this first" in text) == warned
    assert ("student-style traces help much more" in text) == warned
    assert ("every target" in text) == (not warned)
    assert regime_warning(None) == []


def test_a_base_student_without_an_id_result_is_not_measured_never_dropped(tmp_path):
    """Four base students, one evaluated without `id` (e.g. a split list that lacks it): the other three
    agree, but the target must not be judged on them alone."""
    work = make_work(tmp_path)
    folder = calibration.calibration_eval_dir(calibration.pretrain_seed_dir(work, 1237))
    write_samples(folder, acc(40, 50, 30))
    samples = folder / "samples.jsonl"
    samples.write_text("".join(l + "\n" for l in samples.read_text().splitlines() if '"split": "id"' not in l))
    result = line(work, pretrain_seeds=[*PRETRAIN_SEEDS, 1237])
    assert result["no_knife_edge"] == "not measured"
    assert statuses(line(work))["no_knife_edge"] == "PASS"  # the same world without it
