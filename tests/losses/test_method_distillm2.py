"""DistiLLM-2 (dcod.methods.distillm2, docs/method.md "distillm2"): its two terms by hand, against a formula
re-derived from the authors' trainer, the limit where it is skew KL, and its batches."""

import math
from pathlib import Path

import pytest
import torch

from dcod import objectives
from dcod.config import TrainConfig, load_experiment, parse_experiment
from dcod.methods import Cost, Needs, StepContext, build_method, resolve
from dcod.methods.distillm2 import (DistiLLM2Params, beta_at, distillm2_token_losses, student_trace_loss,
                                    teacher_trace_loss)
from dcod.methods.skew_kd import SkewKDParams
from dcod.models import build_tiny_llama
from dcod.student_pass import teacher_scores
from dcod.toy.teacher import ToyTeacher
from dcod.training import Trainer

from method_checks import assert_refused
from tiny_training import TINY, traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _one_token(student_probs, teacher_top):
    """Logits [1,1,V] with softmax ``student_probs``, and the teacher's top-1 (id 0) with probability
    ``teacher_top``."""
    logits = torch.log(torch.tensor(student_probs, dtype=torch.float64)).float().view(1, 1, -1)
    return logits, torch.zeros(1, 1, 1, dtype=torch.long), torch.tensor([[[math.log(teacher_top)]]])


def test_the_two_terms_by_hand():
    # V = 3, teacher top-1 = token 0 with p = 0.5 (tail 0.5); student q = (0.25, 0.35, 0.40): buckets (0.25, 0.75)
    logits, ids, lps = _one_token([0.25, 0.35, 0.40], 0.5)
    a = 0.1
    p, q = (0.5, 0.5), (0.25, 0.75)
    student = sum(qi * math.log(qi / ((1 - a) * pi + a * qi)) for pi, qi in zip(p, q))
    teacher = sum(pi * math.log(pi / (a * pi + (1 - a) * qi)) for pi, qi in zip(p, q))
    assert student_trace_loss(logits, ids, lps, a).item() == pytest.approx(student, rel=1e-5)
    assert teacher_trace_loss(logits, ids, lps, a).item() == pytest.approx(teacher, rel=1e-5)
    # the weights (2 - beta, beta) on the rows of each kind
    batch = {"teacher_topk_ids": ids.expand(2, 1, 1), "teacher_topk_logprobs": lps.expand(2, 1, 1)}
    got = distillm2_token_losses(logits.expand(2, 1, 3), batch, torch.tensor([False, True]), alpha_teacher=a,
                                 alpha_student=a, beta=1.5)
    assert got[0, 0].item() == pytest.approx(0.5 * teacher, rel=1e-5)
    assert got[1, 0].item() == pytest.approx(1.5 * student, rel=1e-5)


def test_the_student_term_is_bounded_where_the_teacher_has_no_mass():
    # the teacher's top-1 holds all its mass (empty tail) while the student puts 0.9 on the tail
    logits, ids, lps = _one_token([0.1, 0.45, 0.45], 1.0)
    for a in (0.1, 0.01):
        loss = student_trace_loss(logits.requires_grad_(), ids, lps, a)
        assert torch.isfinite(loss).all() and loss.item() <= math.log(1 / a) + 1e-6
        (grad,) = torch.autograd.grad(loss.sum(), logits)
        assert torch.isfinite(grad).all()


