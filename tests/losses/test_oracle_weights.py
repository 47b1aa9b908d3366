"""The reweighting ceiling (docs/claims.md, "The reweighting ceiling"): which traces it keeps, its weights,
and that it trains through the one loop like every method."""

import pytest
import torch

from dcod.methods import Cost, StepContext, build_method, get_method
from dcod.toy.world import direct_at_branch, render_step, writes_direct_at_branch


@pytest.mark.parametrize("step,expected", [
    ("85*6=510", True),  # direct where the decomposed form differs: a branch point
    (render_step(85, "*", 6, "decomposed"), False),  # the decomposed form itself
    ("5*6=30", False),  # one place-value part: both styles write it so, no choice
    ("85+4=89", False),  # a one-digit operand: no choice
    ("85+38=123", True),
    ("85+30=115", False),  # a round operand: no choice
    ("85+38=85+30+8=115+8=123", False),
    ("garbage", False),
])
def test_direct_at_branch(step, expected):
    assert direct_at_branch(step) is expected


def test_a_trace_is_dropped_when_any_step_is_direct_at_a_branch_point():
    assert writes_direct_at_branch("55*3=165;165+67=232;\\boxed{232}")
    assert not writes_direct_at_branch("55*3=50*3+5*3=150+15=165;165+4=169;\\boxed{169}")
    assert not writes_direct_at_branch("\\boxed{7183}")  # reversal: no steps


def _method(toy_tokenizer, completions):
    traces = [{"prompt_ids": toy_tokenizer("Q:1+1\nA:")["input_ids"],
               "completion_ids": toy_tokenizer(text, add_special_tokens=False)["input_ids"],
               "teacher_logprobs": [0.0] * len(toy_tokenizer(text, add_special_tokens=False)["input_ids"])}
              for text in completions]
    ctx = StepContext(tokenizer=toy_tokenizer, traces=traces, batch_size=len(traces), seed=0)
    cls = get_method("oracle_weights")
    return build_method("oracle_weights", cls.Params(), ctx, Cost()), traces


def test_weights_keep_student_style_traces_at_sft_scale(toy_tokenizer):
    kept, dropped = "55*3=50*3+5*3=150+15=165;\\boxed{165}", "55*3=165;\\boxed{165}"
    method, traces = _method(toy_tokenizer, [kept, dropped, kept])
    assert get_method("oracle_weights").needs(method.params).oracle_knowledge
    batch = {"loss_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)}
    method.extra_inputs(batch, traces)
    assert batch["keep"].tolist() == [1.0, 0.0, 1.0]
    scores = method.unit_scores(None, batch)
    weights, diagnostics = method.weights(scores.values, batch["loss_mask"])
    # 6 supervised tokens, 4 of them in kept rows: each kept token weighs 6/4, the dropped row 0
    expected = torch.tensor([[1.5, 1.5, 1.5, 0.0], [0.0, 0.0, 0.0, 0.0], [1.5, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(weights, expected)
    assert weights[batch["loss_mask"]].mean() == pytest.approx(1.0)
    assert diagnostics["kept_fraction"] == pytest.approx(2 / 3)


def test_a_batch_without_a_kept_trace_trains_nothing(toy_tokenizer):
    method, traces = _method(toy_tokenizer, ["55*3=165;\\boxed{165}"] * 2)
    batch = {"loss_mask": torch.ones(2, 3, dtype=torch.bool)}
    method.extra_inputs(batch, traces)
    weights, diagnostics = method.weights(method.unit_scores(None, batch).values, batch["loss_mask"])
    assert torch.equal(weights, torch.zeros(2, 3)) and diagnostics["kept_fraction"] == 0.0
