"""SpecKD-style gating (Huang et al. 2025, arXiv:2510.24021; v2 titled SelecTKD): offline token KD only
where the teacher would accept the student's own proposal.

docs/method.md, "``speckd``": at every target position of a teacher trace the student proposes its
greedy token ŷ_t = argmax_v q_θ(v | x, y_<t) (detached); the teacher verifies it ("propose and
verify", as in speculative decoding); the token's KD loss counts fully if accepted, with weight β if
rejected:

    g_t = 1[ŷ_t ∈ top-k of the teacher at t],      ℓ_t = (g_t + β (1 − g_t)) · KL(p_T ‖ q_θ)

with KL the forward KL over the K+1 buckets of ``kd`` (``objectives.kd_topk_loss``). The gate is a
function of detached quantities: no gradient flows through it.

Our readings, each a knob (no code of the authors is public; the paper's "greedy Top-k" verification
and its masking of rejected tokens):

- Proposal and verification: greedy Top-k — accepted when the student's argmax is among the teacher's
  ``accept_top_k`` most likely tokens; these come from the stored top-K log-probs, so ``accept_top_k``
  ≤ K (null, default: all K stored, 20 on the toy and paper profiles, 5 on ci). The paper's non-greedy
  Spec-k variant (sampling the proposal, accepting with probability min(1, p/q)) is not implemented: it
  needs the teacher's probability of a token outside the stored top-k.
- Rejected tokens: β = ``rejected_weight`` = 0 (masked out, the paper's default "hard" gate); β = 1
  accepts everything and is exactly ``kd``.
- Normaliser: the gated sum is divided by the number of *all* supervised tokens (the trainer's
  reduction, as ``kd``), so a batch with few accepted tokens takes a small step.
- The divergence is ``kd``'s forward KL, the KD loss this repository runs offline (the paper's gate is
  loss-agnostic).

run.json records ``speckd_acceptance_rate`` (``run_summary``), the paper's token acceptance rate.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import GatedTokens, register


@torch.no_grad()
def student_greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """argmax_v of the student's logits [B, T, V] → [B, T] long; with a ``ChunkedLMHead``, computed
    ``chunk_tokens`` positions at a time, so no [B, T, V] buffer exists."""
    if not isinstance(logits, objectives.ChunkedLMHead):
        return logits.argmax(-1)
    hidden = logits.hidden.reshape(-1, logits.hidden.shape[-1])
    out = torch.empty(hidden.shape[0], dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.shape[0], logits.chunk_tokens):
        rows = slice(start, start + logits.chunk_tokens)
        out[rows] = (hidden[rows] @ logits.weight.t()).argmax(-1)
    return out.reshape(logits.hidden.shape[:-1])


def speckd_gate(proposals: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                accept_top_k: int | None = None) -> torch.Tensor:
    """g_t = 1 where ``proposals`` [B, T] is among the teacher's ``accept_top_k`` most likely of its stored
    top-K (``topk_ids`` / ``topk_logprobs`` [B, T, K]; None: all K) → [B, T] bool."""
    k = topk_ids.shape[-1] if accept_top_k is None else accept_top_k
    if not 1 <= k <= topk_ids.shape[-1]:
        raise ValueError(f"speckd_gate: accept_top_k must be in [1, {topk_ids.shape[-1]}] (the stored top-k), "
                         f"got {accept_top_k}")
    if k < topk_ids.shape[-1]:  # the k most likely, whatever order they were stored in
        order = topk_logprobs.topk(k, dim=-1).indices
        topk_ids = topk_ids.gather(-1, order)
    return (topk_ids == proposals.unsqueeze(-1)).any(-1)


def speckd_loss(logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                accept_top_k: int | None = None, rejected_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """((g_t + β (1 − g_t)) · ``objectives.kd_topk_loss`` [B, T] float32, the gate g_t [B, T] bool), g_t the
    detached greedy Top-k gate. logits [B, T, V] or a ``ChunkedLMHead``, topk_ids / topk_logprobs [B, T, K]."""
    if not 0.0 <= rejected_weight <= 1.0:
        raise ValueError(f"speckd_loss: rejected_weight must be in [0, 1], got {rejected_weight}")
    gate = speckd_gate(student_greedy_tokens(logits), topk_ids, topk_logprobs, accept_top_k)
    kd = objectives.kd_topk_loss(logits, topk_ids, topk_logprobs)
    weight = torch.where(gate, torch.ones_like(kd), torch.full_like(kd, rejected_weight))
    # where(), not only a product: a rejected token with β = 0 passes no gradient, even a NaN one
    return torch.where(weight > 0, weight * kd, torch.zeros_like(kd)), gate


class SpecKDParams(Section):
    """Greedy Top-k verification over all stored top-k (null) with rejected tokens masked (β = 0)."""

    accept_top_k: int | None = Field(None, ge=1)
    rejected_weight: Float = Field(0.0, ge=0, le=1)


@register
class SpecKD(GatedTokens):
    name = "speckd"
    Params = SpecKDParams
    gate_summary = "speckd_acceptance_rate"  # the paper's token acceptance rate (TAR)

    def token_losses(self, logits, batch):
        loss, gate = speckd_loss(logits, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"],
                                 accept_top_k=self.params.accept_top_k, rejected_weight=self.params.rejected_weight)
        self.count_gate(gate, batch["loss_mask"])
        return loss
