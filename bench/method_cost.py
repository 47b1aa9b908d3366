"""Every Table 1 method's optimiser step against SFT's, on the toy's own batches and base student.

    python bench/method_cost.py [--work work/toy] [--steps 12] [--start 100] [--float-paths default,avx2]

Unlike ``bench/step_cost.py`` (a fresh model, one repeated batch), each method here is built the way
``dcod train`` builds it (``dcod.pipeline``: the experiment config, the profile's learning rate, the
method's step context) from the base student the DAG trains from, and it steps through the run's own
batches from step ``--start`` on (the sampler is a pure function of (seed, step)). The methods are
interleaved round-robin, the order reversed every other round, so machine load hits them alike; the
table gives each method's median step time and the median of its per-round ratio to SFT's (the paired
ratio), with the spread (min-max) of that ratio over the rounds. ``sft_again`` is a second SFT trainer:
its ratio is the noise floor of this machine at this moment.

``--work``: a work folder holding ``world/``, ``traces/train.parquet`` and ``base_student/`` (what
``snakemake work/toy/base_student work/toy/traces/train.parquet`` builds). Without one, the bench builds
a world, its traces and a base student pre-trained for ``--pretrain-steps`` steps in a temporary folder
(about a minute per 500 steps on 2 cores): a student past its first epochs, whose DCOD weights are far
from uniform, which a fresh model's are not.

``--float-paths default,avx2`` runs the measurement once per float path, each in its own process: the
default kernels, then ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (the profile's
``float_path_check``). Threads: 1, as the DAG's training jobs run. Target (docs/benchmarks.md): a DCOD
step costs at most 1.05x an SFT step.

``--subnormals``: before timing, one step per method counts the subnormal floats in the gradients that
reach the backward's matrix multiplies (docs/benchmarks.md, "DCOD at SFT's price on the trained
student").
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FLOAT_PATHS = {"default": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
# the offline methods of Table 1 (experiments/<name>/config.yaml); on-policy ones sample, which is not a step
METHODS = ("sft", "sft_again", "kd", "dft", "skew_kd", "iw_sft", "dcod")


def prepare(profile_path: str, work: str | None, pretrain_steps: int) -> tuple[Path, Path, Path]:
    """(world dir, base student dir, traces file): from ``work``, or built in a temporary folder."""
    if work:
        work = Path(work)
        paths = (work / "world", work / "base_student", work / "traces" / "train.parquet")
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise SystemExit(f"--work {work}: missing {', '.join(missing)} (snakemake --cores 2 "
                             f"{work}/base_student {work}/traces/train.parquet builds them)")
        return paths
    from dcod.config import load_profile
    from dcod.pipeline import stage_base_student, stage_traces, stage_world

    tmp = Path(tempfile.mkdtemp(prefix="method_cost-"))
    profile = load_profile(profile_path, [f"pretrain.steps={pretrain_steps}"])
    print(f"building a world, traces and a base student ({pretrain_steps} pre-training steps) in {tmp}",
          flush=True)
    stage_world(profile, tmp / "world")
    stage_traces(profile, tmp / "world", tmp / "traces" / "train.parquet")
    stage_base_student(profile, tmp / "world", tmp / "base_student")
    return tmp / "world", tmp / "base_student", tmp / "traces" / "train.parquet"


def build_trainer(profile, name: str, seed: int, world: Path, base: Path, traces: list[dict], model):
    """The trainer ``dcod train`` would build for experiment ``name`` (``sft_again``: SFT once more)."""
    from dcod.config import ConfigError, learning_rate_for, load_experiment, train_config_for
    from dcod.methods import Cost, resolve
    from dcod.pipeline import step_context
    from dcod.training import Trainer

    exp = load_experiment(ROOT / "experiments" / ("sft" if name == "sft_again" else name) / "config.yaml")
    try:
        lr = learning_rate_for(profile, exp).value
    except ConfigError as error:  # a profile that tunes in the DAG (ci): the cost of a step is the same
        lr = profile.train.lr
        print(f"{name}: lr {lr:g} (train.lr: {error})", flush=True)
    cfg = train_config_for(profile, exp, lr=lr)
    cfg = cfg.model_copy(update={"checkpoint_every": 10**9, "trackers": []})
    method_class, params = resolve(exp)
    tokenizer = _tokenizer(base)
    ctx = step_context(profile, cfg, method_class.needs(params), model=model, tokenizer=tokenizer,
                       traces=traces, seed=seed, world_dir=world, base_dir=base)
    cost = Cost()
    method = method_class(params, ctx, cost)
    return Trainer(model, tokenizer, method, cfg, tempfile.mkdtemp(), cost=cost, seed=seed, progress=False)


def _tokenizer(base: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base)


def count_subnormals(trainer, step: int) -> dict[str, tuple[int, int]]:
    """(subnormal, total) float32 values among the gradients entering the Linear layers in one step's
    backward, for the LM head and for the other layers (each is an operand of a backward matrix multiply)."""
    tiny = torch.finfo(torch.float32).tiny
    counts = {"lm_head": [0, 0], "other": [0, 0]}

    def hook_for(kind):
        def hook(module, grad_input, grad_output):
            grad = grad_output[0]
            if grad is not None:
                counts[kind][0] += int(((grad != 0) & (grad.abs() < tiny)).sum())
                counts[kind][1] += grad.numel()
        return hook

    head = trainer.model.get_output_embeddings()
    handles = [m.register_full_backward_hook(hook_for("lm_head" if m is head else "other"))
               for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        trainer.train_step(step)
    finally:
        for handle in handles:
            handle.remove()
    return {kind: (sub, total) for kind, (sub, total) in counts.items()}


def measure(args) -> None:
    from transformers import AutoModelForCausalLM

    from dcod.config import load_profile
    from dcod.data import load_traces, use_student_prompts

    torch.set_num_threads(args.threads)
    world, base, traces_path = prepare(args.profile, args.work, args.pretrain_steps)
    profile = load_profile(args.profile)
    traces = load_traces(traces_path)
    use_student_prompts(traces, _tokenizer(base))
    student = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    names = ["sft"] + [n for n in args.methods.split(",") if n != "sft"]
    trainers = {name: build_trainer(profile, name, args.seed, world, base, traces, copy.deepcopy(student))
                for name in names}
    print(f"float path {args.path_name!r} (cpu capability {torch.backends.cpu.get_cpu_capability()}), "
          f"{args.threads} thread(s), base student {base}, steps {args.start}..{args.start + args.steps - 1}"
          f" (+2 warm-up rounds), seed {args.seed}", flush=True)
    if args.subnormals:
        for name, trainer in trainers.items():
            counts = count_subnormals(trainer, max(0, args.start - 1))  # the step before the timed ones
            print(f"  {name:10s} subnormal gradients entering " + ", ".join(
                f"{kind}: {sub:,} of {total:,} ({sub / max(1, total):.3%})" for kind, (sub, total) in counts.items()),
                flush=True)
    times = {name: [] for name in trainers}
    for round_ in range(args.steps + 2):  # two warm-up rounds
        step = args.start + max(0, round_ - 2)
        for name, trainer in list(trainers.items())[::-1 if round_ % 2 else 1]:
            started = time.perf_counter()
            trainer.train_step(step)
            if round_ >= 2:
                times[name].append(time.perf_counter() - started)
    print(f"{'method':10s} {'s/step':>8s} {'x sft':>7s} {'paired':>7s} {'min':>6s} {'max':>6s}")
    for name, values in times.items():
        ratios = [a / b for a, b in zip(values, times["sft"])]
        print(f"{name:10s} {statistics.median(values):8.4f} {statistics.median(values) / statistics.median(times['sft']):7.3f}"
              f" {statistics.median(ratios):7.3f} {min(ratios):6.3f} {max(ratios):6.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=str(ROOT / "config" / "profiles" / "toy.yaml"))
    parser.add_argument("--work", default=None, help="a work folder with world/, base_student/, traces/")
    parser.add_argument("--pretrain-steps", type=int, default=500, help="without --work: pre-training steps")
    parser.add_argument("--steps", type=int, default=12, help="timed rounds (each method one step per round)")
    parser.add_argument("--start", type=int, default=100, help="the run's step whose batch comes first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--float-paths", default="default", help="comma-separated: default, avx2")
    parser.add_argument("--subnormals", action="store_true", help="count subnormal gradients first")
    parser.add_argument("--path-name", default="default", help=argparse.SUPPRESS)  # set for the subprocesses
    args = parser.parse_args()
    unknown = sorted(set(args.methods.split(",")) - set(METHODS)) + sorted(
        set(args.float_paths.split(",")) - set(FLOAT_PATHS))
    if unknown:
        parser.error(f"unknown methods or float paths {unknown}")
    paths = args.float_paths.split(",")
    if paths == [args.path_name]:
        measure(args)
        return
    if not args.work:  # build once, then let every float path read the same folder
        world, _, _ = prepare(args.profile, None, args.pretrain_steps)
        args.work = str(world.parent)
    for path in paths:  # one process per float path: the kernels are chosen when torch loads
        argv = ["--profile", args.profile, "--work", args.work, "--steps", str(args.steps), "--start",
                str(args.start), "--seed", str(args.seed), "--threads", str(args.threads), "--methods",
                args.methods, "--float-paths", path, "--path-name", path] + (["--subnormals"] * args.subnormals)
        env = {k: v for k, v in os.environ.items() if k not in FLOAT_PATHS["avx2"]}  # default: no ISA cap
        subprocess.run([sys.executable, __file__, *argv], check=True, env={**env, **FLOAT_PATHS[path]})

if __name__ == "__main__":
    main()
