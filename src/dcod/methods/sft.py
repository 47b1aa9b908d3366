"""SFT (sequence-level KD, Kim & Rush 2016): NLL on the verified offline teacher traces."""

from dcod.methods.base import Method, register


@register
class SFT(Method):
    name = "sft"
