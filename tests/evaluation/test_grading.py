"""The grader as a table of literal cases, plus the worker pool's timeout/crash paths and grade_file."""

from __future__ import annotations

import json
import os
import time

import pytest

from dcod import grading
from dcod.grading import GRADER_INFO, MAX_PREDICTION_CHARS, GradeResult, grade, grade_file, last_boxed, strip_thinking

# (gold, prediction, correct, status). Golds are what the benchmark normalisers produce.
CASES = [
    # equivalent forms
    ("\\frac{1}{2}", "\\boxed{0.5}", True, "ok"),
    ("\\frac{1}{2}", "\\boxed{1/2}", True, "ok"),
    ("0.5", "\\boxed{\\frac12}", True, "ok"),
    ("025", "\\boxed{25}", True, "ok"),  # AIME golds keep their leading zeros
    ("25", "\\boxed{025}", True, "ok"),
    ("27", "\\boxed{27.0}", True, "ok"),
    ("27.0", "\\boxed{27}", True, "ok"),
    ("1000", "\\boxed{1,000}", True, "ok"),  # thousands separators are accepted
    ("1000", "\\boxed{1{,}000}", True, "ok"),
    ("(0,1]", "\\boxed{(0,1]}", True, "ok"),
    ("(1,2)", "\\boxed{(1,2)}", True, "ok"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}", True, "ok"),
    ("\\frac{\\sqrt{3}}{2}", "\\boxed{\\frac{\\sqrt3}{2}}", True, "ok"),
    ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}", True, "ok"),
    ("x^2+2x+1", "\\boxed{(x+1)^2}", True, "ok"),
    ("x=2", "\\boxed{2}", True, "ok"),
    ("90^\\circ", "\\boxed{90}", True, "ok"),
    ("10\\%", "\\boxed{10}", True, "ok"),
    ("\\$18.90", "\\boxed{18.90}", True, "ok"),
    ("\\text{Evelyn}", "\\boxed{Evelyn}", True, "ok"),
    ("\\text{(C)}", "\\boxed{C}", True, "ok"),
    ("69, 84", "\\boxed{84, 69}", True, "ok"),  # OlympiadBench multi-answers: a set, any order
    ("\\{1,2\\}", "\\boxed{\\{2,1\\}}", True, "ok"),
    ("5", "$\\boxed{5}$", True, "ok"),
    ("5", "\\boxed {5}", True, "ok"),  # a space before the brace (math-verify alone misses it)
    # wrong answers
    ("(0,1]", "\\boxed{(0,1)}", False, "ok"),
    ("(1,2)", "\\boxed{(2,1)}", False, "ok"),
    ("5", "\\boxed{6}", False, "ok"),
    ("1000", "\\boxed{1,001}", False, "ok"),
    ("\\frac12", "\\boxed{0.51}", False, "ok"),
    ("69, 84", "\\boxed{69}", False, "ok"),  # one of two answers is not enough
    ("\\text{(C)}", "\\boxed{D}", False, "ok"),
    # no box: math-verify's fallback extraction (answer anchors, then the last number)
    ("5", "The answer is 5.", True, "ok"),
    ("5", "Final Answer: $5$", True, "ok"),
    ("5", "so we get 3 apples, then 5", True, "ok"),
    ("5", "5 apples, so 3", False, "ok"),  # the last number is taken
    ("5", "no numbers here", False, "no_answer"),
    ("5", "", False, "no_answer"),
    ("5", "\\boxed{}", False, "no_answer"),
    # several boxes: the last complete one counts
    ("5", "\\boxed{3} then \\boxed{5}", True, "ok"),
    ("5", "\\boxed{5} then \\boxed{3}", False, "ok"),
    ("5", "\\boxed{5} then \\boxed{", True, "ok"),  # the unclosed last box is not complete
    # thinking is never graded
    ("5", "<think>\\boxed{5}</think> \\boxed{4}", False, "ok"),
    ("4", "<think>try \\boxed{5}</think>The answer is \\boxed{4}", True, "ok"),
    ("5", "reasoning \\boxed{5} </think> final \\boxed{4}", False, "ok"),  # opener was in the prompt
    ("5", "<think> still thinking \\boxed{5}", False, "no_answer"),  # thinking never finished
    # golds math-verify cannot turn into an expression
    ("", "\\boxed{5}", False, "unparseable_gold"),
    ("\\frac{", "\\boxed{5}", False, "unparseable_gold"),
    ("\\text{}", "\\boxed{5}", False, "unparseable_gold"),
    # other input types
    (27.0, b"\\boxed{27}", True, "ok"),
    ("5", b"\xff\\boxed{5}\xfe", True, "ok"),  # invalid UTF-8 is replaced, not fatal
    ("5", None, False, "no_answer"),
    ("5", "\\boxed{5\ud800}", False, "ok"),  # a lone surrogate becomes "?": "5?" is not 5
]