def _authors_distillm_v2(logits, tea_logits, labels_mask, alpha_1, alpha_2):
    """Re-derived (read, not copied) from github.com/jongwooko/distillm-2, src/distillm_trainer.py,
    ``DistiLLMTrainer.get_batch_logps`` with ``loss_type="distillm_v2"`` and its adaptive alpha off
    (``logp_logq``/``logq_logp`` None: the fixed ``base_alpha_1``/``base_alpha_2``):
        tea_pos_kl = Σ_v p (log p − log(α₁ p + (1 − α₁) q))
        ref_pos_kl = Σ_v q (log q − log((1 − α₂) p + α₂ q.detach()))
    each averaged over a sequence's tokens (``average_log_prob=True``); per sequence [B] each."""
    vocab = logits.log_softmax(-1)
    tea = tea_logits.log_softmax(-1)
    mix_1 = torch.logsumexp(torch.stack([math.log(alpha_1) + tea, math.log(1 - alpha_1) + vocab]), 0)
    tea_pos_kl = (tea.exp() * (tea - mix_1)).sum(-1)
    mix_2 = torch.logsumexp(torch.stack([math.log(1 - alpha_2) + tea, math.log(alpha_2) + vocab.detach()]), 0)
    ref_pos_kl = (vocab.exp() * (vocab - mix_2)).sum(-1)
    n = labels_mask.sum(-1)
    return (tea_pos_kl * labels_mask).sum(-1) / n, (ref_pos_kl * labels_mask).sum(-1) / n


def test_the_loss_matches_the_authors_trainer_at_full_top_k():
    """At K = V the buckets are the vocabulary (the tail is empty): per sequence, our token losses averaged
    over its tokens give the authors' (2 − β)·chosen + β·rejected (``kd_loss``), values and gradients."""
    generator = torch.Generator().manual_seed(0)
    B, T, V, a1, a2, beta = 4, 5, 7, 0.1, 0.2, 1.0
    logits = (torch.randn(B, T, V, generator=generator) * 2).requires_grad_()
    tea_logits = torch.randn(B, T, V, generator=generator) * 2
    tea = tea_logits.log_softmax(-1)
    topk_lps, topk_ids = tea.topk(V, dim=-1)
    mask = torch.ones(B, T)
    mask[1, 3:] = 0
    student_rows = torch.tensor([False, False, True, True])  # rows 0-1 "chosen" (teacher), 2-3 "rejected"
    batch = {"teacher_topk_ids": topk_ids, "teacher_topk_logprobs": topk_lps}
    ours = distillm2_token_losses(logits, batch, student_rows, alpha_teacher=a1, alpha_student=a2, beta=beta)
    ours = (ours * mask).sum(-1) / mask.sum(-1)  # the authors' per-sequence average
    chosen, rejected = _authors_distillm_v2(logits.double(), tea_logits.double(), mask.double(), a1, a2)
    theirs = torch.cat([(2 - beta) * chosen[:2], beta * rejected[2:]])
    assert torch.allclose(ours.double(), theirs, atol=1e-5, rtol=1e-4)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    assert torch.allclose(g_ours, g_theirs.float(), atol=1e-5, rtol=1e-4)


