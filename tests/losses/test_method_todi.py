"""ToDi (dcod.methods.todi, docs/method.md "todi"): per-entry forward/reverse KL mix, weight σ(log p − log q)
detached, over the stored teacher top-k plus a tail bucket, mixed with the NLL."""

import math
from pathlib import Path

import pytest
import torch

from dcod import objectives
from dcod.config import load_experiment
from dcod.methods import Needs, resolve
from dcod.methods.todi import ToDiParams, todi_divergence, todi_topk_loss

from test_methods_wiring import _trainer  # noqa: F401
from method_checks import assert_refused, assert_same_loss, completed_teacher
from tiny_training import traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "todi" / "config.yaml"


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_a_hand_computed_pair_of_buckets():
    p, q = [0.8, 0.2], [0.5, 0.5]
    expected = 0.0
    for pv, qv in zip(p, q):
        w = _sigmoid(math.log(pv / qv))
        expected += w * pv * math.log(pv / qv) + (1 - w) * qv * math.log(qv / pv)
    ours = todi_divergence(torch.tensor(p, dtype=torch.float64).log(), torch.tensor(q, dtype=torch.float64).log())
    assert ours.item() == pytest.approx(expected, rel=1e-12)


def test_equal_distributions_give_0_and_no_gradient():
    student = torch.log_softmax(torch.randn(4, 7, dtype=torch.float64), -1).requires_grad_()
    value = todi_divergence(student.detach().clone(), student)
    (grad,) = torch.autograd.grad(value.sum(), student)
    assert torch.allclose(value, torch.zeros(4, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(grad, torch.zeros_like(grad), atol=1e-15)


def test_the_weight_is_detached():
    """With the weight constant, ∂/∂ log q_v = −w_v p_v + (1 − w_v) q_v (log q_v − log p_v + 1), then the
    log-softmax chain: ∂/∂z_u = g_u − q_u Σ_v g_v. A weight left in the graph would add σ' terms."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, generator=gen, dtype=torch.float64).requires_grad_()
    teacher = torch.log_softmax(torch.randn(3, 6, generator=gen, dtype=torch.float64), -1)
    (grad,) = torch.autograd.grad(todi_divergence(teacher, torch.log_softmax(logits, -1)).sum(), logits)
    log_q = torch.log_softmax(logits.detach(), -1)
    q, p = log_q.exp(), teacher.exp()
    w = torch.sigmoid(teacher - log_q)
    g = -w * p + (1 - w) * q * (log_q - teacher + 1)
    assert torch.allclose(grad, g - q * g.sum(-1, keepdim=True), atol=1e-12)


def _released(logits, teacher_logits):
    """Re-derived (read, not copied) from the authors' released code, github.com/jungseongryong/ToDi,
    code/criterions/various_divergence.py, compute_ToDi (temperature 1): q, p the softmaxes; weights
    sigmoid(log p − log q) and sigmoid(log q − log p), detached; terms w_p p (log p − log q) and
    w_q q (log q − log p), entries with an infinite logit zeroed, summed over the vocabulary."""
    log_q, log_p = torch.log_softmax(logits, -1), torch.log_softmax(teacher_logits, -1)
    w_p = torch.sigmoid(log_p - log_q).detach()
    w_q = torch.sigmoid(log_q - log_p).detach()
    terms = w_p * log_p.exp() * (log_p - log_q) + w_q * log_q.exp() * (log_q - log_p)
    return terms.masked_fill(logits.isinf() | teacher_logits.isinf(), 0.0).sum(-1)


def test_against_the_released_code_formula_over_a_full_vocabulary():
    """With every token stored (K = V) the buckets are the vocabulary (no tail): our loss at kd_rate 1 is
    the released divergence, value and gradient."""
    gen = torch.Generator().manual_seed(1)
    logits = (2 * torch.randn(2, 3, 8, generator=gen)).requires_grad_()
    teacher_logits = 2 * torch.randn(2, 3, 8, generator=gen)
    teacher_log = torch.log_softmax(teacher_logits, -1)
    order = teacher_log.argsort(-1, descending=True)
    targets = torch.zeros(2, 3, dtype=torch.long)  # unused at kd_rate 1
    ours = todi_topk_loss(logits, targets, order, teacher_log.gather(-1, order), kd_rate=1.0)
    theirs = _released(logits, teacher_logits)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert_same_loss(ours, theirs, logits, atol=1e-6)


def test_the_tail_bucket_is_the_teacher_completed_like_the_student():
    """K = 2 of V = 6: the bucketed loss equals the full-vocabulary ToDi whose teacher tail is spread like the
    student's (p_v = p_tail q_v / q_tail, held fixed), value and gradient."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 1, 6, generator=gen, dtype=torch.float64).requires_grad_()
    ids = torch.tensor([[[4, 1]]])
    top = torch.log(torch.tensor([[[0.5, 0.3]]], dtype=torch.float64))
    ours = todi_topk_loss(logits, torch.zeros(1, 1, dtype=torch.long), ids, top, kd_rate=1.0)
    completed = completed_teacher(logits[0, 0], [4, 1], [0.5, 0.3])
    full = todi_divergence(completed.log(), torch.log_softmax(logits, -1)[0, 0])
    assert_same_loss(ours, full, logits, rtol=1e-5, atol=1e-6)  # the bucket helper reads float32 logits


def test_kd_rate_mixes_the_nll():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 9, generator=gen).requires_grad_()
    targets = torch.randint(0, 9, (2, 4), generator=gen)
    teacher = torch.log_softmax(torch.randn(2, 4, 9, generator=gen), -1)
    ids = teacher.topk(3, -1).indices
    top = teacher.gather(-1, ids)
    nll = objectives.nll_loss(logits, targets)
    assert torch.equal(todi_topk_loss(logits, targets, ids, top, kd_rate=0.0), nll)
    divergence = todi_topk_loss(logits, targets, ids, top, kd_rate=1.0)
    half = todi_topk_loss(logits, targets, ids, top, kd_rate=0.5)
    assert torch.allclose(half, 0.5 * divergence + 0.5 * nll, atol=1e-6)
    assert (divergence > 0).all()


def test_the_experiment_resolves_to_the_released_defaults():
    experiment = load_experiment(EXPERIMENT)
    cls, params = resolve(experiment)
    assert cls.name == "todi" and params == ToDiParams(kd_rate=0.5) and experiment.table == "prior"
    assert cls.needs(params) == Needs()
    assert_refused("todi", {"kd_rate": 2}, "params.kd_rate")


def test_a_training_step_is_finite_and_reads_kd_rate(toy_tokenizer, traces, tmp_path):  # noqa: F811
    losses = {rate: _trainer(tmp_path / str(rate), toy_tokenizer, traces, "todi",
                             ToDiParams(kd_rate=rate)).train_step(0) for rate in (0.0, 0.5, 1.0)}
    sft = _trainer(tmp_path / "sft", toy_tokenizer, traces, "sft").train_step(0)
    assert losses[0.0]["loss"] == sft["loss"]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in losses.values())
    assert losses[0.5]["loss"] == pytest.approx(0.5 * losses[0.0]["loss"] + 0.5 * losses[1.0]["loss"], rel=1e-5)
