"""The toy steps against this machine's fp32 matmul ceiling (docs/benchmarks.md, "Against the ceiling").

    python bench/ceiling.py [--work work/toy] [--steps 8] [--eval-prompts 256]

1. Ceiling: ``torch.mm`` GFLOP/s at the student's own GEMM shapes (a training micro-batch's rows through
   q/k/v/o, gate/up, down and the LM head, forward, input-gradient and weight-gradient products; a decode
   step's 128 rows), best of 5, at 1 thread (training, evaluation) and at the pre-training's threads. The
   ceiling of a step is the FLOP-weighted one: the shapes' total FLOPs over their total best time.
2. Achieved: the best (and median) step time of an SFT and a DCOD training step (built as ``dcod train`` builds them,
   on the run's own batches: ``bench/method_cost.py``), a base-student pre-training step (the base
   contract, NLL on the pre-training traces) and greedy generation with ``HFBackend`` over the ``id``
   split's prompts at the profile's eval batch size, as GFLOP/s and a share of the ceiling.

FLOPs are counted as the issue and the measurement behind it count them: 6 N per trained token (real
tokens, prompt and completion, padding not counted) and 2 N per token through a forward in generation
(prompt tokens once, then each generated token), N the student's parameters. Attention's own
products are left out (about 5% at these lengths), so the shares are slight underestimates.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import method_cost  # noqa: E402  (bench/ is not a package)


def gemm_shapes(hidden: int, inter: int, vocab: int, rows: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of every matrix product a training step's linear layers make per layer, for ``rows`` tokens:
    forward X W^T, input gradient dY W, weight gradient dY^T X (q, k, v, o; gate, up; down), then the head."""
    shapes = []
    for fan_in, fan_out, count in ((hidden, hidden, 4), (hidden, inter, 2), (inter, hidden, 1)):
        shapes += [(rows, fan_in, fan_out), (rows, fan_out, fan_in), (fan_out, rows, fan_in)] * count
    return shapes


def mm_seconds(m: int, k: int, n: int, reps: int = 0) -> float:
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    reps = reps or max(3, int(5e8 / (2 * m * k * n)))
    for _ in range(2):
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - started) / reps)
    return best


def ceiling(shapes, layers: int, head: list) -> float:
    """FLOP-weighted GFLOP/s of ``shapes`` (per layer, times ``layers``) plus ``head``."""
    flops = seconds = 0.0
    for (m, k, n), times in [(s, layers) for s in shapes] + [(s, 1) for s in head]:
        flops += 2 * m * k * n * times
        seconds += mm_seconds(m, k, n) * times
    return flops / seconds / 1e9


def step_times(trainer, start: int, steps: int) -> tuple[float, float]:
    """(best, median) seconds of ``steps`` training steps after one warm-up."""
    times = []
    for i in range(steps + 1):
        began = time.perf_counter()
        trainer.train_step(start + i)
        if i:
            times.append(time.perf_counter() - began)
    return min(times), statistics.median(times)


def real_tokens(trainer, start: int, steps: int) -> float:
    """Mean real (non-pad) tokens per step of the batches ``step_times`` used."""
    from dcod.methods.base import collate_for

    counts = []
    for step in range(start + 1, start + steps + 1):
        examples = trainer._local_examples(step)
        counts.append(int(collate_for(trainer.method, examples, trainer.tokenizer.pad_token_id)["attention_mask"].sum()))
    return statistics.mean(counts)


def pretrain_trainer(profile, world: Path, base: Path, student):
    """The base-student pre-training's trainer (``dcod.pipeline.stage_base_student``) on a copy of ``student``."""
    import tempfile

    from dcod.config import TrainConfig
    from dcod.io import read_jsonl
    from dcod.methods import Cost, Method, StepContext
    from dcod.models import encode_prompt
    from dcod.training import Trainer

    tokenizer = method_cost._tokenizer(base)
    examples = [{"prompt_ids": encode_prompt(tokenizer, r["question"]),
                 "completion_ids": tokenizer(r["completion_decomposed"], add_special_tokens=False)["input_ids"]
                 + [tokenizer.eos_token_id]} for r in read_jsonl(world / "pretrain.jsonl")]
    pre = profile.pretrain
    cfg = TrainConfig(steps=pre.steps, batch_size=pre.batch_size, lr=pre.lr, warmup_steps=pre.warmup_steps,
                      checkpoint_every=10**9)
    ctx = StepContext(tokenizer=tokenizer, traces=examples, batch_size=pre.batch_size, seed=pre.seed,
                      total_steps=pre.steps)
    cost = Cost()
    return Trainer(student, tokenizer, Method(Method.Params(), ctx, cost), cfg, tempfile.mkdtemp(), cost=cost,
                   seed=pre.seed, progress=False)


