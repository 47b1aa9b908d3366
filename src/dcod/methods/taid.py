"""TAID, temporally adaptive interpolated distillation (Shing et al., ICLR 2025, arXiv:2501.16937), offline.

docs/method.md, "``taid``": forward KL from an intermediate target that moves from the student to the
teacher during training,

    p_t ∝ exp((1 − t) · sg(log q_θ) + t · log p_T),      ℓ = KL(p_t ‖ q_θ)

(the paper interpolates logits; a softmax is unchanged by per-position constants, so log-probs serve).
t = 1 is forward KL to the teacher (``kd``); t = 0 makes the target the detached student: loss 0.

Our readings, each a knob (defaults: the authors' released code, github.com/SakanaAI/TAID,
``src/distil_losses/taid.py``, class ``TAID``, and ``src/arguments.py``):

- **Top-k teacher.** p_T and q_θ are taken over the K+1 buckets of ``kd`` (the stored top-k plus one
  tail bucket, ``objectives._topk_bucket_logprobs``), and the interpolation is made over buckets. This
  equals the full-vocabulary TAID with the teacher's tail completed in proportion to the student's tail
  (p_T(v) = p_T(tail) q_θ(v) / q_θ(tail) for v outside the top-k): then every tail token has the same
  ratio p_t/q_θ, so the full-vocabulary KL and its gradient equal the bucketed ones
  (``tests/losses/test_method_taid.py`` checks this against a completed full vocabulary). So t = 1 is exactly ``kd``.
- **Loss value.** The code minimises the cross-entropy −Σ p_t log q_θ; we report the KL (the same
  gradient: H(p_t) does not depend on θ since p_t is detached), 0 when the target is the student.
- **Schedule of t** (``adaptive: true``, default, the code's rule, applied once per optimiser step):
  t₀ = t_start; after step k with loss L_k (the code's cross-entropy, averaged over the step's
  supervised tokens), δ_k = (L_{k−1} − L_k)/L_{k−1}, m ← β m + (1 − β) δ_k,
  t ← min(t_end, max(t_start + (t_end − t_start)·k/N, t + α σ(m)(1 − t))); the first step only records
  L₀. N is the run's optimiser steps. ``adaptive: false`` is the code's ``disable_adaptive``: t
  follows the linear target alone. **With a fixed-step budget:** the adaptive increment is at most
  α(1 − t_start) per step while the linear target grows by (t_end − t_start)/N, so whenever
  N ≤ (t_end − t_start)/(α(1 − t_start)) — 2,000 steps at the defaults, above every profile's budget
  (toy 300, paper 330) — t is exactly the linear schedule, one step behind the step count; the
  adaptive term only matters in longer runs. The code updates t at every forward (per micro-batch and
  per rank); we update it once per optimiser step from the loss of the whole step (all micro-batches,
  all ranks), so t does not depend on the accumulation or the number of processes.
- Defaults t_start 0.4, t_end 1.0, α 5e-4, β 0.99 (the code's defaults, used by all its scripts);
  no temperature and no cross-entropy mixing (its ``distil_ratio`` defaults to 1).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from pydantic import Field, model_validator

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, register


def taid_target_logprobs(student_log: torch.Tensor, teacher_log: torch.Tensor, t: float) -> torch.Tensor:
    """log p_t over the last dim: log_softmax((1 − t)·sg(student_log) + t·teacher_log), detached. −inf
    teacher entries (an empty tail) stay −inf for t > 0 and are ignored at t = 0."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"taid_target_logprobs: t must be in [0, 1], got {t}")
    teacher_part = torch.where(teacher_log > -math.inf, t * teacher_log,
                               torch.full_like(teacher_log, -math.inf if t > 0 else 0.0))
    mixed = (1.0 - t) * student_log.detach() + teacher_part
    return torch.log_softmax(mixed, dim=-1)


