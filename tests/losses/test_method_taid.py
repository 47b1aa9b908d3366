"""TAID (dcod.methods.taid, docs/method.md "taid"): KL(p_t ‖ q_θ), p_t ∝ exp((1 − t) sg(log q_θ) + t log p_T),
over the stored teacher top-k plus a tail bucket, and the released code's schedule of t."""

import json
import math
from pathlib import Path

import pytest
import torch

from dcod import objectives
from dcod.config import load_experiment
from dcod.methods import Cost, Needs, StepContext, build_method, resolve
from dcod.methods.taid import TAIDParams, taid_next_t, taid_target_logprobs, taid_topk_loss

from test_methods_wiring import _trainer  # noqa: F401
from method_checks import assert_refused, assert_same_loss, completed_teacher
from tiny_training import traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "taid" / "config.yaml"


def _topk_case(seed=0, shape=(2, 3, 10), k=3):
    gen = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(*shape, generator=gen)).requires_grad_()
    teacher = torch.log_softmax(2 * torch.randn(*shape, generator=gen), -1)
    ids = teacher.topk(k, -1).indices
    return logits, ids, teacher.gather(-1, ids)


def test_a_hand_computed_target():
    """Student (0.5, 0.5), teacher (0.9, 0.1), t = 0.5: p_t ∝ (√0.45, √0.05) = (0.75, 0.25)."""
    student = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64))
    teacher = torch.log(torch.tensor([0.9, 0.1], dtype=torch.float64))
    assert taid_target_logprobs(student, teacher, 0.5).exp().tolist() == pytest.approx([0.75, 0.25], rel=1e-12)
    empty_tail = torch.tensor([math.log(0.9), -math.inf], dtype=torch.float64)  # the teacher's top-k holds it all
    assert taid_target_logprobs(student, empty_tail, 0.5).exp().tolist() == pytest.approx([1.0, 0.0])
    assert taid_target_logprobs(student, empty_tail, 0.0).exp().tolist() == pytest.approx([0.5, 0.5])


def test_t_1_is_kd_and_t_0_is_no_loss():
    logits, ids, top = _topk_case()
    kl, _ = taid_topk_loss(logits, ids, top, 1.0)
    kd = objectives.kd_topk_loss(logits, ids, top)
    (grad_taid,) = torch.autograd.grad(kl.sum(), logits)
    (grad_kd,) = torch.autograd.grad(kd.sum(), logits)
    assert torch.allclose(kl, kd, atol=1e-6) and torch.allclose(grad_taid, grad_kd, atol=1e-6)
    zero, _ = taid_topk_loss(logits, ids, top, 0.0)  # the target is the detached student itself
    (grad_zero,) = torch.autograd.grad(zero.sum(), logits)
    assert torch.allclose(zero, torch.zeros_like(zero), atol=1e-6)
    assert torch.allclose(grad_zero, torch.zeros_like(grad_zero), atol=1e-6)


def test_the_target_is_detached():
    """∂KL(p_t ‖ q_θ)/∂z_u over the buckets = q_θ(u) − p_t(b(u)) q_θ(u) / q_θ(b(u)): the target moves with
    the student's value, not its gradient."""
    logits, ids, top = _topk_case(1, (1, 2, 6), 2)
    kl, _ = taid_topk_loss(logits, ids, top, 0.4)
    (grad,) = torch.autograd.grad(kl.sum(), logits)
    teacher_log, student_log = objectives._topk_bucket_logprobs(logits.detach(), ids, top)
    target = taid_target_logprobs(student_log, teacher_log, 0.4).exp()
    q = torch.softmax(logits.detach().double(), -1)
    bucket_of = torch.full(q.shape, ids.shape[-1], dtype=torch.long)  # the tail bucket
    bucket_of.scatter_(-1, ids, torch.arange(ids.shape[-1]).expand_as(ids))
    bucket_q = student_log.exp().gather(-1, bucket_of)
    expected = q - target.gather(-1, bucket_of) * q / bucket_q
    assert torch.allclose(grad.double(), expected, atol=1e-6)


