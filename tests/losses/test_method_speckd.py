"""SpecKD-style gating (dcod.methods.speckd, docs/method.md "speckd"): top-k KD only where the student's greedy
token is among the teacher's top-k, rejected tokens weighted β (0: masked)."""

import math
from pathlib import Path

import pytest
import torch

from dcod import objectives
from dcod.config import load_experiment
from dcod.methods import Needs, resolve
from dcod.methods.speckd import SpecKDParams, speckd_gate, speckd_loss, student_greedy_tokens

from test_methods_wiring import _same_step, _trainer  # noqa: F401
from method_checks import assert_refused
from tiny_training import traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "speckd" / "config.yaml"


def test_the_gate_by_hand():
    """Stored top-3 (in any order) with log-probs; a proposal is accepted when it is among the k most likely."""
    ids = torch.tensor([[[7, 2, 5], [1, 3, 4]]])
    logprobs = torch.log(torch.tensor([[[0.1, 0.6, 0.2], [0.5, 0.3, 0.1]]]))
    proposals = torch.tensor([[7, 9]])
    assert speckd_gate(proposals, ids, logprobs).tolist() == [[True, False]]
    assert speckd_gate(proposals, ids, logprobs, accept_top_k=2).tolist() == [[False, False]]  # 7 is third
    assert speckd_gate(torch.tensor([[2, 1]]), ids, logprobs, accept_top_k=1).tolist() == [[True, True]]
    with pytest.raises(ValueError, match="accept_top_k must be in \\[1, 3\\]"):
        speckd_gate(proposals, ids, logprobs, accept_top_k=4)


def _case(seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(2, 6, 12, generator=gen)).requires_grad_()
    teacher = torch.log_softmax(3 * torch.randn(2, 6, 12, generator=gen), -1)
    ids = teacher.topk(3, -1).indices
    return logits, ids, teacher.gather(-1, ids)


def test_accepted_tokens_get_kd_and_rejected_ones_nothing():
    logits, ids, top = _case()
    gate = (ids == logits.detach().argmax(-1, keepdim=True)).any(-1)
    assert 0 < int(gate.sum()) < gate.numel()  # the case has both kinds
    loss, returned_gate = speckd_loss(logits, ids, top)
    kd = objectives.kd_topk_loss(logits, ids, top)
    assert torch.equal(loss, torch.where(gate, kd, torch.zeros_like(kd))) and torch.equal(returned_gate, gate)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    (grad_kd,) = torch.autograd.grad(kd.sum(), logits)
    # the gate is detached: accepted positions get KD's gradient exactly, rejected ones none
    assert torch.equal(grad[gate], grad_kd[gate]) and (grad[~gate] == 0).all()


def test_a_gate_that_always_accepts_is_kd():
    logits, ids, top = _case(1)
    loss, _ = speckd_loss(logits, ids, top, rejected_weight=1.0)
    kd = objectives.kd_topk_loss(logits, ids, top)
    assert torch.equal(loss, kd)
    half, _ = speckd_loss(logits, ids, top, rejected_weight=0.25)
    gate = (ids == logits.detach().argmax(-1, keepdim=True)).any(-1)
    assert torch.equal(half, torch.where(gate, kd, 0.25 * kd))


def test_the_chunked_head_gives_the_same_proposals_and_loss():
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 5, 8, generator=gen, requires_grad=True)
    weight = torch.randn(30, 8, generator=gen)
    teacher = torch.log_softmax(torch.randn(2, 5, 30, generator=gen), -1)
    ids = teacher.topk(4, -1).indices
    top = teacher.gather(-1, ids)
    head = objectives.ChunkedLMHead(hidden, weight, chunk_tokens=3)
    full_logits = hidden @ weight.t()
    assert torch.equal(student_greedy_tokens(head), full_logits.argmax(-1))
    (chunked, gate_chunked), (full, gate_full) = speckd_loss(head, ids, top), speckd_loss(full_logits, ids, top)
    assert torch.allclose(chunked, full, atol=1e-6) and torch.equal(gate_chunked, gate_full)


def test_the_experiment_resolves_to_the_hard_gate():
    experiment = load_experiment(EXPERIMENT)
    cls, params = resolve(experiment)
    assert cls.name == "speckd" and params == SpecKDParams() and experiment.table == "prior"
    assert (params.accept_top_k, params.rejected_weight) == (None, 0.0)
    assert cls.needs(params) == Needs()
    for bad_params, key in (({"accept_top_k": 0}, "accept_top_k"), ({"rejected_weight": 2}, "rejected_weight")):
        assert_refused("speckd", bad_params, rf"params\.{key}")


def test_a_training_step(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """Always accepting is kd's step exactly; the hard gate trains on fewer tokens' KD, so a smaller loss."""
    _same_step(_trainer(tmp_path / "all", toy_tokenizer, traces, "speckd", SpecKDParams(rejected_weight=1.0)),
               _trainer(tmp_path / "kd", toy_tokenizer, traces, "kd"))
    gated_trainer = _trainer(tmp_path / "gate", toy_tokenizer, traces, "speckd", SpecKDParams())
    gated = gated_trainer.train_step(0)
    kd = _trainer(tmp_path / "kd2", toy_tokenizer, traces, "kd").train_step(0)
    assert math.isfinite(gated["loss"]) and 0 <= gated["loss"] < kd["loss"]
    rate = gated_trainer.method.run_summary()["speckd_acceptance_rate"]  # the paper's TAR, in run.json
    assert 0 <= rate < 1 and (rate > 0) == (gated["loss"] > 0)
