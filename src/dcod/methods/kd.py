"""Offline token KD (Hinton et al. 2015): forward KL to the stored teacher top-k (plus one tail bucket) on the
offline traces."""

from dcod import objectives
from dcod.methods.base import Method, register


@register
class KD(Method):
    name = "kd"

    def token_losses(self, logits, batch):
        return objectives.kd_topk_loss(logits, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"])
