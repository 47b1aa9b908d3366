"""DCOD: offline traces, per-token weights from detached student/reference log-ratios (docs/method.md).

The reference is the stored teacher log-probs (default), a frozen copy of the initial student, or none
(the student's likelihood alone). Weights are normalised over the whole optimiser batch: the trainer
gathers every rank's ``unit_scores`` before calling ``weights``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, Needs, Scores, reference_logprobs, register


class DCODParams(Section):
    """docs/method.md. ``beta: null`` means adaptive (bisection to ``ess_target``); ``clip: null`` is C = inf."""

    granularity: Literal["prefix", "sequence"] = "sequence"
    discount: Float = Field(1.0, ge=0.0, le=1.0)
    beta: Float | None = Field(None, ge=0)
    ess_target: Float = Field(0.5, gt=0.0, le=1.0)
    beta_max: Float = Field(100.0, gt=0)
    clip: Float | None = Field(5.0, ge=1.0)  # weights have mean 1: a clip below 1 truncates every weight
    reference: Literal["teacher", "initial_student", "none"] = "teacher"
    token_loss: Literal["nll", "kd"] = "nll"  # kd: the offline top-k KL instead of NLL


@register
class DCOD(Method):
    name = "dcod"
    Params = DCODParams
    weighted = True
    weight_diagnostics = ("beta", "ess_fraction", "clip_fraction")

    @classmethod
    def needs(cls, params):
        return Needs(reference_model=params.reference == "initial_student")

    @classmethod
    def report_columns(cls, params):
        """The knobs of Table 2 ('adaptive' for beta null, 'inf' for no truncation)."""
        return {"granularity": params.granularity, "discount": params.discount,
                "beta": "adaptive" if params.beta is None else f"{params.beta:g}", "ess_target": params.ess_target,
                "clip": "inf" if params.clip is None else f"{params.clip:g}", "reference": params.reference,
                "token_loss": params.token_loss}

    def extra_inputs(self, batch, examples):
        reference = reference_logprobs(self, batch, self.params.reference)
        if reference is not None:  # reference none: the student's likelihood alone
            batch["reference_logprobs"] = reference

    def unit_scores(self, logits, batch):
        student = objectives.target_logprobs(logits.detach(), batch["targets"])
        ratios = objectives.dcod_log_ratios(student, batch.get("reference_logprobs"), batch["loss_mask"],
                                            self.params.reference)
        scores = objectives.dcod_scores(ratios, batch["loss_mask"], self.params.granularity, self.params.discount)
        return Scores(scores, token_stats={"log_ratio": ratios})

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        # (β, L) of the last optimiser batch's exact weights: one-pass accumulation tempers and truncates
        # the next batch with them (docs/method.md, "Accumulation without a scoring pass")
        self.lag: tuple[float, float | None] | None = None

    def _exact(self, scores, mask):
        p = self.params
        return objectives.dcod_exact_tempering(scores, mask, p.granularity, beta=p.beta, ess_target=p.ess_target,
                                               beta_max=p.beta_max, clip=p.clip)

    def weights(self, scores, mask):
        p = self.params
        weights, diagnostics = objectives.dcod_weights(scores, mask, p.granularity, beta=p.beta,
                                                       ess_target=p.ess_target, beta_max=p.beta_max, clip=p.clip)
        if mask.any():
            self.lag = self._exact(scores, mask)
        return weights, diagnostics

    def _fixed(self) -> bool:
        """β given and no truncation: the weights are exp(β s) normalised, exact in one pass."""
        return self.params.beta is not None and self.params.clip is None

    def stream_ready(self):
        return self._fixed() or self.lag is not None

    def stream_weights(self, scores, mask):
        beta, log_clip = (self.params.beta, None) if self._fixed() else self.lag
        return objectives.dcod_stream_log_weights(scores, mask, beta, log_clip), True

    def stream_diagnostics(self, scores, mask):
        used = (self.params.beta, None) if self._fixed() else self.lag
        exact = self._exact(scores, mask)
        diagnostics = objectives.dcod_stream_diagnostics(scores, mask, self.params.granularity, used, exact)
        if mask.any():
            self.lag = exact
        return diagnostics

    def state(self):
        """JSON-safe: the lagged (β, L), L None for no truncation."""
        return {"lag": None if self.lag is None else [float(self.lag[0]),
                                                       None if self.lag[1] is None else float(self.lag[1])]}

    def load_state(self, state):
        lag = state.get("lag")
        self.lag = None if lag is None else (float(lag[0]), None if lag[1] is None else float(lag[1]))

    def token_losses(self, logits, batch):
        if self.params.token_loss == "kd":
            return objectives.kd_topk_loss(logits, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"])
        return objectives.nll_loss(logits, batch["targets"])
