"""Weighted methods accumulated over micro-batches without a scoring pass (train.weighted_accumulation:
single_pass; docs/method.md, "Accumulation without a scoring pass") against the two-pass reference."""

import math
import tempfile

import pytest
import torch

from dcod.config import StudentConfig, TrainConfig
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.methods.iw_sft import IwSFTParams
from dcod.models import build_tiny_llama
from dcod.objectives import (dcod_exact_tempering, dcod_stream_diagnostics, dcod_stream_log_weights,
                             dcod_weights)
from dcod.training import Trainer

from conftest import EPS32, assert_gradients_close

TINY = StudentConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def traces(toy_tokenizer):
    from dcod.generation import SamplingParams
    from dcod.toy.teacher import ToyTeacher
    from dcod.toy.world import WorldConfig, build_world

    world = build_world(WorldConfig(n_train=8, n_validation=1, n_id=1, n_long=1, n_retention=1, n_pretrain=1,
                                    n_pretrain_reversal=1))
    prompts = [toy_tokenizer(r["question"])["input_ids"] for r in world["train"]]
    return [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "teacher_logprobs": g.logprobs,
             "topk_ids": g.topk_ids, "topk_logprobs": g.topk_logprobs}
            for g in ToyTeacher(toy_tokenizer).generate(prompts, SamplingParams(max_new_tokens=200,
                                                                                 top_k_logprobs=4, seed=3))]


def _trainer(tokenizer, traces, method, params, **train):
    cfg = TrainConfig(steps=3, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=10**6, trackers=[], **train)
    model = build_tiny_llama(TINY, tokenizer, seed=0)
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=8, seed=0, total_steps=3)
    cost = Cost()
    return Trainer(model, tokenizer, build_method(method, params, ctx, cost), cfg, tempfile.mkdtemp(), cost=cost,
                   seed=0, progress=False)


def _step(trainer, step=0):
    """The step's record, the gradients the optimiser stepped with, and how many forwards it took."""
    seen, optimiser_step, forward = {}, trainer.optimizer.step, trainer.model.forward
    forwards = []

    def recording(*args, **kwargs):
        seen.update({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()})
        return optimiser_step(*args, **kwargs)

    def counting(*args, **kwargs):
        forwards.append(1)
        return forward(*args, **kwargs)

    trainer.optimizer.step, trainer.model.forward = recording, counting
    try:
        record = trainer.train_step(step)
    finally:
        trainer.optimizer.step, trainer.model.forward = optimiser_step, forward
    return record, seen, len(forwards)


# Tolerance (as tests/training/test_training.py's accumulation test): each gradient entry and the loss are float32
# sums over the batch's N supervised tokens formed in another order, N eps of their scale; the one-pass
# path adds one float32 rescaling of the accumulated gradient per new shift and the final normaliser
# (a few eps more), and its float64 weights equal the two-pass ones to ~1e-15.


@pytest.mark.parametrize("method,params", [
    ("dcod", DCODParams(beta=2.0, clip=None)),  # fixed beta, no truncation: exact from the first step
    ("dcod", DCODParams(granularity="prefix", discount=0.9, beta=3.0, clip=None)),
    ("dcod", DCODParams(granularity="token", beta=1.0, reference="none", clip=None)),  # DFT-like weighting
    ("dcod", DCODParams(granularity="step", beta=0.5, clip=None)),  # step units gathered across micro-batches
    ("iw_sft", IwSFTParams(reference="teacher", normalize=True)),  # a global normaliser: exact
    ("iw_sft", IwSFTParams(reference="teacher")),  # each row's own weight: exact
])
def test_one_pass_is_exact_where_no_lag_is_needed(toy_tokenizer, traces, method, params):
    one = _trainer(toy_tokenizer, traces, method, params)
    four = _trainer(toy_tokenizer, traces, method, params, micro_batch_size=2)
    record_one, grads_one, _ = _step(one)
    record_four, grads_four, forwards = _step(four)
    assert forwards == 4  # no scoring pass
    n = record_one["tokens"]
    assert_gradients_close(grads_four, grads_one, rtol=n * EPS32)
    assert record_four["loss"] == pytest.approx(record_one["loss"], rel=n * EPS32, abs=0)
    if method == "dcod":
        assert record_four["lag_log_weight_bound"] == 0.0


@pytest.mark.parametrize("params", [DCODParams(), DCODParams(granularity="prefix", discount=0.9),
                                    DCODParams(granularity="token"), DCODParams(granularity="step"),
                                    DCODParams(beta="ess_floor")],
                         ids=["sequence", "prefix", "token", "step", "ess_floor"])
