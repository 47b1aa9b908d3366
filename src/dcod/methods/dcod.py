"""DCOD: offline traces, per-token weights from detached student/reference log-ratios (docs/method.md).

The reference is the stored teacher log-probs (default), a frozen copy of the initial student, or none
(the student's likelihood alone). Weights are normalised over the whole optimiser batch: the trainer
gathers every rank's ``unit_scores`` before calling ``weights``.
"""

from __future__ import annotations

from typing import Literal

import torch

from pydantic import Field, model_validator

from dcod import objectives
from dcod.config import Float, Section
from dcod.methods.base import Method, Needs, Scores, reference_logprobs, register


class DCODParams(Section):
    """docs/method.md. ``beta``: a number (fixed), ``null`` (adaptive: the largest β <= ``beta_max`` whose
    ESS meets ``ess_target``) or ``ess_floor`` (importance sampling's tempering: β = 1 on the summed
    log-ratio unless its ESS falls below ``ess_target``, then the largest β that meets it). ``clip: null``
    is C = inf. ``step_separators``: the strings that end a reasoning step (``granularity: step``)."""

    granularity: Literal["prefix", "sequence", "token", "step"] = "sequence"
    discount: Float = Field(1.0, ge=0.0, le=1.0)
    beta: float | Literal["ess_floor"] | None = None
    ess_target: Float = Field(0.5, gt=0.0, le=1.0)
    beta_max: Float = Field(100.0, gt=0)
    clip: Float | None = Field(5.0, ge=1.0)  # weights have mean 1: a clip below 1 truncates every weight
    reference: Literal["teacher", "initial_student", "none"] = "teacher"
    token_loss: Literal["nll", "kd"] = "nll"  # kd: the offline top-k KL instead of NLL
    step_separators: list[str] = Field(default_factory=lambda: [";", "\n"], min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _beta_rule(cls, data):
        """A number (YAML 1.1 reads ``1e-3`` as a string), null or ``ess_floor``; nothing else."""
        beta = data.get("beta") if isinstance(data, dict) else None
        if isinstance(beta, str) and beta != "ess_floor":
            try:
                return {**data, "beta": float(beta)}
            except ValueError:
                raise ValueError(f"beta: must be a number >= 0, null (adaptive) or ess_floor, got {beta!r}") from None
        return data

    @model_validator(mode="after")
    def _beta_range(self):
        if isinstance(self.beta, float) and not self.beta >= 0:
            raise ValueError(f"beta: must be >= 0, got {self.beta}")
        return self

    @property
    def tempering(self) -> tuple[float | None, float]:
        """(β or None for the bisection, the bisection's upper bound): ``ess_floor`` bisects in [0, 1]."""
        if self.beta == "ess_floor":
            return None, 1.0
        return self.beta, self.beta_max


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
        beta = "adaptive" if params.beta is None else params.beta if isinstance(params.beta, str) else f"{params.beta:g}"
        return {"granularity": params.granularity, "discount": params.discount, "beta": beta,
                "ess_target": params.ess_target,
                "clip": "inf" if params.clip is None else f"{params.clip:g}", "reference": params.reference,
                "token_loss": params.token_loss}

    def extra_inputs(self, batch, examples):
        reference = reference_logprobs(self, batch, self.params.reference)
        if reference is not None:  # reference none: the student's likelihood alone
            batch["reference_logprobs"] = reference

    def unit_scores(self, logits, batch):
        p, mask = self.params, batch["loss_mask"]
        student = objectives.target_logprobs(logits.detach(), batch["targets"])
        ratios = objectives.dcod_log_ratios(student, batch.get("reference_logprobs"), mask, p.reference)
        steps = None
        if p.granularity == "step":
            steps = objectives.dcod_step_ids(batch["targets"], mask, self._separator_ids())
        # ess_floor tempers the log of the ratio itself: the sequence's summed log-ratio, not its mean
        reduction = "sum" if p.beta == "ess_floor" else "mean"
        scores = objectives.dcod_scores(ratios, mask, p.granularity, p.discount, step_ids=steps,
                                        sequence_reduction=reduction)
        return Scores(scores, token_stats={"log_ratio": ratios}, units=steps)

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        # (β, L) of the last optimiser batch's exact weights: one-pass accumulation tempers and truncates
        # the next batch with them (docs/method.md, "Accumulation without a scoring pass")
        self.lag: tuple[float, float | None] | None = None
        self._separators: torch.Tensor | None = None

    def _separator_ids(self) -> torch.Tensor:
        """Every vocabulary id whose text contains a step separator (docs/method.md, step 2); once per run."""
        if self._separators is None:
            tokenizer, separators = self.ctx.tokenizer, self.params.step_separators
            ids = [i for i in range(len(tokenizer)) if any(sep in tokenizer.decode([i]) for sep in separators)]
            if not ids:
                raise ValueError(f"dcod: params.step_separators {separators}: no token of the tokenizer contains "
                                 "one, so granularity 'step' would see one step per trace")
            self._separators = torch.tensor(ids, dtype=torch.long)
        return self._separators

    def _exact(self, scores, mask, units=None, beta=None):
        """(β, L) of these scores' exact weights; ``beta``: the β ``dcod_weights`` already chose for them
        (the same bisection on the same scores: running it once more was half the weights' cost)."""
        p = self.params
        chosen, beta_max = p.tempering
        beta = chosen if beta is None else beta
        return objectives.dcod_exact_tempering(scores, mask, p.granularity, beta=beta, ess_target=p.ess_target,
                                               beta_max=beta_max, clip=p.clip, units=units)

    def weights(self, scores, mask, units=None):
        p = self.params
        beta, beta_max = p.tempering
        weights, diagnostics = objectives.dcod_weights(scores, mask, p.granularity, beta=beta,
                                                       ess_target=p.ess_target, beta_max=beta_max, clip=p.clip,
                                                       units=units)
        if mask.any():
            self.lag = self._exact(scores, mask, units, beta=diagnostics["beta"])
        return weights, diagnostics

    def _fixed(self) -> bool:
        """β given and no truncation: the weights are exp(β s) normalised, exact in one pass."""
        return self.params.tempering[0] is not None and self.params.clip is None

    def stream_ready(self):
        return self._fixed() or self.lag is not None

    def stream_weights(self, scores, mask):
        beta, log_clip = (self.params.beta, None) if self._fixed() else self.lag
        return objectives.dcod_stream_log_weights(scores, mask, beta, log_clip), True

    def stream_diagnostics(self, scores, mask, units=None):
        used = (self.params.beta, None) if self._fixed() else self.lag
        exact = self._exact(scores, mask, units)
        diagnostics = objectives.dcod_stream_diagnostics(scores, mask, self.params.granularity, used, exact, units)
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
