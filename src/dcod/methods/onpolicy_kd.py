"""On-policy KD (GKD, Agarwal et al. 2024): a fraction of each batch replaced by fresh student samples,
scored by a teacher in memory with the generalised JSD."""

from __future__ import annotations

from pydantic import Field

from dcod import objectives
from dcod.config import Float, Section
from dcod.generation import SamplingParams
from dcod.methods.base import Method, Needs, register
from dcod.models import shared_vocab_logits, teacher_full_logprobs


class OnPolicyParams(Section):
    student_fraction: Float = Field(1.0, ge=0.0, le=1.0)
    jsd_beta: Float = Field(0.5, ge=0.0, le=1.0)
    sample_temperature: Float = Field(1.0, gt=0)
    max_new_tokens: int = Field(0, ge=0)  # 0: the profile's traces.max_new_tokens


@register
class OnPolicyKD(Method):
    name = "onpolicy_kd"
    Params = OnPolicyParams
    chunked_logits = False  # the JSD reads the whole student distribution

    @classmethod
    def needs(cls, params):
        # the rollouts start from the traces' prompts; the traces' completions (and their one-off cost)
        # are used only for the part of a batch the student does not replace
        return Needs(offline_traces=params.student_fraction < 1, teacher_model=True, student_rollouts=True)

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
        kept = [{"prompt_ids": e["prompt_ids"], "completion_ids": e["completion_ids"]}
                for e in examples[n_student:]]
        return replaced + kept

    def extra_inputs(self, batch, examples):
        batch["teacher_full_logprobs"] = teacher_full_logprobs(self.ctx.teacher, examples, batch,
                                                               len(self.ctx.tokenizer))
        self.cost.teacher_forward_tokens += sum(len(e["prompt_ids"]) + len(e["completion_ids"]) for e in examples)

    def token_losses(self, logits, batch):
        vocab = batch["teacher_full_logprobs"].shape[-1]
        return objectives.generalized_jsd(shared_vocab_logits(logits, vocab), batch["teacher_full_logprobs"],
                                          beta=self.params.jsd_beta)
