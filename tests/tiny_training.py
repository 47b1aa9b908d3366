"""A tiny toy student, toy-teacher traces (a module-scoped fixture) and step recorders, shared by the
training and losses tests (import the fixture by name: ``from tiny_training import traces``)."""

import pytest

from dcod.config import StudentConfig
from dcod.generation import SamplingParams
from dcod.toy.teacher import ToyTeacher
from dcod.toy.world import WorldConfig, build_world

TINY = StudentConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def traces(toy_tokenizer):
    world = build_world(WorldConfig(n_train=48, n_validation=1, n_id=1, n_long=1, n_retention=1, n_pretrain=1,
                                    n_pretrain_reversal=1))
    teacher = ToyTeacher(toy_tokenizer)
    prompts = [toy_tokenizer(r["question"])["input_ids"] for r in world["train"]]
    out = []
    for g in teacher.generate(prompts, SamplingParams(max_new_tokens=200, top_k_logprobs=4, seed=3)):
        out.append({"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "teacher_logprobs": g.logprobs,
                    "topk_ids": g.topk_ids, "topk_logprobs": g.topk_logprobs})
    return out


def _recording(trainer) -> dict:
    """Fills the returned dict, at each optimiser step, with the gradients the optimiser steps with (after
    clipping), its lr and eps, and the number of steps taken."""
    seen, step = {"steps": 0}, trainer.optimizer.step

    def recording_step(*args, **kwargs):
        group = trainer.optimizer.param_groups[0]
        seen.update(grads={n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()},
                    lr=group["lr"], eps=group["eps"], steps=seen["steps"] + 1)
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return seen


def _parameters(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}
