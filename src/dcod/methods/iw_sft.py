"""Importance-weighted SFT (Qin & Springenberg 2025, arXiv:2507.12856) on the offline traces.

docs/method.md, "``iw_sft``": each trace's NLL is weighted by its detached, clipped sequence importance
weight w(y) = clip(exp(mean_t [log π_θ(y_t) − log π_ref(y_t)]), clip_min, clip_max), as in the authors'
released code (``IwSFTLoss``). π_ref is a frozen copy of the initial student by default, as that code
uses (so w = 1, i.e. SFT, at the first step); ``teacher`` uses the stored teacher log-probs, the policy
that actually sampled our traces (no extra forward). A weighted method: the scores are the sequence
log-weights, the weights come from them over the whole optimiser batch (only ``normalize`` needs the
whole batch; unnormalised weights depend on their own sequence alone).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, Needs, Scores, reference_logprobs, register


class IwSFTParams(Section):
    """Defaults are the authors' released code: weights clamped to [0, 16], the log-ratio averaged over the
    sequence's tokens, no normalisation over the batch (``normalize: true`` is ours: mean weight 1)."""

    reference: Literal["initial_student", "teacher"] = "initial_student"
    clip_min: Float = Field(0.0, ge=0)
    clip_max: Float = Field(16.0, gt=0)
    length_normalize: bool = True  # false: the exact sequence ratio, a product over every token
    normalize: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if self.clip_min > self.clip_max:
            raise ValueError(f"clip_min: must be <= clip_max={self.clip_max}")
        return self


@register
class IwSFT(Method):
    name = "iw_sft"
    Params = IwSFTParams
    weighted = True
    weight_diagnostics = ("mean_weight", "clip_fraction", "max_weight")

    @classmethod
    def needs(cls, params):
        return Needs(reference_model=params.reference == "initial_student")

    def extra_inputs(self, batch, examples):
        batch["reference_logprobs"] = reference_logprobs(self, batch, self.params.reference)

    def unit_scores(self, logits, batch):
        """One score per sequence: its log importance weight [B, 1]; the per-token log-ratios are logged."""
        mask = batch["loss_mask"]
        student = objectives.target_logprobs(logits.detach(), batch["targets"])
        reference = batch["reference_logprobs"]
        log_weights = objectives.iw_sft_sequence_log_weights(student, reference, mask,
                                                             length_normalize=self.params.length_normalize)
        ratios = torch.where(mask, student - reference, torch.zeros_like(student))
        return Scores(log_weights.unsqueeze(-1), token_stats={"log_ratio": ratios})

    def stream_ready(self):
        return True

    def stream_weights(self, scores, mask):
        """Unnormalised: each row's weight is its own (the released code's), so a micro-batch's weights
        are final; ``normalize``: log-weights, normalised over the global batch by the trainer (exact)."""
        if not self.params.normalize:
            return self.weights(scores, mask)[0], False
        p = self.params
        low = math.log(p.clip_min) if p.clip_min > 0 else -math.inf
        log_weights = scores[:, 0].detach().double().clamp(min=low, max=math.log(p.clip_max))
        per_token = log_weights.unsqueeze(-1).expand(mask.shape)
        return torch.where(mask.bool(), per_token, torch.full_like(per_token, -math.inf)), True

    def stream_diagnostics(self, scores, mask):
        return self.weights(scores, mask)[1]

    def weights(self, scores, mask):
        p = self.params
        log_weights = scores[:, 0]
        weights = objectives.iw_sft_weights(log_weights, mask, clip_min=p.clip_min, clip_max=p.clip_max,
                                            normalize=p.normalize)
        rows = mask.any(-1)
        if not bool(rows.any()):
            return weights, {"mean_weight": 0.0, "clip_fraction": 0.0, "max_weight": 0.0}
        # a sequence is clipped when its raw weight lies outside [clip_min, clip_max]
        low = math.log(p.clip_min) if p.clip_min > 0 else -math.inf
        clipped = (log_weights[rows] > math.log(p.clip_max)) | (log_weights[rows] < low)
        return weights, {"mean_weight": float(weights[mask].double().mean()),  # per supervised token: SFT is 1
                         "clip_fraction": float(clipped.double().mean()),
                         "max_weight": float(weights[mask].max())}
