"""DistiLLM-2 (Ko et al., ICML 2025, arXiv:2503.07067) offline: skew KL on the teacher's traces plus skew
reverse KL on the student's own traces, the student traces from ONE offline generation pass of the base
student, scored by the teacher once (the ``student_traces`` pass: ``Needs.student_traces``,
dcod.student_pass; toy: the programmatic teacher's exact log-probs, else the HF teacher).

Per token, with p the teacher and q_θ the student over the stored teacher top-k plus one tail bucket (the
K+1 buckets of ``kd`` and ``skew_kd``):

    teacher traces:  ℓ_T = KL(p ‖ α₁ p + (1 − α₁) q_θ)                  (DistiLLM's SKL)
    student traces:  ℓ_S = KL(q_θ ‖ (1 − α₂) p + α₂ sg(q_θ))            (SRKL, the mixture's q_θ detached)
    loss = (2 − β_t) ℓ_T on teacher-trace tokens,  β_t ℓ_S on student-trace tokens

re-derived from the authors' released trainer (github.com/jongwooko/distillm-2, ``src/distillm_trainer.py``,
``DistiLLMTrainer.get_batch_logps`` for ``loss_type: distillm_v2`` — "chosen" are the teacher's responses,
"rejected" the student's — and ``kd_loss``, ``(2 − β)·chosen + β·rejected``). Defaults are the released
code's: α₁ = α₂ = 0.1 (``base_alpha_1``, ``base_alpha_2``), β = 1 with its curriculum off
(``gradual_beta: False``; on, β_t = 1 + 0.5·min(1, 2t/T)) and its adaptive α off (``update_alpha: False``,
not offered here). The student pass samples at temperature 0.8, top-p 0.95, one response per prompt, the
defaults of its ``generate/generate_vllm.py``.

Our readings (docs/method.md, "``distillm2``"):
- the teacher is the stored top-k plus a tail bucket, on both kinds of trace (the authors use full
  teacher logits); the bucketed divergences coarse-grain the full ones and are exact at K = V.
- a step's batch holds ``student_fraction`` of student traces (0.5: the authors' teacher/student pairs)
  and the rest teacher traces, from two seeded samplers (the two terms are sums over separate sequences;
  the pairing of a teacher and a student response to one prompt does not enter the loss), so the step
  sees the same number of sequences as every other method. At ``student_fraction`` 0 there is no student
  term and no pass, and at β = 1 the method is ``skew_kd`` (forward, α = α₁), batch for batch.
- the loss is reduced like every other method's (a token mean over the optimiser batch), where the authors
  average each sequence's tokens first and then the batch.
- the student traces come from the base student before training, once per seed (the paper's offline
  recipe generates them from the student before distillation), not re-sampled as it trains.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator

from dcod import objectives
from dcod.config import Float, Section
from dcod.data import EpochSampler, example_lengths
from dcod.methods.base import Method, Needs, register


class DistiLLM2Params(Section):
    alpha_teacher: Float = Field(0.1, gt=0, lt=1)  # α₁ of the teacher-trace SKL (base_alpha_1)
    alpha_student: Float = Field(0.1, gt=0, lt=1)  # α₂ of the student-trace SRKL (base_alpha_2)
    beta: Float = Field(1.0, ge=0, le=2)  # weights (2 − β) teacher, β student
    gradual_beta: bool = False  # the released curriculum: β_t = β + 0.5·min(1, 2t/T)
    student_fraction: Float = Field(0.5, ge=0, le=1)  # share of a step's sequences that are student traces

    @model_validator(mode="after")
    def _beta_in_range(self):
        if self.gradual_beta and self.beta + 0.5 > 2:
            raise ValueError(f"beta: with gradual_beta the weight reaches beta + 0.5 = {self.beta + 0.5:g} > 2, "
                             "which makes the teacher term's weight negative")
        return self


def student_trace_loss(logits, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor, alpha: float = 0.1):
    """ℓ_S = KL(q_θ ‖ (1 − α) p + α sg(q_θ)) over the teacher's top-k plus one tail bucket, per token [B,T]
    (float32, float64 inside). The mixture's student term is detached as in the authors' trainer, so the
    gradient is that of Σ q_θ log q_θ − Σ q_θ log m with m held fixed; α > 0 keeps m > 0 where the teacher
    has no mass (an empty teacher tail), so ℓ_S ≤ log(1/α)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"student_trace_loss: alpha must be in (0, 1), got {alpha}")
    teacher_log, student_log = objectives._topk_bucket_logprobs(logits, topk_ids, topk_logprobs)
    mixture_log = torch.logaddexp(teacher_log + math.log1p(-alpha), student_log.detach() + math.log(alpha))
    return objectives._kl_of_logprobs(student_log, mixture_log).float()


