"""Methods: where each step's examples come from and which per-token loss (and weight) trains them.

The maths lives in ``dcod.objectives`` (pure tensor functions); a method here only wires data to it.
Adding a baseline = one class here (usually a few lines) + one ``experiments/<name>/config.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dcod import objectives
from dcod.data import EpochSampler, collate, example_lengths
from dcod.generation import SamplingParams
from dcod.models import shared_vocab_logits


@dataclass
class Cost:
    """What a run spent during training (DESIGN §3: recorded for every method)."""

    student_tokens_trained: int = 0
    tokens_sampled: int = 0
    teacher_forward_tokens: int = 0
    reference_forward_tokens: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StepContext:
    """What a method may use besides its own parameters; filled by the trainer."""

    tokenizer: object
    traces: list[dict]
    batch_size: int
    seed: int
    teacher: object = None  # anything with ``next_token_logprobs`` (toy teacher) or an HF model
    reference_model: object = None
    student_backend: object = None  # a generation backend over the live student
    prompts: list[dict] = field(default_factory=list)  # training prompts with gold (self-distillation)
    max_new_tokens: int = 256
    grade: object = None  # callable(golds, texts) -> list[bool]


class Method:
    name = "base"
    weighted = False  # True: per-token weights computed over the whole optimiser batch (DCOD)

    def __init__(self, params, ctx: StepContext, cost: Cost):
        self.params, self.ctx, self.cost = params, ctx, cost
        self.sampler = (EpochSampler(len(ctx.traces), ctx.batch_size, ctx.seed, lengths=example_lengths(ctx.traces))
                        if ctx.traces else None)

    def examples(self, step: int, model) -> list[dict]:
        return [self.ctx.traces[i] for i in self.sampler.indices(step)]

    def extra_inputs(self, batch: dict, examples: list[dict]) -> None:
        """Add tensors the loss needs beyond the collated batch (teacher distributions, references)."""

    def token_losses(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return objectives.nll_loss(logits, batch["targets"])

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass


class SFT(Method):
    name = "sft"


class DFT(Method):
    name = "dft"

    def token_losses(self, logits, batch):
        return objectives.dft_loss(logits, batch["targets"])


class KD(Method):
    name = "kd"

    def token_losses(self, logits, batch):
        return objectives.kd_topk_loss(logits, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"])


class DCOD(Method):
    """Offline traces, per-token weights from detached student/reference log-ratios (DESIGN §2)."""

    name = "dcod"
    weighted = True

    def extra_inputs(self, batch, examples):
        if self.params.reference == "initial_student":
            with torch.no_grad():
                logits = self.ctx.reference_model(input_ids=batch["input_ids"]).logits[:, :-1]  # right-padded
            batch["reference_logprobs"] = objectives.target_logprobs(logits, batch["targets"])
            self.cost.reference_forward_tokens += int(batch["attention_mask"].sum())
        elif self.params.reference == "teacher":
            batch["reference_logprobs"] = batch["teacher_logprobs"]

    def unit_scores(self, logits, batch) -> torch.Tensor:
        student = objectives.target_logprobs(logits.detach(), batch["targets"])
        ratios = objectives.dcod_log_ratios(student, batch.get("reference_logprobs"), batch["loss_mask"],
                                            self.params.reference)
        batch["log_ratios"] = ratios
        return objectives.dcod_scores(ratios, batch["loss_mask"], self.params.granularity, self.params.discount)

    def weights(self, scores: torch.Tensor, mask: torch.Tensor):
        p = self.params
        return objectives.dcod_weights(scores, mask, p.granularity, beta=p.beta, ess_target=p.ess_target,
                                       beta_max=p.beta_max, clip=p.clip)

    def token_losses(self, logits, batch):
        if self.params.token_loss == "kd":
            return objectives.kd_topk_loss(logits, batch["teacher_topk_ids"], batch["teacher_topk_logprobs"])
        return objectives.nll_loss(logits, batch["targets"])


def teacher_full_logprobs(teacher, examples: list[dict], batch: dict, vocab_size: int) -> torch.Tensor:
    """Teacher log-distribution ``[B, L-1, V]`` at every target position of ``batch``, over the shared
    tokenizer's ``vocab_size`` tokens (lm-heads padded beyond it, as in Qwen2.5, are sliced off)."""
    width = batch["input_ids"].shape[1] - 1
    if hasattr(teacher, "next_token_logprobs"):  # the exact toy teacher
        rows = []
        for example in examples:
            table = teacher.next_token_logprobs(example["prompt_ids"], example["completion_ids"])
            start = len(example["prompt_ids"]) - 1
            vocab = table.shape[-1]
            full = torch.full((width, vocab), -torch.log(torch.tensor(float(vocab))))
            full[start: start + len(example["completion_ids"])] = table[: len(example["completion_ids"])]
            rows.append(full)
        return torch.stack(rows).to(batch["input_ids"].device)
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"]).logits[:, :-1]  # right-padded: no mask needed
    return torch.log_softmax(shared_vocab_logits(logits, vocab_size).float(), dim=-1)