def test_the_tail_bucket_is_the_teacher_completed_like_the_student():
    """The bucketed TAID equals the full-vocabulary one (the code's logit interpolation) whose teacher tail is
    spread like the student's (p_v = p_tail q_v / q_tail, held fixed), value and gradient."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 1, 6, generator=gen, dtype=torch.float64).requires_grad_()
    ids, top = torch.tensor([[[4, 1]]]), torch.log(torch.tensor([[[0.5, 0.3]]], dtype=torch.float64))
    kl, _ = taid_topk_loss(logits, ids, top, 0.7)
    teacher = completed_teacher(logits[0, 0], [4, 1], [0.5, 0.3])
    log_q = torch.log_softmax(logits, -1)[0, 0]
    target = torch.softmax(0.3 * log_q.detach() + 0.7 * teacher.log(), -1)
    full = (target * (target.log() - log_q)).sum()
    assert_same_loss(kl, full, logits, rtol=1e-5, atol=1e-6)  # the bucket helper reads float32 logits


def _released(logits, teacher_logits, t):
    """Re-derived (read, not copied) from the authors' released code, github.com/SakanaAI/TAID,
    src/distil_losses/taid.py, TAID.compute_loss and src/distil_losses/fkl.py, forward_kl: the target
    softmax((1 − t)·detached student logits + t·teacher logits); loss −Σ target·log_softmax(student) per
    token (the code then averages over the mask)."""
    target = torch.softmax((1 - t) * logits.detach() + t * teacher_logits, -1)
    return -(target * torch.log_softmax(logits, -1)).sum(-1)


def test_against_the_released_code_formula_over_a_full_vocabulary():
    """K = V (every token stored, no tail): the cross-entropy we track is the released loss, and our KL has its
    gradient (they differ by the target's entropy, which carries none)."""
    gen = torch.Generator().manual_seed(3)
    logits = (2 * torch.randn(2, 3, 8, generator=gen)).requires_grad_()
    teacher_logits = 2 * torch.randn(2, 3, 8, generator=gen)
    teacher_log = torch.log_softmax(teacher_logits, -1)
    order = teacher_log.argsort(-1, descending=True)
    kl, cross_entropy = taid_topk_loss(logits, order, teacher_log.gather(-1, order), 0.6)
    theirs = _released(logits, teacher_logits, 0.6)
    assert torch.allclose(cross_entropy, theirs.detach(), atol=1e-5)
    (grad_ours,) = torch.autograd.grad(kl.sum(), logits)  # the KL and the cross-entropy differ by a constant
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-6)


def test_the_schedule_by_hand():
    """The released TAID.update_t: the first step records the loss; then δ = (L_prev − L)/L_prev,
    m = β m + (1 − β) δ, t = min(t_end, max(linear target, t + α σ(m)(1 − t)))."""
    t, prev, m = taid_next_t(0.4, None, 0.0, 2.0, 0, 10_000)
    assert (t, prev, m) == (0.4, 2.0, 0.0)
    t, prev, m = taid_next_t(t, prev, m, 1.0, 1, 10_000)  # δ = 0.5, m = 0.005
    assert m == pytest.approx(0.005, rel=1e-12) and prev == 1.0
    assert t == pytest.approx(0.4 + 5e-4 / (1 + math.exp(-0.005)) * 0.6, rel=1e-12)  # above 0.4 + 0.6/10000
    linear, _, _ = taid_next_t(0.4, 2.0, 0.0, 1.0, 1, 10_000, adaptive=False)
    assert linear == pytest.approx(0.4 + 0.6 / 10_000, rel=1e-12)
    assert taid_next_t(0.99999, 2.0, 5.0, 1.0, 9_999, 10_000)[0] <= 1.0  # t_end caps it


def test_within_2000_steps_the_adaptive_schedule_is_the_linear_one():
    """With the defaults, α(1 − t_start) = 3e-4 ≤ 0.6/N for N ≤ 2000: whatever the losses, t after step k is
    the linear target t_start + 0.6 k/N (docs/method.md, "taid")."""
    gen = torch.Generator().manual_seed(4)
    for total in (4, 300, 2000):
        t, prev, m = 0.4, None, 0.0
        losses = (torch.rand(total, generator=gen) * 3).tolist()
        losses[: total // 2] = sorted(losses[: total // 2], reverse=True)  # a falling stretch: m > 0
        for step, loss in enumerate(losses):
            t, prev, m = taid_next_t(t, prev, m, loss, step, total)
            assert t == pytest.approx(0.4 + 0.6 * step / total, abs=1e-12)


def test_the_method_steps_t_once_per_optimiser_step(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """Steps 0 and 1 train at t_start (the first loss only starts the schedule); after step 1 of N = 2 the
    linear target is 0.4 + 0.6/2; the state survives JSON and a fresh method resumes it."""
    trainer = _trainer(tmp_path, toy_tokenizer, traces, "taid", TAIDParams())
    seen = []
    original = trainer.method.token_losses
    trainer.method.token_losses = lambda logits, batch: seen.append(trainer.method.t) or original(logits, batch)
    records = [trainer.train_step(0), trainer.train_step(1)]
    assert seen == [0.4, 0.4] and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    state = json.loads(json.dumps(trainer.method.state()))
    trainer.method.examples(2, trainer.model)
    assert trainer.method.t == pytest.approx(0.7, abs=1e-12)
    resumed = build_method("taid", TAIDParams(), trainer.method.ctx, Cost())
    resumed.load_state(state)
    resumed.examples(2, trainer.model)
    assert (resumed.t, resumed.prev_loss, resumed.momentum) == (trainer.method.t, trainer.method.prev_loss,
                                                                trainer.method.momentum)
    assert trainer.method.run_summary() == {"taid_final_t": trainer.method.t}


def test_the_experiment_resolves_to_the_released_defaults(toy_tokenizer):
    experiment = load_experiment(EXPERIMENT)
    cls, params = resolve(experiment)
    assert cls.name == "taid" and params == TAIDParams() and experiment.table == "prior"
    assert (params.t_start, params.t_end, params.alpha, params.beta, params.adaptive) == (0.4, 1.0, 5e-4, 0.99, True)
    assert cls.needs(params) == Needs()
    assert_refused("taid", {"t_start": 0.9, "t_end": 0.5}, r"params\.t_start")
    with pytest.raises(ValueError, match="total_steps"):  # the linear target needs the run's length
        build_method("taid", params, StepContext(tokenizer=toy_tokenizer, traces=[], batch_size=1, seed=0), Cost())
