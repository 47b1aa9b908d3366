"""Anchored supervised fine-tuning, ASFT (Zhu et al., ICLR 2026, arXiv:2509.23753) on the offline traces.

docs/method.md, "``asft``": DFT's token loss plus a KL anchor to the frozen initial student π_ref at
every target position, over the whole vocabulary:

    ℓ_t = −sg(p_θ(y_t)) · log p_θ(y_t)  +  λ · KL(π_ref(·|x, y_<t) ‖ π_θ(·|x, y_<t))

Our readings, each a knob (defaults: the authors' released code, github.com/zhuchichi56/ASFT,
``train_v2.py``, ``EnhancedTrainer.compute_loss`` with ``mode="asft"``):

- λ = ``kl_weight`` = 0.1 (the code's default and its ``train_v2.sh``).
- The KL's direction. The paper names a KL to the reference; the released code computes
  ``kl_div(log_softmax(student), softmax(reference))`` summed over the vocabulary, which is
  KL(π_ref ‖ π_θ) (``kl_direction: reference_to_student``, default). ``student_to_reference`` is
  KL(π_θ ‖ π_ref), the other order, offered because the two are easily confused.
- Both terms are summed per supervised token and divided by the number of supervised tokens (the
  code's ``weighted_losses[valid_mask].sum() / valid_mask.sum()``), i.e. the trainer's reduction.
- π_ref is a frozen copy of the initial student (the code's ``original_model``), one no-grad forward
  per batch, counted as reference cost. No temperature (the code has none).

λ = 0 is exactly ``dft``. The anchor reads the student's whole distribution, so this method takes
full logits (no chunked LM head).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, Needs, register

KL_DIRECTIONS = ("reference_to_student", "student_to_reference")


def asft_loss(logits: torch.Tensor, targets: torch.Tensor, reference_logprobs: torch.Tensor,
              kl_weight: float = 0.1, kl_direction: str = "reference_to_student") -> torch.Tensor:
    """ASFT's per-token loss [B, T]: ``objectives.dft_loss`` + λ · KL between the frozen reference and the
    student over the full vocabulary. logits [B, T, V] (or a ``ChunkedLMHead``, materialised here),
    targets [B, T], reference_logprobs [B, T, V] (log-softmax of the reference, detached) → [B, T] float32.
    ``reference_to_student``: KL(π_ref ‖ π_θ) (the released code); ``student_to_reference``:
    KL(π_θ ‖ π_ref)."""
    if kl_direction not in KL_DIRECTIONS:
        raise ValueError(f"asft_loss: unknown kl_direction {kl_direction!r}, expected one of {KL_DIRECTIONS}")
    if kl_weight < 0:
        raise ValueError(f"asft_loss: kl_weight must be >= 0, got {kl_weight}")
    dft = objectives.dft_loss(logits, targets)
    if kl_weight == 0:
        return dft
    if isinstance(logits, objectives.ChunkedLMHead):
        logits = logits.logits()
    student_log = F.log_softmax(logits.float(), dim=-1)
    reference_log = reference_logprobs.detach().float()
    # F.kl_div(input, target) = KL(target ‖ input)
    if kl_direction == "reference_to_student":
        kl = F.kl_div(student_log, reference_log, reduction="none", log_target=True).sum(-1)
    else:
        kl = F.kl_div(reference_log, student_log, reduction="none", log_target=True).sum(-1)
    return dft + kl_weight * kl


class ASFTParams(Section):
    """Defaults: the authors' released code (λ = 0.1, KL(π_ref ‖ π_θ)); λ = 0 is DFT."""

    kl_weight: Float = Field(0.1, ge=0)
    kl_direction: Literal["reference_to_student", "student_to_reference"] = "reference_to_student"


@register
class ASFT(Method):
    name = "asft"
    Params = ASFTParams
    chunked_logits = False  # the anchor reads the student's whole distribution

    @classmethod
    def needs(cls, params):
        return Needs(reference_model=params.kl_weight > 0)

    def extra_inputs(self, batch, examples):
        if self.params.kl_weight == 0:
            return
        with torch.no_grad():  # right-padded, causal: no attention mask needed (as base.reference_logprobs)
            logits = self.ctx.reference_model(input_ids=batch["input_ids"]).logits[:, :-1]
        self.cost.reference_forward_tokens += int(batch["attention_mask"].sum())
        batch["reference_full_logprobs"] = F.log_softmax(logits.float(), dim=-1)

    def token_losses(self, logits, batch):
        return asft_loss(logits, batch["targets"], batch.get("reference_full_logprobs"),
                         kl_weight=self.params.kl_weight, kl_direction=self.params.kl_direction)
