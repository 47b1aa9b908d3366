"""Dynamic fine-tuning (Wu et al. 2025) on the offline traces: NLL scaled by the detached token probability."""

from dcod import objectives
from dcod.methods.base import Method, register


@register
class DFT(Method):
    name = "dft"

    def token_losses(self, logits, batch):
        return objectives.dft_loss(logits, batch["targets"])
