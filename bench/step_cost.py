"""Optimiser-step cost of every method, measured side by side on the same batch; prints ratios to SFT.

    python bench/step_cost.py [--steps 20] [--batch 32] [--threads 1] [--methods sft,sft_no_guard,sft_again]
    python bench/step_cost.py --paper [--reduced] [--micro 1] [--accum 1,4] [--seq 2048] [--steps 3]

``--paper``: the paper's shape (docs/paper_setting.md): a Qwen2.5-1.5B student built from its config
(random weights, tied embeddings, vocabulary 151,936), synthetic traces with top-20 teacher log-probs,
every offline method (sft, kd, dft, skew_kd, iw_sft, dcod sequence, dcod prefix λ 0.9) side by side, each
``before`` (full logits, two-pass weighted accumulation) and ``after`` (chunked LM head, one-pass
weights), at each accumulation in ``--accum`` (global batch = micro x accum). Prints s/step, tokens/s,
MFU (6 N tokens / time / ``--peak-tflops``; omitted without it), peak memory (GPU: max allocated;
CPU: the process's peak resident set above the step's start, /proc/self/status VmHWM reset through
clear_refs) and the ratio to SFT of the same variant and accumulation. ``--reduced``: hidden 128,
2 layers, the real vocabulary, sequences of 64 tokens (CI-friendly on a CPU).

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
    "sft_packed": None,  # SFT with train.packing (padding-free rows); sft / sft_packed is what packing saves
    "dcod_packed": DCODParams(granularity="sequence"),
}
PACKED = ("sft_packed", "dcod_packed")


def traces(tokenizer, n: int) -> list[dict]:
    world = build_world(WorldConfig(n_train=n, n_validation=1, n_id=1, n_long=1, n_retention=1, n_pretrain=1,
                                    n_pretrain_reversal=1, train_k=(1, 4), validation_k=(1, 4), id_k=(1, 2),
                                    long_k=(3, 4), pretrain_k=(1, 4)))
    prompts = [encode_prompt(tokenizer, r["question"]) for r in world["train"]]
    teacher = ToyTeacher(tokenizer)
    return [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "teacher_logprobs": g.logprobs,
             "topk_ids": g.topk_ids, "topk_logprobs": g.topk_logprobs}
            for g in teacher.generate(prompts, SamplingParams(max_new_tokens=200, top_k_logprobs=20, seed=0))]


# Qwen2.5-1.5B's config.json (Qwen/Qwen2.5-1.5B-Instruct): the paper-shape student, random weights
QWEN25_15B = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                  intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, max_position_embeddings=32768, hidden_act="silu")
PAPER_METHODS = {"sft": ("sft", None), "kd": ("kd", None), "dft": ("dft", None), "skew_kd": ("skew_kd", None),
                 "iw_sft": ("iw_sft", "teacher"), "dcod_sequence": ("dcod", DCODParams(granularity="sequence")),
                 "dcod_prefix": ("dcod", DCODParams(granularity="prefix", discount=0.9))}
VARIANTS = {"before": dict(logits_chunk_tokens=0, weighted_accumulation="two_pass"),
            "after": dict(weighted_accumulation="single_pass")}


def synthetic_traces(n: int, length: int, vocab: int, k: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    prompt = 16 if length > 64 else 8
    out = []
    for _ in range(n):
        ids = torch.randint(1, vocab, (length,), generator=generator).tolist()
        completion = length - prompt
        topk = torch.stack([torch.randperm(vocab, generator=generator)[:k] for _ in range(completion)])
        topk_lp = torch.log_softmax(torch.randn(completion, k + 1, generator=generator) * 2, -1)[:, :k]
        topk_lp = topk_lp.sort(-1, descending=True).values
        out.append({"prompt_ids": ids[:prompt], "completion_ids": ids[prompt:],
                    "teacher_logprobs": (-torch.rand(completion, generator=generator) * 2).tolist(),
                    "topk_ids": topk.tolist(), "topk_logprobs": topk_lp.tolist()})
    return out


def _peak_reset() -> int:
    """CPU: reset the process's peak resident set (Linux clear_refs 5) and return the current one (bytes)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status("VmRSS")


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _peak_since(start: int) -> int:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _status("VmHWM") - start


