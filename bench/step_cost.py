"""Optimiser-step cost of every method, measured side by side on the same batch; prints ratios to SFT.

    python bench/step_cost.py [--steps 20] [--batch 32] [--threads 1] [--methods sft,sft_no_guard,sft_again]

Each method trains the same toy student (fresh copy) on the same batch of teacher traces; methods are
interleaved round-robin (the order reversed every other round, so that no method always runs right
after another) so that machine load affects them alike, and the median step time is reported.
``onpolicy_kd`` includes its sampling and teacher scoring. Target (docs/benchmarks.md): a DCOD step
costs at most 1.05x an SFT step.

The non-finite guard (docs/architecture.md, "Checkpoints") is measured the same way: ``sft_no_guard``
is an SFT trainer with ``Trainer.check_finite`` off, ``sft_again`` a second SFT trainer with it on;
the last line prints guard / no-guard beside sft / sft_again (same code twice: what noise alone gives on
this machine). The guard tests two Python floats the step computes anyway (the global loss and the
clipped gradient norm), so the two ratios should agree.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch

from dcod.config import StudentConfig, TrainConfig
from dcod.generation import HFBackend, SamplingParams
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.methods.onpolicy_kd import OnPolicyParams
from dcod.models import build_tiny_llama, encode_prompt
from dcod.toy.teacher import ToyTeacher
from dcod.toy.tokenizer import build_tokenizer
from dcod.toy.world import WorldConfig, build_world
from dcod.training import Trainer

METHODS = {
    "sft": None,
    "sft_no_guard": None,  # SFT with the non-finite guard off: the guard's cost is sft / sft_no_guard
    "sft_again": None,  # a second, identical SFT trainer: sft / sft_again is the noise floor of that ratio
    "kd": None,
    "dft": None,
    "dcod_sequence": DCODParams(granularity="sequence"),
    "dcod_prefix": DCODParams(granularity="prefix", discount=0.9),
    "onpolicy_kd": OnPolicyParams(),
}


def traces(tokenizer, n: int) -> list[dict]:
    world = build_world(WorldConfig(n_train=n, n_validation=1, n_id=1, n_long=1, n_retention=1, n_pretrain=1,
                                    n_pretrain_reversal=1, train_k=(1, 4), validation_k=(1, 4), id_k=(1, 2),
                                    long_k=(3, 4), pretrain_k=(1, 4)))
    prompts = [encode_prompt(tokenizer, r["question"]) for r in world["train"]]
    teacher = ToyTeacher(tokenizer)
    return [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "teacher_logprobs": g.logprobs,
             "topk_ids": g.topk_ids, "topk_logprobs": g.topk_logprobs}
            for g in teacher.generate(prompts, SamplingParams(max_new_tokens=200, top_k_logprobs=20, seed=0))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset (sft is always run)")
    args = parser.parse_args()
    names = ["sft"] + [n for n in args.methods.split(",") if n != "sft"]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    data = traces(tokenizer, args.batch)
    base = build_tiny_llama(StudentConfig(), tokenizer, seed=0)
    teacher = ToyTeacher(tokenizer)
    trainers = {}
    for name in names:
        params = METHODS[name]
        model = copy.deepcopy(base)
        ctx = StepContext(tokenizer=tokenizer, traces=data, batch_size=args.batch, seed=0, total_steps=args.steps,
                          teacher=teacher, student_backend=HFBackend(model, tokenizer), max_new_tokens=200)
        kind = "dcod" if name.startswith("dcod") else "sft" if name.startswith("sft") else name
        method = build_method(kind, params, ctx, Cost())
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=10**9)
        trainers[name] = Trainer(model, tokenizer, method, cfg, tempfile.mkdtemp(), cost=method.cost, seed=0,
                                 progress=False)
        trainers[name].check_finite = name != "sft_no_guard"
    times = {name: [] for name in trainers}
    for step in range(args.steps + 2):  # two warm-up rounds
        for name, trainer in list(trainers.items())[::-1 if step % 2 else 1]:
            started = time.perf_counter()
            trainer.train_step(0)  # the same batch every time
            if step >= 2:
                times[name].append(time.perf_counter() - started)
    sft = statistics.median(times["sft"])
    paired = {name: statistics.median(a / b for a, b in zip(times["sft"], values))
              for name, values in times.items()}
    print(f"batch {args.batch} traces, {args.steps} steps, {args.threads} thread(s), median seconds per step")
    print(f"{'method':16s} {'s/step':>8s} {'x sft':>7s} {'sft/x paired':>13s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:16s} {median:8.3f} {median / sft:7.2f} {paired[name]:13.3f}")
    if {"sft_no_guard", "sft_again"} <= set(times):  # paired: per-round ratios, same machine load
        print(f"non-finite guard: sft / sft_no_guard {paired['sft_no_guard']:.3f}; noise floor sft / sft_again "
              f"{paired['sft_again']:.3f} (medians of per-round ratios)")


if __name__ == "__main__":
    main()