def teacher_trace_loss(logits, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor, alpha: float = 0.1):
    """ℓ_T = KL(p ‖ α p + (1 − α) q_θ): ``skew_kd``'s forward loss (objectives.skew_kl_topk_loss)."""
    return objectives.skew_kl_topk_loss(logits, topk_ids, topk_logprobs, alpha=alpha, direction="forward")


def beta_at(beta: float, gradual: bool, step: int, total_steps: int) -> float:
    """β_t: constant, or the released curriculum β + 0.5·min(1, 2t/T) (``kd_loss``, ``gradual_beta``)."""
    if not gradual:
        return beta
    return beta + 0.5 * min(1.0, 2 * step / max(1, total_steps))


def distillm2_token_losses(logits, batch: dict, student_rows: torch.Tensor, *, alpha_teacher: float,
                           alpha_student: float, beta: float) -> torch.Tensor:
    """(2 − β) ℓ_T on the rows of teacher traces, β ℓ_S on the rows of student traces (``student_rows`` [B]
    bool), per token [B,T]. Both terms are bounded (α > 0), so mixing rows by multiplication is exact."""
    ids, lps = batch["teacher_topk_ids"], batch["teacher_topk_logprobs"]
    student = student_rows.to(device=lps.device, dtype=torch.float32)[:, None]
    losses = (2 - beta) * (1 - student) * teacher_trace_loss(logits, ids, lps, alpha_teacher)
    if bool(student_rows.any()):
        losses = losses + beta * student * student_trace_loss(logits, ids, lps, alpha_student)
    return losses


@register
class DistiLLM2(Method):
    name = "distillm2"
    Params = DistiLLM2Params

    @classmethod
    def needs(cls, params):
        return Needs(student_traces=params.student_fraction > 0)

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        self.n_student = round(params.student_fraction * ctx.batch_size)
        self.n_teacher = ctx.batch_size - self.n_student
        self.step = 0
        if ctx.traces and "topk_ids" not in ctx.traces[0]:
            raise ValueError("distillm2 needs the teacher's top-k in the traces (traces.top_k_logprobs > 0)")
        if self.n_teacher and self.n_teacher != ctx.batch_size:
            self.sampler = EpochSampler(len(ctx.traces), self.n_teacher, ctx.seed, lengths=example_lengths(ctx.traces))
        self.student_sampler = None
        if self.n_student:
            if not ctx.student_traces:
                raise ValueError("distillm2 with student_fraction > 0 needs the student traces pass")
            self.student_sampler = EpochSampler(len(ctx.student_traces), self.n_student, ctx.seed * 31 + 1,
                                                lengths=example_lengths(ctx.student_traces))

    def examples(self, step, model):
        self.step = step
        teacher = [self.ctx.traces[i] for i in self.sampler.indices(step)] if self.n_teacher else []
        student = ([{**self.ctx.student_traces[i], "from_student": True} for i in self.student_sampler.indices(step)]
                   if self.n_student else [])
        return teacher + student

    def extra_inputs(self, batch, examples):
        batch["student_rows"] = torch.tensor([bool(e.get("from_student")) for e in examples],
                                             device=batch["input_ids"].device)

    def token_losses(self, logits, batch):
        p = self.params
        return distillm2_token_losses(logits, batch, batch["student_rows"], alpha_teacher=p.alpha_teacher,
                                      alpha_student=p.alpha_student,
                                      beta=beta_at(p.beta, p.gradual_beta, self.step, self.ctx.total_steps))
