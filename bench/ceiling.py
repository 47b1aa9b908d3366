"""The toy steps against this machine's fp32 matmul ceiling (docs/benchmarks.md, "Against the ceiling").

    python bench/ceiling.py [--work work/toy] [--steps 8] [--eval-prompts 256] [--eval-repeats 3]

1. Ceiling: ``torch.mm`` GFLOP/s at the student's own GEMM shapes (a training micro-batch's rows through
   q/k/v/o, gate/up, down and the LM head, forward, input-gradient and weight-gradient products; a decode
   step's 128 rows), FLOP-weighted (the shapes' total FLOPs over their total time), at 1 thread (training,
   evaluation) and at the pre-training's threads: first best of 5 (printed as the machine's ceiling),
   then read once more right before every timed step (the share's denominator).
2. Achieved: the step time of an SFT and a DCOD training step (built as ``dcod train`` builds them,
   on the run's own batches: ``bench/method_cost.py``), a base-student pre-training step (the base
   contract, NLL on the pre-training traces) and greedy generation with ``HFBackend`` over the ``id``
   split's prompts at the profile's eval batch size, as GFLOP/s and a share of the ceiling.
   The share is taken per round, each step against the ceiling read just before it, and its median
   printed with its range: on a shared machine the load moves both alike (the best-of-5 ceiling and a
   median step taken minutes apart do not).

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


class Probe:
    """The GEMMs of ``shapes`` (per layer, times ``layers``) plus ``head``, operands allocated once:
    ``rate()`` runs each product once and returns GFLOP/s, a reading of the ceiling taken right beside a
    step (interleaved, so that the load of a shared machine hits both alike)."""

    def __init__(self, shapes, layers: int, head: list):
        self.products = [((torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)), times)
                         for (m, k, n), times in [(s, layers) for s in shapes] + [(s, 1) for s in head]]
        self.flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] * times for (a, b, _), times in self.products)

    def rate(self) -> float:
        began = time.perf_counter()
        for (a, b, out), times in self.products:
            for _ in range(times):
                torch.mm(a, b, out=out)
        return self.flops / (time.perf_counter() - began) / 1e9


def ceiling(shapes, layers: int, head: list) -> float:
    """FLOP-weighted GFLOP/s of ``shapes`` (per layer, times ``layers``) plus ``head``."""
    flops = seconds = 0.0
    for (m, k, n), times in [(s, layers) for s in shapes] + [(s, 1) for s in head]:
        flops += 2 * m * k * n * times
        seconds += mm_seconds(m, k, n) * times
    return flops / seconds / 1e9


def interleaved(run, probe: Probe, rounds: int) -> tuple[list[float], list[float]]:
    """(seconds of ``run(i)``, ceiling GFLOP/s read right before it) for ``rounds`` rounds after one warm-up."""
    seconds, ceilings = [], []
    for i in range(rounds + 1):
        reading = probe.rate()
        began = time.perf_counter()
        run(i)
        if i:
            seconds.append(time.perf_counter() - began)
            ceilings.append(reading)
    return seconds, ceilings


def real_tokens(trainer, start: int, steps: int) -> float:
    """Mean real (non-pad) tokens per step of the batches ``interleaved`` stepped through."""
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


def generation(profile, world: Path, base: Path, student, prompts: int, probe: Probe, repeats: int):
    """(seconds, ceiling readings, forward tokens) of greedy generation over the first ``prompts`` prompts
    of ``id``, ``repeats`` times, interleaved with the decode shapes' ceiling."""
    from dcod.generation import HFBackend, SamplingParams
    from dcod.io import read_jsonl
    from dcod.models import encode_prompt

    tokenizer = method_cost._tokenizer(base)
    records = list(read_jsonl(world / "id.jsonl"))[:prompts]
    encoded = [encode_prompt(tokenizer, r["question"]) for r in records]
    backend = HFBackend(student, tokenizer, batch_size=profile.eval.batch_size)
    params = SamplingParams(max_new_tokens=profile.eval.max_new_tokens, temperature=0.0)
    outputs = []
    seconds, ceilings = interleaved(lambda i: outputs.append(backend.generate(encoded, params)), probe, repeats)
    return seconds, ceilings, sum(len(g.prompt_ids) + len(g.token_ids) for g in outputs[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=str(method_cost.ROOT / "config" / "profiles" / "toy.yaml"))
    parser.add_argument("--work", default=None, help="a work folder with world/, base_student/, traces/")
    parser.add_argument("--pretrain-steps", type=int, default=500, help="without --work: pre-training steps")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per training kind (median)")
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--eval-prompts", type=int, default=256)
    parser.add_argument("--eval-repeats", type=int, default=3)
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
    train_probe = {threads: Probe(train_shapes, layers, train_head) for threads in {1, pre_threads}}
    rows_out = []
    torch.set_num_threads(1)
    for name in ("sft", "dcod"):
        trainer = method_cost.build_trainer(profile, name, 0, world, base, traces, copy.deepcopy(student))
        seconds, readings = interleaved(lambda i: trainer.train_step(args.start + i), train_probe[1], args.steps)
        tokens = real_tokens(trainer, args.start, args.steps)
        rows_out.append((f"training step, {name}", 1, seconds, readings, 6 * n_params * tokens))
    torch.set_num_threads(pre_threads)
    trainer = pretrain_trainer(profile, world, base, copy.deepcopy(student))
    seconds, readings = interleaved(lambda i: trainer.train_step(args.start + i), train_probe[pre_threads],
                                    args.steps)
    tokens = real_tokens(trainer, args.start, args.steps)
    rows_out.append(("pre-training step", pre_threads, seconds, readings, 6 * n_params * tokens))
    torch.set_num_threads(1)
    decode_probe = Probe(decode_shapes, layers, [(decode_rows, hidden, vocab)])
    seconds, readings, tokens = generation(profile, world, base, copy.deepcopy(student), args.eval_prompts,
                                           decode_probe, args.eval_repeats)
    rows_out.append((f"greedy generation, {args.eval_prompts} id prompts", 1, seconds, readings,
                     2 * n_params * tokens))
    print("medians over the rounds; share: achieved GFLOP/s over the ceiling read right before, per round "
          "(median, min-max)")
    print(f"{'what':40s} {'threads':>7s} {'seconds':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'ceiling':>8s} "
          f"{'share':>6s} {'min-max':>13s}")
    for what, threads, seconds, readings, flops in rows_out:
        shares = [flops / t / 1e9 / c for t, c in zip(seconds, readings)]
        print(f"{what:40s} {threads:7d} {statistics.median(seconds):8.4f} {flops / 1e9:7.4f} "
              f"{flops / statistics.median(seconds) / 1e9:8.2f} {statistics.median(readings):8.2f} "
              f"{statistics.median(shares):6.1%} {min(shares):6.1%}-{max(shares):.1%}")


if __name__ == "__main__":
    main()
