"""The trainer/method contract: what a method declares, which hooks the trainer calls, what they return.

A method is one class in its own module of ``dcod.methods``, decorated with ``@register``. It declares

    name: str                       the experiment configs' ``method:`` value
    Params: type[Section]           its knobs as a pydantic model (``dcod.config.Section``: unknown keys,
                                    NaN/inf and out-of-range values refused, naming the key)
    needs(params) -> Needs          what the pipeline must load into its StepContext (and what its runs
                                    cost: ``Needs`` is written into run.json for the tables)
    weighted: bool                  True: per-token weights from ``unit_scores``/``weights`` (DCOD)
    weight_diagnostics: tuple[str]  the keys ``weights`` logs per step (Table 2 averages their last 20%)
    report_columns(params) -> dict  its knobs as Table 2 cells

and is built as ``cls(params, ctx, cost)``. Each optimiser step the trainer (``dcod.training``) calls,
with B sequences, T target positions (the collated width minus one), V the vocabulary and U score
units (one per sequence at sequence granularity, T at prefix and token granularity):

    examples(step, model) -> list[dict]           the step's global batch: prompt_ids, completion_ids
                                                  (+ stored teacher_logprobs, topk_ids, topk_logprobs)
    extra_inputs(batch, examples) -> None         adds tensors the loss needs to the collated batch:
                                                  teacher log-distributions [B, T, V], reference
                                                  log-probs [B, T]; it may count forward tokens in cost
    token_losses(logits [B, T, V], batch) -> [B, T]   unreduced (logits: a tensor or, for large
                                                  vocabularies, an ``objectives.ChunkedLMHead``); the trainer masks and reduces them as
                                                  sum(w * loss * mask) / N over the whole optimiser batch
  weighted methods only:
    unit_scores(logits [B, T, V], batch) -> Scores    from detached logits: the scores [B, U] and
                                                  per-token statistics [B, T] logged as mean_<name>
    weights(scores [N, U], mask [N, T]) -> (weights [N, T], diagnostics: dict[str, float])
                                                  over every micro-batch of every rank (N rows); a
                                                  method whose Scores carry ``units`` also gets
                                                  ``units=`` [N, T] (and so does stream_diagnostics)
  weighted methods, accumulation in one pass (``train.weighted_accumulation: single_pass``, docs/method.md):
    stream_ready() -> bool                        whether this step's micro-batches can be weighted one at
                                                  a time (else the trainer scores them all first)
    stream_weights(scores [B, U], mask [B, T]) -> (values [B, T], normalise: bool)
                                                  one micro-batch's weights from its own scores: final
                                                  weights (normalise False), or log-weights whose exp the
                                                  trainer normalises to token-mean 1 over the global batch
    stream_diagnostics(scores [N, U], mask [N, T]) -> dict    at the step's end, on the gathered scores
  and between steps:
    state() -> dict, load_state(dict)             JSON-safe resumable state (the checkpoint's progress)
    run_summary() -> dict                         extra fields for run.json

Methods never write into the batch what the trainer reads back: scores and their diagnostics travel in
``Scores``. The maths lives in pure tensor functions — in ``dcod.objectives`` when several methods share
it, else in the method's own module (docs/architecture.md, "A new baseline"); a method wires data to it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from dcod import objectives
from dcod.config import Section
from dcod.data import EpochSampler, collate, example_lengths

REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` the method named ``cls.name`` (one module per method)."""
    if not isinstance(cls.name, str) or not cls.name or cls.name == Method.name:
        raise TypeError(f"{cls.__qualname__}: a registered method needs its own `name`")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        first = REGISTRY[cls.name].__module__
        raise TypeError(f"method {cls.name!r} is registered twice ({first}, {cls.__module__})")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, Section)):
        raise TypeError(f"{cls.__qualname__}.Params must be a dcod.config.Section (pydantic) model")
    REGISTRY[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Needs:
    """What a method uses besides the student: the pipeline loads exactly these into its StepContext,
    the Snakemake rules choose the launcher from them, and the tables count offline trace cost by them."""

    offline_traces: bool = True  # trains on the teacher's stored completions (their one-off cost counts)
    teacher_model: bool = False  # a teacher in memory that scores the step's examples
    student_rollouts: bool = False  # samples the student while it trains (a rollout backend)
    reference_model: bool = False  # a frozen copy of the initial student
    training_prompts: bool = False  # the training prompts with golds and a grader
    # uses knowledge no real method has (the toy world's step styles): a reference row, never a baseline,
    # and only where that knowledge exists (data.source toy)
    oracle_knowledge: bool = False
    # Offline passes over the seed's base student, run once per seed by their own DAG stage before training
    # (dcod.student_pass, docs/architecture.md "Offline student passes"); their cost goes into run.json:
    student_traces: bool = False  # one completion per training prompt sampled from the base student,
    #                               scored by the teacher (log-prob and top-k per token): StepContext.student_traces
    trace_scores: bool = False  # every teacher trace scored by the base student (per-token NLL and rank):
    #                             StepContext.trace_scores, one row per trace

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


@dataclass
class Cost:
    """What a run spent during training (recorded for every method: docs/method.md, fair comparison)."""

    student_tokens_trained: int = 0
    tokens_sampled: int = 0
    teacher_forward_tokens: int = 0
    reference_forward_tokens: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StepContext:
    """What a method may use besides its parameters; the pipeline fills what ``needs`` declares."""

    tokenizer: object
    traces: list[dict]
    batch_size: int
    seed: int
    total_steps: int = 0  # optimiser steps of the run (self-distillation splits them into rounds)
    teacher: object = None  # anything with ``next_token_logprobs`` (toy teacher) or an HF model
    reference_model: object = None
    student_backend: object = None  # a generation backend over the live student
    prompts: list[dict] = field(default_factory=list)  # training prompts with gold
    max_new_tokens: int = 256
    grade: object = None  # callable(golds, texts) -> list[bool]
    student_traces: list[dict] = field(default_factory=list)  # Needs.student_traces: examples like ``traces``
    trace_scores: list[dict] = field(default_factory=list)  # Needs.trace_scores: {"nll", "rank"} per trace


@dataclass
class Scores:
    """``unit_scores``' result: ``values`` [B, U] for ``weights``, and per-token statistics [B, T] (e.g.
    DCOD's log-ratios) that the trainer gathers and logs as ``mean_<name>`` over supervised tokens.
    ``units`` [B, T] (long, −1 where masked): which unit of its row each token belongs to, where the
    units are neither tokens nor rows (DCOD's reasoning steps); the trainer gathers it with the scores
    and passes it on as ``units=``."""

    values: torch.Tensor
    token_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    units: torch.Tensor | None = None


class NoParams(Section):
    """A method without knobs: any key under ``params`` is an error."""


class Method:
    """Offline traces, NLL on every completion token: the default of every hook (and the base student's
    pre-training objective). Subclasses override what differs."""

    name = "base"
    Params: type[Section] = NoParams
    weighted = False
    weight_diagnostics: tuple[str, ...] = ()
    # The trainer may pass an ``objectives.ChunkedLMHead`` instead of logits (large vocabularies): every
    # loss that only reads log-probs of given ids through ``objectives`` accepts it. False: full logits.
    chunked_logits = True

    def __init__(self, params: Section, ctx: StepContext, cost: Cost):
        self.params, self.ctx, self.cost = params, ctx, cost
        self.sampler = None
        if ctx.traces:
            self.sampler = EpochSampler(len(ctx.traces), ctx.batch_size, ctx.seed,
                                        lengths=example_lengths(ctx.traces))

    @classmethod
    def needs(cls, params: Section) -> Needs:
        return Needs()

    @classmethod
    def report_columns(cls, params: Section) -> dict:
        return params.model_dump(mode="json")

    def examples(self, step: int, model) -> list[dict]:
        return [self.ctx.traces[i] for i in self.sampler.indices(step)]

    def extra_inputs(self, batch: dict, examples: list[dict]) -> None:
        """Add tensors the loss needs beyond the collated batch (teacher distributions, references)."""

    def token_losses(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return objectives.nll_loss(logits, batch["targets"])

    def unit_scores(self, logits: torch.Tensor, batch: dict) -> Scores:
        raise NotImplementedError(f"{self.name} is not a weighted method")

    def weights(self, scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError(f"{self.name} is not a weighted method")

    def stream_ready(self) -> bool:
        return False

    def stream_weights(self, scores: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, bool]:
        raise NotImplementedError(f"{self.name} does not weight micro-batches one at a time")

    def stream_diagnostics(self, scores: torch.Tensor, mask: torch.Tensor) -> dict:
        raise NotImplementedError(f"{self.name} does not weight micro-batches one at a time")

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def run_summary(self) -> dict:
        return {}


class GatedTokens(Method):
    """A method whose loss keeps some supervised tokens and masks the rest (ProFit's threshold, SpecKD's
    acceptance): it counts the kept and the supervised tokens over the run (this process's share of each
    batch; carried through checkpoints) and writes their ratio to run.json under ``gate_summary``."""

    gate_summary = ""  # the run.json key of the kept fraction

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        self._counts = None  # [kept, supervised] tokens trained so far by this process

    def count_gate(self, kept: torch.Tensor, mask: torch.Tensor) -> None:
        counts = torch.stack([(kept & mask).sum(), mask.sum()]).double()
        self._counts = counts if self._counts is None else self._counts + counts.to(self._counts.device)

    def state(self):
        return {"counts": None if self._counts is None else [float(v) for v in self._counts]}

    def load_state(self, state):
        self._counts = None if state.get("counts") is None else torch.tensor(state["counts"], dtype=torch.float64)

    def run_summary(self):
        kept, total = (0.0, 0.0) if self._counts is None else (float(v) for v in self._counts)
        return {self.gate_summary: kept / total if total else 0.0}


def reference_logprobs(method: Method, batch: dict, reference: str) -> torch.Tensor | None:
    """Per-token log-probs [B, T] of the targets under a method's reference (DCOD, iw-SFT):
    ``initial_student`` a no-grad forward of the frozen initial student (its tokens counted as reference
    cost), ``teacher`` the stored log-prob of each sampled token under the teacher that sampled it,
    anything else None."""
    if reference == "initial_student":
        with torch.no_grad():
            logits = method.ctx.reference_model(input_ids=batch["input_ids"]).logits[:, :-1]  # right-padded
        method.cost.reference_forward_tokens += int(batch["attention_mask"].sum())
        return objectives.target_logprobs(logits, batch["targets"])
    if reference == "teacher":
        return batch["teacher_logprobs"]
    return None


def collate_for(method: Method, examples: list[dict], pad_id: int, device=None) -> dict:
    """The padded batch on ``device`` (the training device; None: where collate builds it, the CPU),
    then the method's extra inputs (teacher or reference forwards) computed from it."""
    batch = collate(examples, pad_id)
    if device is not None:
        from accelerate.utils import send_to_device

        batch = send_to_device(batch, device)
    method.extra_inputs(batch, examples)
    return batch
