"""The measures the claims need (docs/claims.md, "What the claims measure"): direct steps counted at branch
points only, the step hazard of sampled traces, and majority vote − mean sample accuracy; with the Table 1
columns and the capacity-gap target that read them. Every trace below is written by hand: 85 +4 *6 +23
(89, 534, 557); ``85+4=89`` reads the same in both styles (no branch), ``89*6`` and ``534+23`` do not."""

import math

import pandas as pd
import pytest

from dcod import evaluation
from dcod.generation import Generation
from dcod.reporting import calibration, tables

RECORD = {"id": "id-0", "split": "id", "task": "arith", "k": 3, "start": 85, "ops": [["+", 4], ["*", 6], ["+", 23]],
          "question": "85+4*6+23", "gold": "557"}
DIRECT = "85+4=89;89*6=534;534+23=557;\\boxed{557}"
MIXED = "85+4=89;89*6=80*6+9*6=480+54=534;534+23=557;\\boxed{557}"
WRONG_SECOND = "85+4=89;89*6=535;535+23=558;\\boxed{558}"
TRUNCATED = "85+4=89;89*6=5"


def test_direct_steps_are_counted_at_branch_points_only():
    direct = evaluation._step_stats(RECORD, DIRECT)
    assert direct["steps_direct"] == 3 and direct["steps_direct_branch"] == 2  # 85+4 has no style choice
    mixed = evaluation._step_stats(RECORD, MIXED)
    assert (mixed["steps_direct"], mixed["steps_direct_branch"], mixed["steps_decomposed"]) == (2, 1, 1)
    wrong = evaluation._step_stats(RECORD, WRONG_SECOND)
    assert wrong["errors_direct_branch"] == 1 and wrong["errors_direct"] == 1  # 535+23=558 is locally right
    assert evaluation._step_stats({"task": "reverse"}, "x") == {}
    # per split: 3 direct at branch points of 3 + 1 decomposed (the unbranched 85+4 steps do not count)
    rows = [{"split": "id", "correct": True, "status": "ok", "finish_reason": "stop", "num_tokens": 1,
             **evaluation._step_stats(RECORD, text)} for text in (DIRECT, MIXED)]
    summary = evaluation.summarise(rows).iloc[0]
    assert summary["direct_branch_fraction"] == pytest.approx(3 / 4)
    assert summary["direct_step_fraction"] == pytest.approx(5 / 6)
    metrics = pd.DataFrame([summary])
    assert tables.direct_branch_fraction(metrics) == pytest.approx(3 / 4)
    assert math.isnan(tables.direct_branch_fraction(metrics.drop(columns=["steps_direct_branch"])))


@pytest.mark.parametrize("text, at_risk, errors", [
    (DIRECT, [1, 1, 1], [0, 0, 0]),
    (WRONG_SECOND, [1, 1, 0], [0, 1, 0]),  # step 3 follows a wrong step: not at risk
    (TRUNCATED, [1, 1, 0], [0, 1, 0]),  # a truncated step is wrong
    ("85+4=89;\\boxed{89}", [1, 1, 0], [0, 1, 0]),  # a missing step is wrong
    ("85+4=90;90*6=540;540+23=563;\\boxed{563}", [1, 0, 0], [1, 0, 0]),
])
def test_step_hazard_counts_of_one_trace(text, at_risk, errors):
    assert evaluation.step_hazard_counts(RECORD, text) == (at_risk, errors)


def test_step_hazard_pools_problems_and_averages_qualifying_positions():
    # position 1: 40 at risk, 4 errors; position 2: 36 at risk, 9 errors; position 3: 10 at risk (< 20: left out)
    frame = pd.DataFrame({"hazard_at_risk": ["20;18;5", "20;18;5", ""], "hazard_errors": ["2;4;5", "2;5;0", ""]})
    assert tables.step_hazard(frame) == pytest.approx((4 / 40 + 9 / 36) / 2)
    assert math.isnan(tables.step_hazard(pd.DataFrame({"agreement": [1.0]})))  # an older stability.csv


class ByteTokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode())}


class SampledBackend:
    """Returns the listed completions, in order, as the samples of the one prompt."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, prompts, params, progress=False):
        return [Generation(0, list(prompts[0]), list(t.encode()), t, [0.0] * len(t), "stop") for t in self.texts]


def test_stability_rows_record_the_vote_and_the_hazard(monkeypatch):
    monkeypatch.setattr(evaluation, "encode_prompt", lambda tokenizer, question: tokenizer(question)["input_ids"])
    texts = [WRONG_SECOND, WRONG_SECOND, DIRECT, TRUNCATED]  # the vote picks 558 (wrong); one of 4 is right
    row = evaluation.stability_rows(SampledBackend(texts), ByteTokenizer(), [RECORD], samples=4, temperature=1.0,
                                    max_new_tokens=64, timeout=5.0, workers=1, seed=0)[0]
    assert row["sample_accuracy"] == 0.25 and row["majority_accuracy"] == 0.0
    assert row["agreement"] == 0.5
    assert (row["hazard_at_risk"], row["hazard_errors"]) == ("4;4;1", "0;3;0")
    right = evaluation.stability_rows(SampledBackend([DIRECT, DIRECT, WRONG_SECOND, TRUNCATED]), ByteTokenizer(),
                                      [RECORD], samples=4, temperature=1.0, max_new_tokens=64, timeout=5.0,
                                      workers=1, seed=0)[0]
    assert right["majority_accuracy"] == 1.0 and right["sample_accuracy"] == 0.5
    frame = pd.DataFrame([row, right])
    assert tables.vote_gain(frame) == pytest.approx(((0.0 - 0.25) + (1.0 - 0.5)) / 2)


def test_capacity_gap_reads_direct_steps_at_branch_points_when_counted():
    def frame(branch):
        row = {"model": "sft", "role": "baseline", "split": "id", "steps_direct": 100, "errors_direct": 10,
               "steps_decomposed": 100, "errors_decomposed": 4}
        return pd.DataFrame([{**row, **branch}])

    # over all 100 direct steps the error rate is 0.10; over the 40 at branch points it is 10/40 = 0.25
    counted = calibration.student_target(frame({"steps_direct_branch": 40, "errors_direct_branch": 10}))
    assert "0.2500 over 40 direct steps at branch points" in counted.evidence
    older = calibration.student_target(frame({}))
    assert "0.1000 over 100 steps" in older.evidence
