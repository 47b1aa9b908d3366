"""The report's trace examples (dcod/reporting/traces.py): the problems shown are exactly those the stated
rule selects from samples.jsonl, each step is marked as the toy world's analysis grades it, and the
teacher's uncertain tokens are the ones below the threshold. On a small fake work folder of the ci profile."""

import json
import math
import random
import re

import pandas as pd
import pytest

from dcod.reporting import traces

N = 24  # problems per split


def record(split, i):
    """A two-step toy problem: start + i, then * 2 (the world's record layout: ops, question, gold)."""
    start = 10 + i
    return {"id": f"{split}-{i:05d}", "task": "arith", "question": f"Q:{start}+{i}*2\nA:", "k": 2,
            "gold": str((start + i) * 2), "start": start, "ops": [["+", i], ["*", 2]]}


def prediction(rec, right: bool) -> str:
    """A right trace, or one whose second step is wrong (first step right, in the direct style)."""
    a, (_, b), (_, c) = rec["start"], rec["ops"][0], rec["ops"][1]
    first = a + b
    second = first * c if right else first * c + 1
    return f"{a}+{b}={first};{first}*{c}={second};\\boxed{{{second}}}"


# which model is right on problem i: chosen so that both disagreement directions and joint failures occur
RIGHT = {"teacher": lambda i: True, "base_student": lambda i: i % 4 == 0, "sft": lambda i: i % 2 == 0,
         "dcod": lambda i: i % 3 == 0}


def write_work(root, shuffle_seed=0):
    work = root / "work" / "ci"
    (work / "world").mkdir(parents=True)
    folders = {"teacher": "eval/teacher", "base_student": "eval/base_student/seed0", "sft": "eval/sft/seed0",
               "dcod": "eval/dcod/seed0"}
    rows = {name: [] for name in folders}
    for split in ("validation", "id", "long"):
        records = [record(split, i) for i in range(N)]
        (work / "world" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        for name in folders:
            for i, rec in enumerate(records):
                right = RIGHT[name](i)
                rows[name].append({"id": rec["id"], "split": split, "task": "arith", "k": 2, "gold": rec["gold"],
                                   "prediction": prediction(rec, right), "correct": right, "status": "ok",
                                   "finish_reason": "stop", "num_tokens": 20, "a_field_added_later": [1, 2]})
    for name, folder in folders.items():
        random.Random(shuffle_seed).shuffle(rows[name])  # the rule orders by id, not by file order
        (work / folder).mkdir(parents=True)
        (work / folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[name]))
    return work


def expected_ids(split):
    """The rule, written out independently: first 3 disagreements, then first 2 joint failures, by id."""
    disagree = [i for i in range(N) if RIGHT["dcod"](i) != RIGHT["sft"](i)][:3]
    both = [i for i in range(N) if not RIGHT["dcod"](i) and not RIGHT["sft"](i)][:2]
    return [f"{split}-{i:05d}" for i in disagree + both]


def shown_ids(lines, split):
    text = "\n".join(lines)
    part = text.split(f"### Traces on `{split}`")[1].split("\n### ")[0]
    return re.findall(r"^#### `([^`]+)`", part, flags=re.M)


def test_shown_traces_are_the_ones_the_rule_selects(tmp_path, ci_profile):
    work = write_work(tmp_path)
    lines = traces.traces_section(ci_profile, work)
    text = "\n".join(lines)
    assert "## Trace examples" in text and "first 3 on which exactly one of the two is correct" in text
    for split in ("id", "long"):
        assert shown_ids(lines, split) == expected_ids(split)
        subject = traces.read_sample_rows(work / "eval/dcod/seed0/samples.jsonl")
        baseline = traces.read_sample_rows(work / "eval/sft/seed0/samples.jsonl")
        assert [i for i, _ in traces.select_examples(subject, baseline, split)] == expected_ids(split)
    assert "Traces on `validation`" not in text  # the tuning split judges no claim: no examples


def test_each_model_row_marks_steps_as_graded(tmp_path, ci_profile):
    work = write_work(tmp_path)
    text = "\n".join(traces.traces_section(ci_profile, work))
    # id-00001: dcod wrong, sft wrong -> not a disagreement; id-00002: sft right, dcod wrong
    block = text.split("#### `id-00002`")[1].split("####")[0]
    assert "`dcod` wrong, `sft` right" in block
    rows = {line.split("|")[1].strip(): line for line in block.splitlines() if line.startswith("| ")}
    assert "first wrong" not in rows["sft (seed 0)"] and rows["sft (seed 0)"].rstrip().endswith("| none |")
    dcod = rows["dcod (seed 0)"]
    assert "`12+2=14;` direct ✓" in dcod and "**`14*2=29;` direct ✗ ← first wrong**" in dcod
    assert dcod.rstrip().endswith("| step 2 (direct) |") and "| `29` | wrong (ok) |" in dcod
    assert "Question: `Q:12+2*2 ↵ A:` · gold: `28`" in block


def test_teacher_uncertainty_marks_tokens_below_the_threshold(tmp_path, ci_profile):
    work = write_work(tmp_path)
    (work / "traces").mkdir()
    texts = {"train-00002": "1+2=3;\\boxed{3}", "train-00000": "5*2=10;\\boxed{10}", "train-00001": "7;\\boxed{7}"}
    logprobs = {name: [0.0] * (len(text) + 1) for name, text in texts.items()}  # + end-of-sequence token
    logprobs["train-00000"][4] = math.log(0.5)  # the '1' after '5*2=': a style choice
    logprobs["train-00000"][2] = math.log(0.95)  # above the threshold: not marked
    logprobs["train-00002"][0] = math.log(0.2)
    pd.DataFrame([{"id": name, "text": text, "completion_ids": list(range(len(text) + 1)),
                   "teacher_logprobs": logprobs[name]} for name, text in texts.items()]).to_parquet(
        work / "traces" / "train.parquet")
    text = "\n".join(traces.traces_section(ci_profile, work))
    part = text.split("### Where the teacher was uncertain")[1]
    assert "2 of 46 completion tokens" in part
    # id order (train-00000 first), train-00001 has no uncertain token: skipped
    assert re.findall(r"^`(train-\d+)`", part, flags=re.M) == ["train-00000", "train-00002"]
    assert "```\n5*2=10;\\boxed{10}\n    ^\n```" in part and "'1' at 4 (p = 0.50)" in part


def test_missing_samples_name_the_file(tmp_path, ci_profile):
    work = write_work(tmp_path)
    (work / "eval/sft/seed0/samples.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"eval/sft/seed0/samples.jsonl"):
        traces.traces_section(ci_profile, work)


def test_absent_work_folder_is_stated(tmp_path, ci_profile):
    lines = traces.traces_section(ci_profile, tmp_path / "nowhere")
    assert any("Not produced" in line and "nowhere" in line for line in lines)


def test_the_generated_report_carries_the_section(tmp_path, ci_profile):
    """paper.write_report calls traces_section with the report's --work folder."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_reporting import build_all, make_work

    work = make_work(tmp_path)
    (work / "world").mkdir()
    text = build_all(tmp_path, work, figures=False)
    assert "## Trace examples" in text
    subject = traces.read_sample_rows(work / "eval/dcod/seed0/samples.jsonl")
    baseline = traces.read_sample_rows(work / "eval/sft/seed0/samples.jsonl")
    for split in ("id", "long"):
        part = text.split(f"### Traces on `{split}`")[1].split("\n### ")[0].split("\n## ")[0]
        assert re.findall(r"^#### `([^`]+)`", part, flags=re.M) == \
            [i for i, _ in traces.select_examples(subject, baseline, split)]
