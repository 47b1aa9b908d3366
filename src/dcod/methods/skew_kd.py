"""DistiLLM's skew KL (Ko et al., ICML 2024) offline: the stored teacher top-k plus one tail bucket, as ``kd``.

docs/method.md, "``skew_kd``": the token loss is KL(p ‖ α p + (1 − α) q_θ) (``forward``, SKL) or
KL(q_θ ‖ α q_θ + (1 − α) p) (``reverse``, SRKL) over the K+1 buckets; at α = 0 the forward loss is
``kd``'s. Only DistiLLM's loss is taken: its adaptive student generation needs rollouts.
"""

from typing import Literal

from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, register


class SkewKDParams(Section):
    """α = 0.1 is the ``--skew-alpha`` default of the authors' released code; α = 1 makes the loss 0."""

    alpha: Float = Field(0.1, ge=0, lt=1)
    direction: Literal["forward", "reverse"] = "forward"  # forward: the skewed counterpart of kd


@register
class SkewKD(Method):
    name = "skew_kd"
    Params = SkewKDParams

    def token_losses(self, logits, batch):
        return objectives.skew_kl_topk_loss(logits, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"],
                                            alpha=self.params.alpha, direction=self.params.direction)
