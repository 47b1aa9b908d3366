"""The reweighting ceiling (toy only): the best weighting of the teacher's own traces that a perfect
detector of drift could give (docs/claims.md, "The reweighting ceiling").

Every trace that writes a step in the direct style where the two styles differ (a branch point; the
student cannot execute those reliably, docs/toy_world.md) gets weight 0, every other trace weight 1, and
the weights are normalised to mean 1 over the supervised tokens of the optimiser batch, as DCOD's are, so
the loss scale is SFT's. It reads the traces' step styles, which no real method can see: a reference row
like the oracle SFT (which trains on *other* traces), never a baseline. A batch without a kept trace
trains nothing at that step (its weights are all 0), and its ``kept_fraction`` is logged.
"""

from __future__ import annotations

import torch

from dcod.methods.base import Method, Needs, NoParams, Scores, register


@register
class OracleWeights(Method):
    name = "oracle_weights"
    Params = NoParams
    weighted = True
    weight_diagnostics = ("kept_fraction",)

    @classmethod
    def needs(cls, params):
        return Needs(oracle_knowledge=True)

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        from dcod.toy.world import writes_direct_at_branch

        decode = ctx.tokenizer.decode
        # one flag per trace, from its text, once: 1 = written in the student's style at every branch point
        self.keep = {id(trace): not writes_direct_at_branch(decode(trace["completion_ids"], skip_special_tokens=True))
                     for trace in ctx.traces}

    def extra_inputs(self, batch, examples):
        batch["keep"] = torch.tensor([self.keep[id(example)] for example in examples], dtype=torch.float32,
                                     device=batch["loss_mask"].device)

    def unit_scores(self, logits, batch):
        """One unit per trace: 1 kept, 0 dropped [B, 1]."""
        return Scores(batch["keep"].unsqueeze(-1))

    def weights(self, scores, mask):
        """w = keep, normalised to mean 1 over the supervised tokens (all 0 when nothing is kept)."""
        mask = mask.bool()
        keep = scores[:, 0].double()
        kept_tokens = (keep * mask.sum(-1)).sum()
        scale = mask.sum() / kept_tokens if kept_tokens > 0 else 0.0
        weights = torch.where(mask, (keep * scale).unsqueeze(-1).expand_as(mask), torch.zeros_like(mask, dtype=torch.float64))
        rows = mask.any(-1)
        kept_fraction = float(keep[rows].mean()) if rows.any() else 0.0
        return weights.float(), {"kept_fraction": kept_fraction}
