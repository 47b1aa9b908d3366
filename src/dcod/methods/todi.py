"""ToDi, token-wise distillation (Jung et al., EMNLP 2025, arXiv:2505.16297) to the stored teacher top-k.

docs/method.md, "``todi``": per vocabulary entry v, forward and reverse KL mixed by a detached weight
from the teacher/student log-ratio,

    w_v = σ(sg(log p_v − log q_v)),
    ToDi(p, q_θ) = Σ_v [ w_v p_v (log p_v − log q_v) + (1 − w_v) q_v (log q_v − log p_v) ]
    ℓ_t = (1 − λ) · (−log q_θ(y_t)) + λ · ToDi

so where the student under-estimates (p_v > q_v) the forward term dominates and pulls q_v up; where it
over-estimates, the reverse term pushes q_v down. p: teacher, q_θ: student.

Our readings, each a knob (defaults: the authors' released code, github.com/jungseongryong/ToDi,
``code/criterions/various_divergence.py``, ``compute_ToDi``, and ``code/arguments.py``):

- **Top-k teacher** (ToDi, not AKL, is implementable offline). The sum runs over the K+1 buckets of
  ``kd`` (stored top-k plus one tail bucket, ``objectives._topk_bucket_logprobs``). With the teacher's
  tail completed in proportion to the student's (p_v = p_tail q_v / q_tail outside the top-k) every tail
  entry has the same ratio p_v/q_v, hence the same weight, and its forward and reverse terms sum to the
  bucket's: the bucketed ToDi equals that completed full-vocabulary ToDi, value and gradient
  (``tests/losses/test_method_todi.py``). An empty teacher tail (the stored top-k holds all the teacher's
  mass up to float32 rounding, log p_tail = −inf) would make the tail's reverse term infinite: that
  bucket is dropped, as the code drops entries whose logits are −inf (``inf_mask``); the forward
  terms on the top-k still pull the student's tail mass down through the normalisation.
- λ = ``kd_rate`` = 0.5: the code mixes its divergence with the NLL of the label token,
  ``(1 − kd_rate)·CE + kd_rate·ToDi``, ``--kd-rate`` 0.5 by default and in its scripts. ``kd_rate: 1``
  is the divergence alone.
- No temperature: the code's ``--kd-temperature`` defaults to 1 (its KD scripts set 2); the stored
  teacher top-k was taken at temperature 1 and its tail bucket cannot be re-tempered exactly (the
  tempered mass of a tail depends on how it is spread), so we keep 1.
- The weight's scale: σ(log p − log q) exactly as the code (no extra sharpness parameter).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, register


def todi_divergence(teacher_log: torch.Tensor, student_log: torch.Tensor) -> torch.Tensor:
    """ToDi(p, q) summed over the last dim from log-probs (teacher detached): the weight is detached, a
    bucket where the teacher has no mass (log p = −inf) contributes nothing (weight 0 on its forward
    term, and the reverse term dropped as the released code's ``inf_mask`` does). → [...] float64."""
    teacher_log = teacher_log.detach().double()
    student_log = student_log.double()
    has_mass = teacher_log > -math.inf
    safe_teacher = torch.where(has_mass, teacher_log, torch.zeros_like(teacher_log))
    ratio = safe_teacher - student_log  # log p − log q
    weight = torch.sigmoid(ratio).detach()
    forward = weight * safe_teacher.exp() * ratio
    reverse = (1.0 - weight) * student_log.exp() * -ratio
    return torch.where(has_mass, forward + reverse, torch.zeros_like(ratio)).sum(-1)


def todi_topk_loss(logits: torch.Tensor, targets: torch.Tensor, topk_ids: torch.Tensor,
                   topk_logprobs: torch.Tensor, kd_rate: float = 0.5) -> torch.Tensor:
    """ℓ_t = (1 − λ)·NLL(y_t) + λ·ToDi over the K+1 buckets of ``objectives.kd_topk_loss``. logits
    [B, T, V] or a ``ChunkedLMHead``, targets [B, T], topk_ids / topk_logprobs [B, T, K] → [B, T] float32."""
    if not 0.0 <= kd_rate <= 1.0:
        raise ValueError(f"todi_topk_loss: kd_rate must be in [0, 1], got {kd_rate}")
    teacher_log, student_log = objectives._topk_bucket_logprobs(logits, topk_ids, topk_logprobs)
    loss = kd_rate * todi_divergence(teacher_log, student_log).float()
    if kd_rate < 1.0:
        loss = loss + (1.0 - kd_rate) * objectives.nll_loss(logits, targets)
    return loss


class ToDiParams(Section):
    """λ = 0.5: the released code's ``--kd-rate``; 1 is the divergence alone."""

    kd_rate: Float = Field(0.5, ge=0, le=1)


@register
class ToDi(Method):
    name = "todi"
    Params = ToDiParams

    def token_losses(self, logits, batch):
        return todi_topk_loss(logits, batch["targets"], batch["teacher_topk_ids"], batch["teacher_topk_logprobs"],
                              kd_rate=self.params.kd_rate)