@pytest.fixture(scope="module")
def case_results() -> list[GradeResult]:
    """All table cases graded in one call (one pool), as the evaluation does."""
    return grade([case[0] for case in CASES], [case[1] for case in CASES], timeout=10.0, workers=2)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[repr(case[1])[:40] for case in CASES])
def test_case(case_results, index):
    gold, prediction, correct, status = CASES[index]
    result = case_results[index]
    assert (result.correct, result.status) == (correct, status), (gold, prediction, result)


def test_several_boxes_report_the_graded_one(case_results):
    index = CASES.index(("5", "\\boxed{5} then \\boxed{3}", False, "ok"))
    assert case_results[index].extracted == "3"


@pytest.mark.parametrize("text, boxed", [
    ("a \\boxed{1} b \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not grouping
    ("\\boxed{\\{1,2\\}", None),
    ("\\boxed{3} \\boxed{4", "3"),
    ("\\boxed{\\boxed{7}}", "7"),  # nested boxes: the last one to start
    ("\\boxed", None),
    ("no box", None),
])
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


def test_strip_thinking():
    assert strip_thinking("<think>a</think>b<think>c</think>d") == "d"
    assert strip_thinking("a</think>b") == "b"
    assert strip_thinking("a<think>b") == "a"
    assert strip_thinking("plain") == "plain"


def test_long_predictions_keep_their_tail():
    filler = "words " * (MAX_PREDICTION_CHARS // 3)
    results = grade(["5", "5"], ["\\boxed{5}" + filler, filler + "\\boxed{5}"], timeout=10.0)
    assert [result.correct for result in results] == [False, True]


# --- the worker pool: a hang is killed, counted as timeout, and the pool goes on --------------------

def hang_or_crash_on_marker(gold_text, prediction_text, boxed):
    """Test hook (runs in the workers): hang on HANG, die on CRASH, raise on RAISE, else grade."""
    if boxed == "HANG":
        time.sleep(3600)
    if boxed == "CRASH":
        os._exit(3)
    if boxed == "RAISE":
        raise RuntimeError("boom")
    return grading.grade_prepared(gold_text, prediction_text, boxed)


def test_hang_is_killed_counted_as_timeout_and_the_pool_goes_on():
    predictions = ["\\boxed{5}", "\\boxed{HANG}", "\\boxed{5}", "\\boxed{HANG}", "\\boxed{CRASH}",
                   "\\boxed{RAISE}"] + ["\\boxed{5}"] * 10
    started = time.monotonic()
    results = grade(["5"] * len(predictions), predictions, timeout=1.0, workers=2,
                    _item_grader=hang_or_crash_on_marker)
    elapsed = time.monotonic() - started
    statuses = [result.status for result in results]
    assert statuses[:6] == ["ok", "timeout", "ok", "timeout", "error", "error"]
    assert all(result.correct for result in results[6:]) and statuses[6:] == ["ok"] * 10
    assert not any(results[index].correct for index in (1, 3, 4, 5))
    assert elapsed < 10, elapsed  # two 1 s hangs, not an hour


def test_single_worker_recovers_from_consecutive_hangs():
    predictions = ["\\boxed{HANG}", "\\boxed{HANG}", "\\boxed{5}"]
    results = grade(["5"] * 3, predictions, timeout=0.5, workers=1, _item_grader=hang_or_crash_on_marker)
    assert [result.status for result in results] == ["timeout", "timeout", "ok"]


def test_grade_checks_its_arguments():
    with pytest.raises(ValueError, match="2 golds but 1 predictions"):
        grade(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="timeout"):
        grade(["1"], ["1"], timeout=0)
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds in .*, got nan"):
        grade(["1"], ["1"], timeout=float("nan"))  # passes a `<= 0` check, and no deadline would expire
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        grade(["1"], ["1"], workers=0)
    assert grade([], []) == []


# --- grade_file ---------------------------------------------------------------------------------

def test_grade_file_round_trip(tmp_path):
    rows = [
        {"id": "a", "gold": "\\frac{1}{2}", "prediction": "so \\boxed{0.5}", "sample": 0},
        {"id": "b", "gold": "7", "prediction": "\\boxed{8}", "sample": 1},
        {"id": "c", "gold": "", "prediction": "\\boxed{8}", "sample": 2},
        {"id": "d", "gold": "7", "prediction": "nothing", "sample": 3},
    ]
    in_path, out_path = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    in_path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n", encoding="utf-8")
    summary = grade_file(in_path, out_path, timeout=10.0, workers=2)
    written = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
    assert [row["correct"] for row in written] == [True, False, False, False]
    assert [row["status"] for row in written] == ["ok", "ok", "unparseable_gold", "no_answer"]
    assert [row["sample"] for row in written] == [0, 1, 2, 3]  # other fields kept, order kept
    assert summary["n"] == 4 and summary["accuracy"] == 0.25
    assert summary["status_counts"] == {"ok": 2, "timeout": 0, "unparseable_gold": 1, "no_answer": 1, "error": 0}
    assert summary["unparseable_gold"] == ["c"]
    assert summary["grader"]["timeout_s"] == 10.0
    assert summary["grader"]["math_verify_version"] == GRADER_INFO["math_verify_version"] == "0.9.0"
    assert not (tmp_path / "out.jsonl.tmp").exists()


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "line 2 is not valid JSON"),
    (json.dumps({"gold": "1"}), "line 2 has no 'prediction' field"),
    (json.dumps({"prediction": "1"}), "line 2 has no 'gold' field"),
    ("[1, 2]", "line 2 is not a JSON object"),
])
def test_grade_file_names_the_malformed_line(tmp_path, bad_line, message):
    in_path, out_path = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    in_path.write_text(json.dumps({"gold": "1", "prediction": "1"}) + "\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as error:
        grade_file(in_path, out_path)
    assert str(error.value).startswith(f"{in_path}: line 2 ")
    assert not out_path.exists()


def test_main_prints_the_summary(tmp_path, capsys):
    in_path, out_path = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    in_path.write_text(json.dumps({"gold": "2", "prediction": "\\boxed{2}"}) + "\n", encoding="utf-8")
    assert grading.main([str(in_path), str(out_path), "--timeout", "10", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


def test_grader_info_records_the_rules():
    assert GRADER_INFO["grader"] == "math-verify"
    assert "last" in GRADER_INFO["several_boxes"]
    assert GRADER_INFO["max_prediction_chars"] == MAX_PREDICTION_CHARS


# --- rule 7: the integer shortcut never changes a grade ----------------------------------------------

def test_integer_shortcut_agrees_with_math_verify():
    import random

    rng = random.Random(0)
    pairs = []
    for _ in range(600):
        n = rng.choice([rng.randint(-999, 999), rng.randint(0, 10**7), rng.randint(-10**30, 10**30)])
        pairs += [(n, n), (n, n + rng.choice([-1, 1])), (n, -n), (n, n * 10)]
    checked = 0
    for gold, answer in pairs:
        gold_text = grading.prepare_gold(str(gold))
        fast = grading._integer_fast_path(gold_text, str(answer))
        assert fast is not None, (gold, answer)
        slow = grading.grade_prepared(gold_text, *grading.prepare_prediction(f"\\boxed{{{answer}}}"))
        assert (fast.correct, fast.status, fast.extracted) == slow, (gold, answer)
        checked += 1
    assert checked == 2400
    # not canonical: left to math-verify
    for gold, boxed in [("7", "007"), ("0", "-0"), ("1000", "1,000"), ("3", "3.0"), ("3", " 3"), ("x", "3"),
                        ("$3$", None)]:
        assert grading._integer_fast_path(grading.prepare_gold(gold), boxed) is None
    # and through grade(): a mixed list keeps its order, shortcut items included
    results = grade(["12", "12", "\\frac{1}{2}"], ["\\boxed{12}", "\\boxed{012}", "\\boxed{0.5}"], workers=1)
    assert [result.correct for result in results] == [True, True, True]
