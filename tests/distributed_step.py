"""One DCOD optimiser step through ``dcod.training.Trainer``; launched by tests/training/test_training_distributed.py.

Run it either as a plain single process (``python tests/distributed_step.py --out DIR``) or under
``accelerate launch --config_file config/accelerate/cpu_2proc.yaml tests/distributed_step.py --out DIR``
(2 CPU processes, gloo): the model (fixed seed), the global batch of 8 toy traces and the DCOD
parameters are identical, so the two runs must reach the same weights when the trainer splits the
batch across ranks, gathers the DCOD scores and normalises the weights over the *global* batch.

Each variant (``--variants``, default all) writes to ``--out/<variant>/``: ``initial_state_dict.pt``
and ``state_dict.pt`` (rank 0, before and after the step), ``optimizer_step.pt`` (rank 0: the
gradients the optimiser stepped with, after DDP's all-reduce and clipping, its lr and eps, the number of
steps), ``record_rank<r>.json`` (each rank's record), ``tokens_rank<r>.json`` (the sequences each rank
trained on) and ``trainer/``. Variants:
``step`` (``train_step(0)``), ``run`` (``Trainer.run()`` for one step, so the checkpoint is written
under 2 processes too, then ``save_model``), ``per_rank`` (the control: each rank normalises the DCOD
weights of its own 4 traces, which the test must be able to tell apart from the global one).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from dcod.config import StudentConfig, TrainConfig
from dcod.generation import SamplingParams
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.models import build_tiny_llama
from dcod.toy.teacher import ToyTeacher
from dcod.toy.tokenizer import build_tokenizer
from dcod.toy.world import WorldConfig, build_world
from dcod.training import Trainer

TINY = StudentConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
GLOBAL_BATCH = 8


def toy_traces(tokenizer) -> list[dict]:
    world = build_world(WorldConfig(n_train=GLOBAL_BATCH, n_validation=1, n_id=1, n_long=1, n_retention=1,
                                    n_pretrain=1, n_pretrain_reversal=1))
    prompts = [tokenizer(r["question"])["input_ids"] for r in world["train"]]
    teacher = ToyTeacher(tokenizer)
    params = SamplingParams(max_new_tokens=200, top_k_logprobs=4, seed=3)
    return [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "teacher_logprobs": g.logprobs,
             "topk_ids": g.topk_ids, "topk_logprobs": g.topk_logprobs}
            for g in teacher.generate(prompts, params)]


def per_rank_weights(trainer: Trainer):
    """The wrong way, for the control run: normalise DCOD weights over this rank's traces only."""
    from dcod.training import _pad_cat

    def weights(scores, batches):
        local_scores = _pad_cat([s.values for s in scores])  # Scores: [B, U] values per micro-batch
        local_mask = _pad_cat([b["loss_mask"].float() for b in batches]).bool()
        w, diagnostics = trainer.method.weights(local_scores, local_mask)
        diagnostics["mean_log_ratio"] = 0.0
        out, offset = [], 0
        for batch in batches:
            b, t = batch["loss_mask"].shape
            out.append(w[offset:offset + b, :t])
            offset += b
        return out, diagnostics

    return weights


def record_optimizer_steps(trainer: Trainer) -> dict:
    """Fills the returned dict, at each optimiser step, with what the optimiser steps with."""
    seen, step = {"steps": 0}, trainer.optimizer.step
    model = trainer.accelerator.unwrap_model(trainer.model)  # DDP's names carry a "module." prefix

    def recording_step(*args, **kwargs):
        group = trainer.optimizer.param_groups[0]
        seen.update(grads={n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()},
                    lr=group["lr"], eps=group["eps"], steps=seen["steps"] + 1)
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return seen


VARIANTS = ("step", "run", "per_rank")


def run_variant(variant: str, traces: list[dict], tokenizer, out: Path) -> None:
    """``step``: ``Trainer.train_step(0)``; ``run``: ``Trainer.run()`` (1 step, checkpoint) + ``save_model``;
    ``per_rank``: ``train_step(0)`` with DCOD weights normalised per rank (the control)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(steps=1, batch_size=GLOBAL_BATCH, lr=3e-3, warmup_steps=0, checkpoint_every=1)
    model = build_tiny_llama(TINY, tokenizer, seed=0)
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "initial_state_dict.pt")
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0)
    params = DCODParams(granularity="sequence", beta=None, ess_target=0.5)
    method = build_method("dcod", params, ctx, cost)
    trainer = Trainer(model, tokenizer, method, cfg, out / "trainer", cost=cost, seed=0, progress=False)
    if variant == "per_rank":
        trainer._global_weights = per_rank_weights(trainer)
    seen = record_optimizer_steps(trainer)
    accelerator = trainer.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes

    local = trainer._local_examples(0)  # what this rank trains on (the call train_step makes)
    (out / f"tokens_rank{rank}.json").write_text(json.dumps(
        {"world": world, "sequences": [list(e["prompt_ids"]) + list(e["completion_ids"]) for e in local]}))
    if variant == "run":
        summary = trainer.run()
        record = {"summary": summary}
        if accelerator.is_main_process:
            record.update(json.loads((out / "trainer" / "train_log.jsonl").read_text().splitlines()[0]))
        trainer.save_model(out / "model")
    else:
        record = trainer.train_step(0)
    record["world"] = world
    (out / f"record_rank{rank}.json").write_text(json.dumps(record))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = accelerator.unwrap_model(trainer.model).state_dict()
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, out / "state_dict.pt")
        torch.save(seen, out / "optimizer_step.pt")
    accelerator.wait_for_everyone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {VARIANTS}")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}")
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    traces = toy_traces(tokenizer)
    for variant in variants:
        run_variant(variant, traces, tokenizer, Path(args.out) / variant)


if __name__ == "__main__":
    main()