def taid_topk_loss(logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                   t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TAID's token loss over the K+1 buckets of ``objectives.kd_topk_loss``: (KL(p_t ‖ q_θ) [B, T] float32,
    the cross-entropy −Σ p_t log q_θ [B, T] detached, which the adaptive schedule reads). logits [B, T, V]
    or a ``ChunkedLMHead``, topk_ids / topk_logprobs [B, T, K] (teacher) → two [B, T] tensors."""
    teacher_log, student_log = objectives._topk_bucket_logprobs(logits, topk_ids, topk_logprobs)
    target_log = taid_target_logprobs(student_log, teacher_log, t)
    kl = objectives._kl_of_logprobs(target_log, student_log)
    has_mass = target_log > -math.inf
    entropy = -torch.where(has_mass, target_log.exp() * target_log, torch.zeros_like(target_log)).sum(-1)
    return kl.float(), (kl.detach() + entropy).float()


def taid_next_t(t: float, prev_loss: float | None, momentum: float, loss: float, step: int, total_steps: int,
                t_start: float = 0.4, t_end: float = 1.0, alpha: float = 5e-4, beta: float = 0.99,
                adaptive: bool = True) -> tuple[float, float | None, float]:
    """The released code's ``TAID.update_t`` after optimiser step ``step`` (0-based) of ``total_steps``
    with loss ``loss``: (t, prev_loss, momentum) for the next step. The first call (prev_loss None)
    only records the loss."""
    if prev_loss is None:
        return t, loss, momentum
    relative_change = (prev_loss - loss) / (prev_loss + 1e-15)
    momentum = beta * momentum + (1.0 - beta) * relative_change
    target = t_start + (t_end - t_start) * step / total_steps
    if adaptive:
        t = min(t_end, max(target, t + alpha / (1.0 + math.exp(-momentum)) * (1.0 - t)))
    else:
        t = target
    return t, loss, momentum


class TAIDParams(Section):
    """Defaults: the authors' released code (``src/arguments.py``)."""

    t_start: Float = Field(0.4, ge=0, lt=1)
    t_end: Float = Field(1.0, gt=0, le=1)
    alpha: Float = Field(5e-4, ge=0, le=1)  # the adaptive update's step size
    beta: Float = Field(0.99, ge=0, lt=1)  # the momentum of the relative loss change
    adaptive: bool = True  # false: t follows the linear target alone (the code's disable_adaptive)

    @model_validator(mode="after")
    def _ordered(self):
        if self.t_start > self.t_end:
            raise ValueError(f"t_start: must be <= t_end={self.t_end}")
        return self


@register
class TAID(Method):
    name = "taid"
    Params = TAIDParams

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        if ctx.total_steps < 1:  # the linear target t_start + (t_end - t_start) k/N needs N
            raise ValueError(f"taid: the schedule of t needs the run's optimiser steps, "
                             f"got total_steps={ctx.total_steps}")
        self.t, self.prev_loss, self.momentum = params.t_start, None, 0.0
        self._pending = None  # [Σ cross-entropy, supervised tokens] of the step being trained, this rank
        self._pending_global = False  # True: restored from a checkpoint, already one number for all ranks

    def examples(self, step, model):
        if self._pending is not None:  # the schedule reads the loss of the step just trained
            self._apply_schedule(trained_step=step - 1)
        return super().examples(step, model)

    def _apply_schedule(self, trained_step: int) -> None:
        totals = self._pending.detach().double()
        if not self._pending_global and dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)  # every rank calls examples() at the same point: one t for all
        total, count = (float(v) for v in totals)
        p = self.params
        self.t, self.prev_loss, self.momentum = taid_next_t(
            self.t, self.prev_loss, self.momentum, total / max(count, 1.0), trained_step,
            self.ctx.total_steps, p.t_start, p.t_end, p.alpha, p.beta, p.adaptive)
        self._pending, self._pending_global = None, False

    def token_losses(self, logits, batch):
        kl, cross_entropy = taid_topk_loss(logits, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"],
                                           self.t)
        mask = batch["loss_mask"]
        sums = torch.stack([torch.where(mask, cross_entropy, torch.zeros_like(cross_entropy)).sum(),
                            mask.sum().to(cross_entropy.dtype)]).detach()
        self._pending = sums if self._pending is None else self._pending + sums
        return kl

    def state(self):
        """JSON-safe: t, the schedule's memory, and the loss sums of the step just trained (the schedule
        applies them at the next step). Written by the main process: with several processes a resumed
        run applies the main process's share of that one step's loss (an uninterrupted run: all ranks')."""
        pending = None if self._pending is None else [float(v) for v in self._pending]
        return {"t": self.t, "prev_loss": self.prev_loss, "momentum": self.momentum, "pending": pending}

    def load_state(self, state):
        self.t, self.prev_loss, self.momentum = float(state["t"]), state["prev_loss"], float(state["momentum"])
        self._pending = None if state["pending"] is None else torch.tensor(state["pending"], dtype=torch.float64)
        self._pending_global = self._pending is not None

    def run_summary(self):
        return {"taid_final_t": self.t}