def test_the_mixture_is_detached_as_in_the_authors_trainer():
    """Same value as skew_kd's reverse loss (α ↔ 1 − α conventions aside), another gradient: the mixture's
    student term carries none."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, generator=generator).requires_grad_()
    lps, ids = torch.randn(2, 3, 6, generator=generator).log_softmax(-1).topk(3, dim=-1)
    ours = student_trace_loss(logits, ids, lps, alpha=0.3)
    attached = objectives.skew_kl_topk_loss(logits, ids, lps, alpha=0.3, direction="reverse")
    assert torch.allclose(ours, attached, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_attached,) = torch.autograd.grad(attached.sum(), logits)
    assert not torch.allclose(g_ours, g_attached, atol=1e-4)


def test_the_beta_curriculum():
    assert beta_at(1.0, False, 7, 10) == 1.0
    assert [beta_at(1.0, True, t, 100) for t in (0, 25, 50, 99)] == [1.0, 1.25, 1.5, 1.5]  # 1 + 0.5·min(1, 2t/T)


def _student_traces(toy_tokenizer, traces, n=16):  # noqa: F811
    """Student traces as the pass writes them: the teacher traces' prompts with other completions, scored by
    the exact toy teacher (top-4 like the fixture's traces)."""
    examples = [{"prompt_ids": t["prompt_ids"], "completion_ids": list(reversed(t["completion_ids"]))}
                for t in traces[:n]]
    scored = teacher_scores(ToyTeacher(toy_tokenizer), examples, toy_tokenizer.pad_token_id, len(toy_tokenizer), 4)
    return [{**e, **s} for e, s in zip(examples, scored)]


def _ctx(toy_tokenizer, traces, student=None):  # noqa: F811
    ctx = StepContext(tokenizer=toy_tokenizer, traces=traces, batch_size=8, seed=0, total_steps=4)
    ctx.student_traces = student or []
    return ctx


def test_without_the_student_term_it_is_skew_kd(toy_tokenizer, traces):  # noqa: F811
    params = DistiLLM2Params(student_fraction=0.0, alpha_teacher=0.2)
    assert resolve(parse_experiment("x", {"method": "distillm2", "params": {"student_fraction": 0.0}}, "x"))[0] \
        .needs(params) == Needs()  # no pass
    ours = build_method("distillm2", params, _ctx(toy_tokenizer, traces), Cost())
    skew = build_method("skew_kd", SkewKDParams(alpha=0.2), _ctx(toy_tokenizer, traces), Cost())
    from dcod.methods import collate_for

    for step in range(3):
        examples = ours.examples(step, None)
        assert examples == skew.examples(step, None)
        batch, other = collate_for(ours, examples, 0), collate_for(skew, examples, 0)
        logits = torch.randn(*batch["targets"].shape, len(toy_tokenizer), generator=torch.Generator().manual_seed(step))
        assert torch.equal(ours.token_losses(logits, batch), skew.token_losses(logits, other))


def test_a_batch_holds_both_kinds_and_marks_them(toy_tokenizer, traces):  # noqa: F811
    student = _student_traces(toy_tokenizer, traces)
    method = build_method("distillm2", None, _ctx(toy_tokenizer, traces, student), Cost())
    examples = method.examples(0, None)
    assert len(examples) == 8 and sum(bool(e.get("from_student")) for e in examples) == 4
    assert all(any(e["completion_ids"] == s["completion_ids"] for s in student) for e in examples[4:])
    from dcod.methods import collate_for

    batch = collate_for(method, examples, 0)
    assert batch["student_rows"].tolist() == [False] * 4 + [True] * 4
    with pytest.raises(ValueError, match="needs the student traces pass"):
        build_method("distillm2", None, _ctx(toy_tokenizer, traces), Cost())


def test_it_trains(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """Two Trainer steps: the loss is finite and moves the student."""
    cfg = TrainConfig(steps=2, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=2)
    model = build_tiny_llama(TINY, toy_tokenizer, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _ctx(toy_tokenizer, traces, _student_traces(toy_tokenizer, traces))
    ctx.total_steps = cfg.steps
    cost = Cost()
    method = build_method("distillm2", DistiLLM2Params(gradual_beta=True), ctx, cost)
    summary = Trainer(model, toy_tokenizer, method, cfg, tmp_path / "run", cost=cost, seed=0).run()
    assert summary["student_tokens_trained"] > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_experiment_config_and_its_needs():
    cls, params = resolve(load_experiment(EXPERIMENTS / "distillm2" / "config.yaml"))
    assert cls.name == "distillm2" and params == DistiLLM2Params()  # the released code's defaults
    assert cls.needs(params) == Needs(student_traces=True)
    assert load_experiment(EXPERIMENTS / "distillm2" / "config.yaml").table == "prior"
    for bad, key in (({"alpha_student": 0.0}, "params.alpha_student"), ({"beta": 2.5}, "params.beta"),
                     ({"beta": 1.6, "gradual_beta": True}, "params"), ({"student_fraction": 1.5},
                                                                       "params.student_fraction")):
        assert_refused("distillm2", bad, key)