def paper(args) -> None:
    import types

    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = dict(QWEN25_15B)
    if args.reduced:
        config.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=512)
    seq = args.seq or (64 if args.reduced else 2048)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(Qwen2Config(**config))
    n_params = sum(p.numel() for p in base.parameters())
    accums = [int(a) for a in args.accum.split(",")]
    data = synthetic_traces(args.micro * max(accums), seq, config["vocab_size"], args.topk)
    tokenizer = types.SimpleNamespace(pad_token_id=0)
    names = [n for n in args.methods.split(",")] if args.methods else list(PAPER_METHODS)
    print(f"paper shape {'(reduced) ' if args.reduced else ''}{config['hidden_size']}h x "
          f"{config['num_hidden_layers']}L, vocab {config['vocab_size']}, {n_params / 1e6:.1f}M params, "
          f"seq {seq}, micro {args.micro}, top-{args.topk}, {device}, {args.steps} steps (+1 warm-up), median")
    print(f"{'method':14s} {'variant':7s} {'mb x acc':>8s} {'s/step':>8s} {'tok/s':>9s} {'MFU':>6s} "
          f"{'peak GiB':>9s} {'x sft':>6s}")
    for accum in accums:
        batch = args.micro * accum
        for variant in args.variants.split(","):
            rows = {}
            for name in ["sft"] + [n for n in names if n != "sft"]:
                kind, params = PAPER_METHODS[name]
                if kind == "iw_sft":
                    from dcod.methods.iw_sft import IwSFTParams

                    params = IwSFTParams(reference="teacher")
                model = copy.deepcopy(base).to(device)
                ctx = StepContext(tokenizer=tokenizer, traces=data[:batch], batch_size=batch, seed=0,
                                  total_steps=args.steps + 1)
                method = build_method(kind, params, ctx, Cost())
                cfg = TrainConfig(steps=args.steps + 1, batch_size=batch, micro_batch_size=args.micro,
                                  checkpoint_every=10**9, trackers=[], mixed_precision="bf16" if args.bf16 else "no",
                                  gradient_checkpointing=args.gradient_checkpointing,
                                  **{"logits_chunk_tokens": args.chunk, **VARIANTS[variant]})
                trainer = Trainer(model, tokenizer, method, cfg, tempfile.mkdtemp(), cost=method.cost, seed=0,
                                  progress=False)
                times, peak = [], 0
                for step in range(args.steps + 1):
                    start = _peak_reset()
                    started = time.perf_counter()
                    trainer.train_step(0)
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    if step:  # the first step warms up (and gives DCOD its lagged beta)
                        times.append(time.perf_counter() - started)
                        peak = max(peak, _peak_since(start))
                rows[name] = (statistics.median(times), peak)
                del trainer, model
            sft = rows["sft"][0]
            for name, (seconds, peak) in rows.items():
                tokens = batch * seq
                mfu = f"{6 * n_params * tokens / seconds / (args.peak_tflops * 1e12):6.1%}" if args.peak_tflops else "     -"
                print(f"{name:14s} {variant:7s} {args.micro:>4d} x {accum:<1d} {seconds:8.3f} {tokens / seconds:9.0f} "
                      f"{mfu} {peak / 2**30:9.3f} {seconds / sft:6.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="the paper-shape mode (see above)")
    parser.add_argument("--reduced", action="store_true", help="--paper at hidden 128, 2 layers (CPU)")
    parser.add_argument("--micro", type=int, default=1, help="--paper: sequences per micro-batch")
    parser.add_argument("--accum", default="1,4", help="--paper: accumulation steps to measure, comma-separated")
    parser.add_argument("--seq", type=int, default=0, help="--paper: tokens per sequence (0: 2048, 64 reduced)")
    parser.add_argument("--topk", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=TrainConfig().logits_chunk_tokens,
                        help="--paper: train.logits_chunk_tokens of the 'after' variant")
    parser.add_argument("--variants", default="before,after")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="for MFU (H200 bf16 dense: 989)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated subset (sft is always run)")
    args = parser.parse_args()
    if args.paper:
        torch.set_num_threads(args.threads)
        args.methods = "" if args.methods == ",".join(METHODS) else args.methods
        paper(args)
        return
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
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=10**9, packing=name in PACKED)
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
