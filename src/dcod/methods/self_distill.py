"""Rejection-sampling self-training (STaR, Zelikman et al. 2022 / RFT, Yuan et al. 2023): each round samples k
completions per prompt from the current student, keeps the verified-correct ones and trains on them with NLL."""

from __future__ import annotations

import torch
from pydantic import Field

from dcod.config import Float, Section
from dcod.data import EpochSampler, example_lengths
from dcod.generation import SamplingParams
from dcod.methods.base import Method, Needs, register


class SelfDistillParams(Section):
    samples_per_prompt: int = Field(4, ge=1)
    rounds: int = Field(2, ge=1)
    sample_temperature: Float = Field(1.0, gt=0)
    prompts_per_round: int = Field(0, ge=0)  # 0: enough prompts for the round's optimiser steps


@register
class SelfDistill(Method):
    name = "self_distill"
    Params = SelfDistillParams

    @classmethod
    def needs(cls, params):
        return Needs(offline_traces=False, student_rollouts=True, training_prompts=True)

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        self.steps_per_round = -(-ctx.total_steps // params.rounds)
        self.round_data: dict[int, list[dict]] = {}
        self.accepted: dict[int, float] = {}

    def _build_round(self, round_index: int, model) -> list[dict]:
        p, ctx = self.params, self.ctx
        n_prompts = p.prompts_per_round or max(1, self.steps_per_round * ctx.batch_size // p.samples_per_prompt)
        generator = torch.Generator().manual_seed(ctx.seed * 1009 + round_index)
        order = torch.randperm(len(ctx.prompts), generator=generator)
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
            print(f"{self.name} round {round_index}: none of {len(samples)} student samples was correct; "
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

    def run_summary(self):
        return {f"{self.name}_acceptance": self.accepted}