def generation(profile, world: Path, base: Path, student, prompts: int, repeats: int = 3) -> tuple[tuple, int]:
    """((best, median) seconds, forward tokens) of greedy generation over the first ``prompts`` prompts of
    ``id``, ``repeats`` times."""
    from dcod.generation import HFBackend, SamplingParams
    from dcod.io import read_jsonl
    from dcod.models import encode_prompt

    tokenizer = method_cost._tokenizer(base)
    records = list(read_jsonl(world / "id.jsonl"))[:prompts]
    encoded = [encode_prompt(tokenizer, r["question"]) for r in records]
    backend = HFBackend(student, tokenizer, batch_size=profile.eval.batch_size)
    params = SamplingParams(max_new_tokens=profile.eval.max_new_tokens, temperature=0.0)
    backend.generate(encoded[: profile.eval.batch_size], params)  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        out = backend.generate(encoded, params)
        times.append(time.perf_counter() - began)
    return (min(times), statistics.median(times)), sum(len(g.prompt_ids) + len(g.token_ids) for g in out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=str(method_cost.ROOT / "config" / "profiles" / "toy.yaml"))
    parser.add_argument("--work", default=None, help="a work folder with world/, base_student/, traces/")
    parser.add_argument("--pretrain-steps", type=int, default=500, help="without --work: pre-training steps")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per training kind (median)")
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--eval-prompts", type=int, default=256)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM

    from dcod.config import load_profile
    from dcod.data import load_traces, use_student_prompts

    world, base, traces_path = method_cost.prepare(args.profile, args.work, args.pretrain_steps)
    profile = load_profile(args.profile)
    student = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    n_params = sum(p.numel() for p in student.parameters())
    cfg = student.config
    hidden, inter, vocab, layers = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    rows = profile.train.batch_size * 80  # a toy batch: 32 sequences of about 80 tokens
    train_shapes = gemm_shapes(hidden, inter, vocab, rows)
    train_head = [(rows, hidden, vocab), (rows, vocab, hidden), (vocab, rows, hidden)]
    decode_rows = profile.eval.batch_size
    decode_shapes = [s for s in gemm_shapes(hidden, inter, vocab, decode_rows)][0::3]  # forward products only
    pre_threads = profile.pretrain.threads or profile.threads
    print(f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"student N = {n_params:,} parameters ({layers} layers, hidden {hidden}, MLP {inter}, vocab {vocab})")
    ceilings = {}
    for threads in sorted({1, pre_threads}):
        torch.set_num_threads(threads)
        ceilings[("train", threads)] = ceiling(train_shapes, layers, train_head)
        ceilings[("decode", threads)] = ceiling(decode_shapes, layers, [(decode_rows, hidden, vocab)])
        square = 2 * 1024**3 / mm_seconds(1024, 1024, 1024) / 1e9
        print(f"ceiling, {threads} thread(s): training shapes ({rows} rows) {ceilings[('train', threads)]:.1f} "
              f"GFLOP/s, decode shapes ({decode_rows} rows) {ceilings[('decode', threads)]:.1f}, "
              f"square 1024^3 {square:.1f}", flush=True)

    traces = load_traces(traces_path)
    use_student_prompts(traces, method_cost._tokenizer(base))
    rows_out = []
    torch.set_num_threads(1)
    for name in ("sft", "dcod"):
        trainer = method_cost.build_trainer(profile, name, 0, world, base, traces, copy.deepcopy(student))
        seconds = step_times(trainer, args.start, args.steps)
        tokens = real_tokens(trainer, args.start, args.steps)
        rows_out.append((f"training step, {name}", 1, seconds, 6 * n_params * tokens, ceilings[("train", 1)]))
    torch.set_num_threads(pre_threads)
    trainer = pretrain_trainer(profile, world, base, copy.deepcopy(student))
    seconds = step_times(trainer, args.start, args.steps)
    tokens = real_tokens(trainer, args.start, args.steps)
    rows_out.append(("pre-training step", pre_threads, seconds, 6 * n_params * tokens,
                     ceilings[("train", pre_threads)]))
    torch.set_num_threads(1)
    seconds, tokens = generation(profile, world, base, copy.deepcopy(student), args.eval_prompts)
    rows_out.append((f"greedy generation, {args.eval_prompts} id prompts", 1, seconds, 2 * n_params * tokens,
                     ceilings[("decode", 1)]))
    print("best (median) seconds; GFLOP/s and share of the ceiling from the best time, as the ceiling is a best time")
    print(f"{'what':40s} {'threads':>7s} {'seconds':>17s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'ceiling':>8s} {'share':>6s}")
    for what, threads, (best, median), flops, top in rows_out:
        rate = flops / best / 1e9
        print(f"{what:40s} {threads:7d} {best:8.4f} ({median:6.4f}) {flops / 1e9:7.4f} {rate:8.1f} {top:8.1f} "
              f"{rate / top:6.1%}")


if __name__ == "__main__":
    main()