class OnPolicyKD(Method):
    """GKD: a fraction of each batch replaced by fresh student samples; generalised JSD to the teacher."""

    name = "onpolicy_kd"

    def examples(self, step, model):
        examples = super().examples(step, model)
        n_student = round(self.params.student_fraction * len(examples))
        if n_student == 0:
            return examples
        params = SamplingParams(max_new_tokens=self.params.max_new_tokens or self.ctx.max_new_tokens,
                                temperature=self.params.sample_temperature, seed=self.ctx.seed * 100003 + step)
        samples = self.ctx.student_backend.generate([e["prompt_ids"] for e in examples[:n_student]], params)
        replaced = [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids} for g in samples]
        self.cost.tokens_sampled += sum(len(g.token_ids) for g in samples)
        return replaced + [{"prompt_ids": e["prompt_ids"], "completion_ids": e["completion_ids"]}
                           for e in examples[n_student:]]

    def extra_inputs(self, batch, examples):
        batch["teacher_full_logprobs"] = teacher_full_logprobs(self.ctx.teacher, examples, batch,
                                                               len(self.ctx.tokenizer))
        self.cost.teacher_forward_tokens += sum(len(e["prompt_ids"]) + len(e["completion_ids"]) for e in examples)

    def token_losses(self, logits, batch):
        vocab = batch["teacher_full_logprobs"].shape[-1]
        return objectives.generalized_jsd(shared_vocab_logits(logits, vocab), batch["teacher_full_logprobs"],
                                          beta=self.params.jsd_beta)


class SelfDistill(Method):
    """Rejection-sampling self-training: each round samples k completions per prompt from the current
    student, keeps the verified-correct ones and trains on them with NLL (STaR / RFT)."""

    name = "self_distill"

    def __init__(self, params, ctx, cost, total_steps: int):
        super().__init__(params, ctx, cost)
        self.steps_per_round = -(-total_steps // params.rounds)
        self.round_data: dict[int, list[dict]] = {}
        self.accepted: dict[int, float] = {}

    def _build_round(self, round_index: int, model) -> list[dict]:
        p, ctx = self.params, self.ctx
        n_prompts = p.prompts_per_round or max(1, self.steps_per_round * ctx.batch_size // p.samples_per_prompt)
        order = torch.randperm(len(ctx.prompts), generator=torch.Generator().manual_seed(ctx.seed * 1009 + round_index))
        chosen = [ctx.prompts[i] for i in order[:n_prompts].tolist()]
        params = SamplingParams(max_new_tokens=ctx.max_new_tokens, temperature=p.sample_temperature,
                                n=p.samples_per_prompt, seed=ctx.seed * 7919 + round_index)
        samples = ctx.student_backend.generate([c["prompt_ids"] for c in chosen], params, progress=True)
        self.cost.tokens_sampled += sum(len(g.token_ids) for g in samples)
        correct = ctx.grade([chosen[g.prompt_index]["gold"] for g in samples], [g.text for g in samples])
        kept = [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids}
                for g, ok in zip(samples, correct) if ok and g.finish_reason == "stop"]
        self.accepted[round_index] = len(kept) / max(1, len(samples))
        if not kept:  # nothing verified: this round's steps make no update (counted in the run's log)
            print(f"self_distill round {round_index}: none of {len(samples)} student samples was correct; "
                  "its optimiser steps are skipped")
        return kept

    def examples(self, step, model):
        round_index = step // self.steps_per_round
        if round_index not in self.round_data:
            self.round_data = {round_index: self._build_round(round_index, model)}
        data = self.round_data[round_index]
        if not data:
            return []
        sampler = EpochSampler(len(data), self.ctx.batch_size, self.ctx.seed * 31 + round_index,
                               lengths=example_lengths(data))
        return [data[i] for i in sampler.indices(step - round_index * self.steps_per_round)]

    def state(self):
        """JSON-safe (the checkpoint's progress file is JSON, docs/architecture.md "Checkpoints"): round
        indices as string keys, token ids as plain ints."""
        rounds = {str(index): [{"prompt_ids": [int(t) for t in e["prompt_ids"]],
                                "completion_ids": [int(t) for t in e["completion_ids"]]} for e in data]
                  for index, data in self.round_data.items()}
        return {"round_data": rounds, "accepted": {str(k): float(v) for k, v in self.accepted.items()}}

    def load_state(self, state):
        # JSON keys come back as strings: the round index is an int everywhere else
        self.round_data = {int(k): v for k, v in state.get("round_data", {}).items()}
        self.accepted = {int(k): v for k, v in state.get("accepted", {}).items()}


METHOD_CLASSES = {cls.name: cls for cls in (SFT, DFT, KD, DCOD, OnPolicyKD, SelfDistill)}


def build_method(name: str, params, ctx: StepContext, cost: Cost, total_steps: int) -> Method:
    if name not in METHOD_CLASSES:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHOD_CLASSES))}")
    if name == "self_distill":
        return SelfDistill(params, ctx, cost, total_steps)
    return METHOD_CLASSES[name](params, ctx, cost)


def collate_for(method: Method, examples: list[dict], pad_id: int, device=None) -> dict:
    """The padded batch on ``device`` (the training device; None: where collate builds it, the CPU),
    then the method's extra inputs (teacher or reference forwards) computed from it."""
    batch = collate(examples, pad_id)
    if device is not None:
        from accelerate.utils import send_to_device

        batch = send_to_device(batch, device)
    method.extra_inputs(batch, examples)
    return batch
