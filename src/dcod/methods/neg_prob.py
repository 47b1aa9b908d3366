"""The −p token loss of "Beyond Log Likelihood" (Li et al. 2025, arXiv:2510.00526) on the offline traces.

docs/method.md, "``neg_prob``": the paper's family of probability-based SFT objectives, with
p = p_θ(y_t | x, y_<t) the probability of the trace's token,

    ℓ_t = (1 − p^α) / α        α = 1: ℓ_t = 1 − p (the −p objective, up to a constant)
                               α → 0: ℓ_t → −log p (the NLL, i.e. ``sft``)

so ∇ℓ_t = −p^α ∇log p: α weights each token's NLL gradient by p^α, leaning on tokens the model
already finds likely ("prior-leaning") as α grows. At α = 1 the gradient is exactly ``dft``'s
(−sg(p) ∇log p); only the loss value differs (1 − p against −sg(p) log p): a run at α = 1 takes
``dft``'s optimiser steps up to float rounding (``tests/losses/test_method_neg_prob.py``).

Our readings, each a knob: ``alpha`` = 1 (the −p objective, the one the issue and the paper's title
result name; the authors' released code, github.com/GaotangLi/Beyond-Log-Likelihood,
``main_verl/trainer/fsdp_sft_trainer.py``, implements it as ``objective_trans: p``, loss 1 − p, and the
family as ``GeneralFamily-α``, loss −(p^α − 1)/α). α = 0 is accepted and is the NLL exactly. The loss is
summed over supervised tokens and divided by their number (the trainer's reduction, as the code's
masked token losses). The paper's thresholded variants are ``profit``'s idea and are not repeated here.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, register


def prob_power_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """ℓ_t = (1 − p^α)/α of the target tokens [B, T] (α = 0: −log p). logits [B, T, V] or a
    ``ChunkedLMHead``, targets [B, T] → [B, T] float32. Computed as −expm1(α log p)/α: exact for small α
    (no 1 − p^α cancellation), and continuous in α at 0."""
    if alpha < 0:
        raise ValueError(f"prob_power_loss: alpha must be >= 0, got {alpha}")
    logprobs = objectives.target_logprobs(logits, targets)
    if alpha == 0:
        return -logprobs
    return -torch.expm1(alpha * logprobs) / alpha


class NegProbParams(Section):
    """α = 1: the −p objective (the paper's headline; the released code's ``objective_trans: p``)."""

    alpha: Float = Field(1.0, ge=0)


@register
class NegProb(Method):
    name = "neg_prob"
    Params = NegProbParams

    def token_losses(self, logits, batch):
        return prob_power_loss(logits, batch["targets"], alpha=self.params.alpha)