def test_one_pass_with_the_exact_lag_equals_the_two_pass_step(toy_tokenizer, traces, params):
    """Adaptive beta and truncation (the defaults): the first step has no lag and runs the two-pass
    path; given the (beta, L) this very batch yields (a lag equal to the exact values) the one-pass step
    is the two-pass step, with half the forwards."""
    two = _trainer(toy_tokenizer, traces, "dcod", params, micro_batch_size=2, weighted_accumulation="two_pass")
    record_two, grads_two, forwards_two = _step(two)
    assert forwards_two == 8
    first = _trainer(toy_tokenizer, traces, "dcod", params, micro_batch_size=2)
    assert not first.method.stream_ready()  # no lag yet: this step is the two-pass one
    assert _step(first)[2] == 8 and first.method.stream_ready()

    one = _trainer(toy_tokenizer, traces, "dcod", params, micro_batch_size=2)
    one.method.load_state(two.method.state())  # the exact (beta, L) of this batch at these weights
    record_one, grads_one, forwards_one = _step(one)
    assert forwards_one == 4
    n = record_two["tokens"]
    # beta x spread(s) ~ 1 at the ESS target, so the weights' float64 rounding is ~1e-15: N eps as above
    assert_gradients_close(grads_one, grads_two, rtol=n * EPS32)
    assert record_one["loss"] == pytest.approx(record_two["loss"], rel=n * EPS32, abs=0)
    assert record_one["lag_log_weight_bound"] <= 1e-9
    for key in ("beta", "ess_fraction", "clip_fraction"):
        assert record_one[key] == pytest.approx(record_two[key], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("params", [DCODParams(), DCODParams(granularity="prefix", discount=0.9)])
def test_a_stale_lag_stays_within_the_logged_bound(toy_tokenizer, traces, params):
    """A lag from other scores (here: beta halved, threshold lowered by 0.3): the weights differ from the
    exact ones by at most the logged 2 Delta in log space, so the loss (a sum of w l, l >= 0) lies within
    e^{+-2 Delta} of the two-pass loss (plus the N eps rounding of both)."""
    two = _trainer(toy_tokenizer, traces, "dcod", params, micro_batch_size=2, weighted_accumulation="two_pass")
    record_two, _, _ = _step(two)
    beta, log_clip = two.method.lag
    one = _trainer(toy_tokenizer, traces, "dcod", params, micro_batch_size=2)
    one.method.load_state({"lag": [beta / 2, log_clip - 0.3]})
    record_one = _step(one)[0]
    bound = record_one["lag_log_weight_bound"]
    assert bound > 0.3  # the threshold alone moved by 0.3: Delta >= 0.3 - (beta/2) x half the score range
    exact, approx = record_two["loss"], record_one["loss"]
    slack = record_two["tokens"] * EPS32
    assert exact * math.exp(-bound) * (1 - slack) <= approx <= exact * math.exp(bound) * (1 + slack)
    assert abs(approx - exact) > slack * exact  # the stale lag did change the step: not vacuous
    assert record_one["beta"] == beta / 2  # the diagnostics report the weights actually used
    assert one.method.lag == pytest.approx(dcod_exact_tempering(*_scores_of(one, traces), params.granularity,
                                                                  beta=None, ess_target=params.ess_target,
                                                                  beta_max=params.beta_max, clip=params.clip))


def _scores_of(trainer, traces):
    """The batch's DCOD scores at the trainer's initial weights (a fresh model with the same seed)."""
    fresh = _trainer(trainer.tokenizer, traces, "dcod", trainer.method.params)
    from dcod.methods.base import collate_for

    batch = collate_for(fresh.method, traces, trainer.tokenizer.pad_token_id)
    with torch.no_grad():
        scores = fresh.method.unit_scores(fresh._forward(batch), batch)
    return scores.values, batch["loss_mask"]


@pytest.mark.parametrize("granularity", ["sequence", "prefix"])
@pytest.mark.parametrize("clip", [None, 2.0])
def test_stream_weights_bound_on_random_scores(granularity, clip):
    """Objective level: normalised exp(min(beta~ s, L~)) vs dcod_weights, unit by unit within 2 Delta in
    log space, and equal (float64 rounding) when the lag is the exact (beta, L)."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 30, generator=generator) > 0.3
    ratios = torch.randn(6, 30, generator=generator) * 0.5
    from dcod.objectives import dcod_scores

    scores = dcod_scores(torch.where(mask, ratios, torch.zeros_like(ratios)), mask, granularity, 0.9)
    exact_weights, _ = dcod_weights(scores, mask, granularity, beta=None, ess_target=0.5, beta_max=50.0, clip=clip)
    exact = dcod_exact_tempering(scores, mask, granularity, beta=None, ess_target=0.5, beta_max=50.0, clip=clip)

    def normalised(lag):
        log_w = dcod_stream_log_weights(scores, mask, *lag)
        w = torch.exp(log_w - log_w[mask].max())
        return w * mask.sum() / w[mask].sum()

    # exp of float64 log-weights, normalised: relative rounding ~1e-15; the reference returns float32
    torch.testing.assert_close(normalised(exact).float(), exact_weights, rtol=4 * EPS32, atol=0)
    stale = (exact[0] * 0.7, None if exact[1] is None else exact[1] + 0.2)
    bound = dcod_stream_diagnostics(scores, mask, granularity, stale, exact)["lag_log_weight_bound"]
    gap = (normalised(stale)[mask].log() - exact_weights.double()[mask].log()).abs().max()
    assert 0 < float(gap) <= bound + 1e-6  # + the reference's float32 rounding of log w


def test_lag_survives_a_checkpoint(toy_tokenizer, traces):
    """The lagged (beta, L) is method state: JSON-safe, restored on resume (None for no truncation)."""
    import json

    trainer = _trainer(toy_tokenizer, traces, "dcod", DCODParams(), micro_batch_size=2)
    _step(trainer)
    state = json.loads(json.dumps(trainer.method.state(), allow_nan=False))
    other = _trainer(toy_tokenizer, traces, "dcod", DCODParams(), micro_batch_size=2)
    other.method.load_state(state)
    assert other.method.lag == trainer.method.lag and other.method.stream_ready()
    no_clip = _trainer(toy_tokenizer, traces, "dcod", DCODParams(clip=None), micro_batch_size=2)
    _step(no_clip)
    assert json.loads(json.dumps(no_clip.method.state(), allow_nan=False))["lag"][1] is None
