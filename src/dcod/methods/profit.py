"""ProFit (Liu et al. 2026, arXiv:2601.09195): NLL only on the trace tokens the student already finds likely.

docs/method.md, "``profit``": with p = p_θ(y_t | x, y_<t) read off the training forward pass,

    ℓ_t = −log p · 1[sg(p) ≥ τ]

Tokens below the threshold are masked out of the loss (the paper's reading: low-probability tokens are
mostly replaceable expressions, high-probability ones carry the reasoning). The gate is detached: it
passes no gradient. τ = 0 is exactly ``sft``.

Our readings, each a knob (defaults: the authors' released code, github.com/Utaotao/ProFit,
``src/llamafactory/train/trainer_utils.py``, ``_profit_cross_entropy`` with ``threshold_direction:
higher``, as its ``run.sh`` runs it):

- τ = ``threshold`` = 0.1 (``run.sh``'s ``prob_threshold``); a token is kept when p ≥ τ (the code
  masks p < τ).
- Normaliser: the masked sum is divided by the number of *all* supervised tokens, kept or not (the
  code divides by the trainer's ``num_items_in_batch``, counted before masking) — the trainer's
  ``sum(w · ℓ · mask) / N``. So a batch where few tokens pass takes a small step.
- The code's other directions (``lower``, ``middle``, ``random``) are its ablations, not ProFit.

run.json records ``profit_kept_fraction`` (``run_summary``): 0 means the gate masked every token and the
run did not train (a weak student whose probabilities all sit below τ).
"""

from __future__ import annotations

import torch
from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import GatedTokens, register


def profit_loss(logits: torch.Tensor, targets: torch.Tensor,
                threshold: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ℓ_t = −log p_θ(y_t) where the detached p_θ(y_t) ≥ ``threshold``, else 0; the gate). logits [B, T, V]
    or a ``ChunkedLMHead``, targets [B, T] → ([B, T] float32, [B, T] bool)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"profit_loss: threshold must be in [0, 1], got {threshold}")
    logprobs = objectives.target_logprobs(logits, targets)
    kept = logprobs.detach().exp() >= threshold
    # where(), not a product: a masked token passes no gradient, even a NaN one
    return torch.where(kept, -logprobs, torch.zeros_like(logprobs)), kept


class ProFitParams(Section):
    """τ = 0.1: the released ``run.sh``; τ = 0 is SFT."""

    threshold: Float = Field(0.1, ge=0, le=1)


@register
class ProFit(GatedTokens):
    name = "profit"
    Params = ProFitParams
    gate_summary = "profit_kept_fraction"  # 0: the threshold masked every token and the run did not train

    def token_losses(self, logits, batch):
        loss, kept = profit_loss(logits, batch["targets"], threshold=self.params.threshold)
        self.count_gate(kept, batch["loss_mask"])
        return loss
