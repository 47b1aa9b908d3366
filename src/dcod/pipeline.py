"""Pipeline stages: each function is one CLI subcommand and one Snakemake rule.

world -> teacher, base student -> teacher traces -> train {experiment} x {seed} -> evaluate -> tables,
figures, report. Every stage writes its outputs atomically and saves the resolved config beside them.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from dcod.config import ProfileConfig, load_experiment, to_dict, train_config_for
from dcod.data import check_vocab, load_traces, use_student_prompts
from dcod.generation import HFBackend, SamplingParams
from dcod.io import atomic_path, code_version, content_digest, read_jsonl, write_json, write_parquet
from dcod.methods import Cost, StepContext, build_method
from dcod.models import build_tiny_llama, check_same_tokenizer, encode_prompt, load_model, set_threads
from dcod.provenance import machine_info, machine_label
from dcod.shards import run_sharded, shard_seed
from dcod.shards import finish as finish_shards
from dcod.training import Trainer


def _provenance(profile: ProfileConfig, **extra) -> dict:
    """Saved beside every artefact: the resolved profile, the commit and the machine (its CPU kernels and
    thread count decide the floats: docs/reproducibility.md)."""
    return {"profile": to_dict(profile), "code_version": code_version(), "machine": machine_info(), **extra}


def _world_cfg(profile: ProfileConfig):
    from dcod.toy.world import WorldConfig

    return WorldConfig.from_dict(profile.world)


# ----------------------------------------------------------------------------- world, teacher
def stage_world(profile: ProfileConfig, out_dir: Path) -> None:
    """The prompts of every split as ``<split>.jsonl`` plus the tokenizer: the toy world, or real benchmarks."""
    if profile.data.source == "benchmarks":
        return _benchmark_world(profile, Path(out_dir))
    from dcod.toy.tokenizer import build_tokenizer
    from dcod.toy.world import config_dict, write_world

    out_dir = Path(out_dir)
    write_world(_world_cfg(profile), out_dir)
    with atomic_path(out_dir / "tokenizer", directory=True) as tmp:
        build_tokenizer().save_pretrained(tmp)
    write_json(out_dir / "world.json", {**_provenance(profile), "world": config_dict(_world_cfg(profile))})


def _benchmark_world(profile: ProfileConfig, out_dir: Path) -> None:
    """Real benchmarks in the toy world's split format: ``train.jsonl`` (training prompts) and one file
    per evaluation benchmark, each line ``{id, task, question, gold, k}`` with the benchmark's prompt."""
    from dcod.benchmarks import get_benchmark, load_benchmark
    from dcod.io import write_jsonl

    data = profile.data
    # DCOD_DATA_DIR overrides the profile's data_dir (which is relative to the working directory): a run
    # from another folder, such as the tests' temporary one, points at the same local copies
    data_dir = os.environ.get("DCOD_DATA_DIR") or data.data_dir
    # training prompts: every source in order (e.g. GSM8K train + MATH train), ids prefixed by the source
    # when there are several so that they stay unique; data.validation's prompts are held out of them
    splits = {"train": [(name, data.train_limit) for name in data.train_sources]}
    if data.validation:
        splits["validation"] = [(name, 0) for name in data.validation]
    splits.update({name: [(name, data.eval_limit)] for name in data.eval})
    source_records = {name: load_benchmark(name, data_dir=data_dir) for name in data.validation}  # read once
    held_out = {name: _validation_indices(name, len(source_records[name]), size, data.validation_seed)
                for name, size in data.validation.items()}
    for split, sources in splits.items():
        rows = []
        for name, limit in sources:
            # (validation ids are written as the training ids would have been)
            prefix = f"{name}/" if len(sources) > 1 or (split == "validation" and len(splits["train"]) > 1) else ""
            task = get_benchmark(name).task  # math (math-verify) or ifeval (lm-eval's instruction checkers)
            if split in ("train", "validation") and task != "math":
                raise ValueError(f"data.train: {name!r} is a {task} benchmark; training prompts need math golds")
            if split in ("train", "validation") and name in held_out:
                everything = set(range(len(source_records[name])))
                keep = held_out[name] if split == "validation" else everything - held_out[name]
                records = [r for i, r in enumerate(source_records[name]) if i in keep][:limit or None]
            else:
                records = load_benchmark(name, data_dir=data_dir, limit=limit or None)
            rows += [{"id": f"{prefix}{r['id']}", "task": task, "question": r["prompt"], "gold": r["gold"],
                      "k": None} for r in records]
        write_jsonl(out_dir / f"{split}.jsonl", rows)
    write_json(out_dir / "world.json", {**_provenance(profile), "source": "benchmarks", "data_dir": data_dir,
                                        "splits": {k: [name for name, _ in v] for k, v in splits.items()},
                                        "validation": {name: sorted(indices) for name, indices in held_out.items()}})


def _validation_indices(name: str, total: int, size: int, seed: int) -> set[int]:
    """Row indices of a training source (``total`` prompts) held out as validation prompts: a fixed random
    sample."""
    import random

    if size >= total:
        raise ValueError(f"data.validation: {name} has {total} prompts; holding out {size} would leave none to train on")
    return set(random.Random(f"{seed}/{name}").sample(range(total), size))


def generation_backend(name: str, model_dir, *, batch_size: int, max_logprobs: int = 20):
    """A generation backend over a model folder: ``hf`` (always available) or ``vllm``."""
    if name == "vllm":
        from dcod.generation_vllm import VLLMBackend

        backend = VLLMBackend(str(model_dir), max_logprobs=max(20, max_logprobs))
        return backend, backend.tokenizer
    model, tokenizer = load_model(model_dir)
    return HFBackend(_on_device(model), tokenizer, batch_size=batch_size), tokenizer


def load_teacher(profile: ProfileConfig, world_dir: Path, style_override: str | None = None,
                 backend: str = "hf"):
    """The teacher as a generation backend (toy: the exact programmatic teacher)."""
    if profile.teacher.kind == "programmatic":
        from transformers import AutoTokenizer

        from dcod.toy.teacher import ToyTeacher

        tokenizer = AutoTokenizer.from_pretrained(Path(world_dir) / "tokenizer")
        return ToyTeacher(tokenizer, p_direct=profile.teacher.p_direct, floor=profile.teacher.floor,
                          style_override=style_override), tokenizer
    if style_override is not None:  # an HF teacher has no step styles to force: never evaluate it under that name
        raise ValueError(f"teacher:{style_override}: forcing a step style needs the toy world's programmatic teacher, "
                         f"not teacher.kind {profile.teacher.kind!r}")
    if backend == "vllm":
        return generation_backend("vllm", profile.teacher.path, batch_size=profile.eval.batch_size,
                                  max_logprobs=profile.traces.top_k_logprobs)
    model, tokenizer = load_model(profile.teacher.path, gguf_file=profile.teacher.gguf_file)
    return HFBackend(_on_device(model), tokenizer, batch_size=profile.eval.batch_size), tokenizer


# ----------------------------------------------------------------------------- base student
def stage_base_student(profile: ProfileConfig, world_dir: Path, out_dir: Path, threads: int | None = None) -> None:
    """Pre-train the toy student on its native decomposed style plus the retention skill; for a profile
    with a pretrained student (``student.path``), save that model as a plain HF folder instead."""
    from transformers import AutoTokenizer

    set_threads(threads or profile.threads)
    if profile.student.path is not None:
        model, tokenizer = load_model(profile.student.path, gguf_file=profile.student.gguf_file)
        with atomic_path(Path(out_dir), directory=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        return
    world_dir, out_dir = Path(world_dir), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(world_dir / "tokenizer")
    examples = []
    for record in read_jsonl(world_dir / "pretrain.jsonl"):
        completion = record["completion_decomposed"]
        examples.append({"prompt_ids": encode_prompt(tokenizer, record["question"]),
                         "completion_ids": tokenizer(completion, add_special_tokens=False)["input_ids"]
                         + [tokenizer.eos_token_id]})
    pre = profile.pretrain
    model = build_tiny_llama(profile.student, tokenizer, seed=pre.seed)
    from dcod.config import TrainConfig

    cfg = TrainConfig(steps=pre.steps, batch_size=pre.batch_size, lr=pre.lr, warmup_steps=pre.warmup_steps,
                      checkpoint_every=max(1, pre.steps // 4))
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=examples, batch_size=pre.batch_size, seed=pre.seed)
    method = build_method("sft", None, ctx, cost, pre.steps)
    fingerprint = {"config": {"profile": to_dict(profile)}, "inputs": {"world": content_digest(world_dir)}}
    trainer = Trainer(model, tokenizer, method, cfg, out_dir.parent / (out_dir.name + "_run"), cost=cost,
                      seed=pre.seed, fingerprint=fingerprint, name="base student pre-training")
    summary = trainer.run()
    trainer.save_model(out_dir)
    write_json(out_dir.parent / (out_dir.name + "_run") / "run.json", {**_provenance(profile), **summary})
    trainer.discard_checkpoint()


# ----------------------------------------------------------------------------- teacher traces
def stage_traces(profile: ProfileConfig, world_dir: Path, out_path: Path) -> None:
    """n teacher samples per training prompt, verified, with per-token log-probs and top-k."""
    from dcod import grading  # math-verify and sympy: imported only by the stages that grade

    set_threads(profile.threads)
    teacher, tokenizer = load_teacher(profile, world_dir, backend=profile.traces.backend)
    records = read_jsonl(Path(world_dir) / "train.jsonl")
    tc = profile.traces
    params = SamplingParams(max_new_tokens=tc.max_new_tokens, temperature=tc.temperature, top_p=tc.top_p,
                            n=tc.samples_per_prompt, top_k_logprobs=tc.top_k_logprobs, seed=tc.seed)

    def work(shard: int, shard_records: list[dict]) -> list[dict]:
        prompts = [encode_prompt(tokenizer, r["question"]) for r in shard_records]
        started = time.time()
        generations = teacher.generate(prompts, replace(params, seed=shard_seed(tc.seed, shard)))
        seconds = (time.time() - started) / max(1, len(generations))  # the shard's time, apportioned
        graded = grading.grade([shard_records[g.prompt_index]["gold"] for g in generations],
                               [g.text for g in generations])
        rows = []
        for generation, result in zip(generations, graded):
            record = shard_records[generation.prompt_index]
            rows.append({"id": record["id"], "question": record["question"], "gold": record["gold"],
                         "prompt_ids": generation.prompt_ids, "completion_ids": generation.token_ids,
                         "teacher_logprobs": generation.logprobs, "text": generation.text,
                         "topk_ids": generation.topk_ids or [], "topk_logprobs": generation.topk_logprobs or [],
                         "verified": bool(result.correct and generation.finish_reason == "stop"),
                         "seconds": seconds})
        return rows

    shard_dir = Path(out_path).parent / f".{Path(out_path).stem}.shards"
    fingerprint = {"profile": to_dict(profile), "world": content_digest(Path(world_dir) / "train.jsonl"),
                   "output": str(out_path)}  # run_sharded adds the source fingerprint
    generated = run_sharded(shard_dir, fingerprint, records, tc.shard_size, work, desc="teacher traces")
    seconds = sum(row.pop("seconds") for row in generated)
    rows = [row for row in generated if row["verified"] or not tc.keep_only_correct]
    if not rows:
        raise RuntimeError("no teacher trace survived verification: check the teacher and the grader")
    write_parquet(out_path, pd.DataFrame(rows))
    write_json(Path(out_path).with_suffix(".json"), {
        **_provenance(profile), "generated": len(generated), "kept": len(rows),
        "generation_seconds": seconds, "tokens_generated": sum(len(row["completion_ids"]) for row in generated),
        "grader": grading.GRADER_INFO})
    finish_shards(shard_dir)


# ----------------------------------------------------------------------------- training
def stage_train(profile: ProfileConfig, experiment_config: Path, seed: int, world_dir: Path, base_dir: Path,
                traces_path: Path, out_dir: Path, *, lr: float | None = None, stop_after: int | None = None) -> None:
    """Train one experiment with one seed; ``lr`` overrides the learning rate (the tuning grid)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    set_threads(profile.threads)
    exp = load_experiment(experiment_config)
    if lr is not None:
        exp.train = {**exp.train, "lr": lr}
    cfg = train_config_for(profile, exp)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    traces = load_traces(traces_path)
    check_vocab(traces, len(tokenizer), str(traces_path))
    prompts_reencoded = use_student_prompts(traces, tokenizer)  # the student's chat template, not the teacher's
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=seed,
                      max_new_tokens=profile.traces.max_new_tokens)
    if exp.method in ("onpolicy_kd", "self_distill"):  # they sample the student while it trains
        ctx.student_backend = rollout_backend(cfg, model, tokenizer, base_dir, profile.eval.batch_size)
    if exp.method == "onpolicy_kd":
        teacher, teacher_tokenizer = load_teacher(profile, world_dir)
        check_same_tokenizer(teacher_tokenizer, tokenizer)  # token-level KD needs one vocabulary
        ctx.teacher = _frozen_on_device(teacher.model, cfg) if isinstance(teacher, HFBackend) else teacher
    if exp.method == "self_distill":
        from dcod import grading

        ctx.prompts = [{"prompt_ids": encode_prompt(tokenizer, r["question"]), "gold": r["gold"]}
                       for r in read_jsonl(Path(world_dir) / "train.jsonl")]
        ctx.grade = lambda golds, texts: [r.correct for r in grading.grade(golds, texts)]
    if exp.method == "dcod" and exp.params.reference == "initial_student":
        ctx.reference_model = _frozen_on_device(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), cfg)
    cost = Cost()
    method = build_method(exp.method, exp.params, ctx, cost, cfg.steps)
    # what the checkpoint was computed from besides the code (docs/architecture.md, "Checkpoints"); exp
    # already holds an --lr override, and an upstream retrain changes the base student's digest
    fingerprint = {"config": {"profile": to_dict(profile), "experiment": to_dict(exp)},
                   "inputs": {"world": content_digest(world_dir), "base": content_digest(base_dir),
                              "traces": content_digest(traces_path)}}
    trainer = Trainer(model, tokenizer, method, cfg, out_dir, cost=cost, seed=seed, stop_after=stop_after,
                      fingerprint=fingerprint, name=f"{exp.name} (seed {seed}, lr {cfg.lr:g})")
    try:
        summary = trainer.run()
    finally:
        if hasattr(ctx.student_backend, "close"):  # a vLLM rollout engine: stop it even when training fails
            ctx.student_backend.close()
    trainer.save_model(out_dir / "model")
    extra = {"self_distill_acceptance": method.accepted} if exp.method == "self_distill" else {}
    if hasattr(ctx.student_backend, "syncs"):  # vLLM rollouts: weight pushes by this process (after a
        extra["rollout_weight_syncs"] = ctx.student_backend.syncs  # resume: since the resume)
    write_json(out_dir / "run.json", {**_provenance(profile), "experiment": to_dict(exp), "train": to_dict(cfg),
                                      "seed": seed, "trace_prompts_reencoded": prompts_reencoded, **summary, **extra})
    trainer.discard_checkpoint()  # it only rescues an interrupted job: never a later run's starting point


def _on_device(model):
    """The model on this process's device (accelerate's choice: a GPU when there is one, else the CPU)."""
    from accelerate import PartialState

    return model.to(PartialState().device)


def _frozen_on_device(model, cfg):
    """A model that only scores (the on-policy teacher, DCOD's initial-student reference) on this process's
    training device (accelerate's choice: its GPU under a launcher, else the CPU), in bf16 when training
    in bf16 (a 7B teacher: 15 GB instead of 30), in eval mode."""
    dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else None
    return _on_device(model).to(dtype=dtype).eval()


def rollout_backend(cfg, model, tokenizer, base_dir: Path, batch_size: int):
    """The student sampler of on-policy KD and self-distillation: the training model through ``HFBackend``,
    or a vLLM engine in this process that receives the model's weights before every sampling call."""
    if cfg.rollout_backend == "hf":
        return HFBackend(model, tokenizer, batch_size=batch_size)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"train.rollout_backend vllm runs one training process; this job has WORLD_SIZE="
                         f"{os.environ['WORLD_SIZE']} (start it with `python -m dcod train`, as the train rules do "
                         f"for rollout methods, or use rollout_backend hf under accelerate launch)")
    from dcod.generation_vllm import SyncedVLLMSampler

    return SyncedVLLMSampler(model, base_dir, gpu_memory_utilization=cfg.rollout_gpu_memory_utilization)


# ----------------------------------------------------------------------------- evaluation
def stage_evaluate(profile: ProfileConfig, world_dir: Path, model_dir: str, out_dir: Path, seed: int = 0,
                   splits: list[str] | None = None, stability: bool = True) -> None:
    """Evaluate a model directory, or the teacher: ``teacher`` (as configured), ``teacher:direct`` or
    ``teacher:decomposed`` (the toy teacher forced to one style, for the calibration report)."""
    from dcod import grading, ifeval  # dcod.ifeval imports lm-eval only when it scores
    from dcod.evaluation import read_split, evaluate_records, sampled_rows, stability_rows, write_results

    set_threads(profile.threads)
    if model_dir == "teacher" or model_dir.startswith("teacher:"):
        style = model_dir.partition(":")[2] or None
        backend, tokenizer = load_teacher(profile, world_dir, style_override=style, backend=profile.eval.backend)
    else:
        backend, tokenizer = generation_backend(profile.eval.backend, model_dir, batch_size=profile.eval.batch_size)
    ev = profile.eval
    budgets = split_budgets(profile, splits or ev.splits)
    records = []
    for split in splits or ev.splits:
        path = Path(world_dir) / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"evaluation split {split!r}: {path} does not exist (known splits are the "
                                    f"*.jsonl files of {world_dir})")
        records.extend({**r, "split": split, "max_new_tokens": budgets.get(split)} for r in read_split(path))
    ifeval_records = [r for r in records if r.get("task") == "ifeval"]
    if ifeval_records:  # refuse what lm-eval's checkers could not score before generating anything
        ifeval.check_golds([r["gold"] for r in ifeval_records], [r["id"] for r in ifeval_records])
    out_dir = Path(out_dir)
    fingerprint = {"profile": to_dict(profile), "seed": seed, "splits": splits or ev.splits,
                   "stability": stability,
                   "model": content_digest(model_dir) if Path(model_dir).exists() else model_dir,
                   "world": [content_digest(Path(world_dir) / f"{s}.jsonl") for s in splits or ev.splits]}
    rows = run_sharded(out_dir / ".shards-greedy", fingerprint, records, ev.shard_size, desc="evaluate",
                       work=lambda _, shard: evaluate_records(backend, tokenizer, shard,
                                                              max_new_tokens=ev.max_new_tokens, seed=seed))
    stability_data = []
    if ev.stability_samples and stability and not splits:
        # half the problems from each of the first two evaluation splits other than validation
        # (math splits only: agreement compares boxed answers, which IFEval responses do not have)
        math_splits = {r["split"] for r in records if r.get("task") != "ifeval"}
        test_splits = [s for s in ev.splits if s != profile.tuning.split and s in math_splits][:2]
        per_split = ev.stability_problems // max(1, len(test_splits))
        subset = []
        for split in test_splits:
            subset += [r for r in records if r["split"] == split][:per_split]
        stability_data = run_sharded(
            out_dir / ".shards-stability", fingerprint, subset, ev.shard_size, desc="stability",
            work=lambda shard, problems: stability_rows(
                backend, tokenizer, problems, samples=ev.stability_samples, temperature=ev.stability_temperature,
                max_new_tokens=ev.max_new_tokens, timeout=5.0, workers=1, seed=shard_seed(seed, shard)))
    sampled = []
    for split, settings in _sampled_settings(profile, splits or ev.splits).items():  # avg@k benchmarks
        sampled += run_sharded(
            out_dir / f".shards-sampled-{split}", fingerprint, [r for r in records if r["split"] == split],
            ev.shard_size, desc=f"avg@{settings.k} {split}",
            work=lambda shard, problems, s=settings: sampled_rows(
                backend, tokenizer, problems, k=s.k, temperature=s.temperature, top_p=s.top_p,
                max_new_tokens=budgets.get(split) or ev.max_new_tokens, seed=shard_seed(seed + 2, shard)))
    grader_info, grader = dict(grading.GRADER_INFO), f"math-verify=={grading.GRADER_INFO['math_verify_version']}"
    if ifeval_records:
        grader_info["ifeval"] = ifeval.scorer_info()
        grader += f";lm-eval=={grader_info['ifeval']['lm_eval_version']}"
    write_json(out_dir / "grader.json", grader_info)
    write_results(out_dir, rows, stability_data, {"code_version": code_version(), "grader": grader,
                                                     "machine": machine_label()}, sampled)
    for folder in out_dir.glob(".shards-*"):
        finish_shards(folder)


def split_budgets(profile: ProfileConfig, splits: list[str]) -> dict[str, int]:
    """Per real benchmark, its declared generation budget capped by the profile's ``eval.max_new_tokens``
    (IFEval: lm-eval's 1,280; GSM8K: 2,048). Toy splits, the held-out ``validation`` split and any other
    split that is not a declared benchmark are absent: they use ``eval.max_new_tokens``."""
    if profile.data.source != "benchmarks":
        return {}
    from dcod.benchmarks import get_benchmark, list_benchmarks

    known = list_benchmarks()
    declared = {split: get_benchmark(split).generation for split in splits if split in known}
    return {split: min(profile.eval.max_new_tokens, g.max_new_tokens) for split, g in declared.items()
            if g is not None}


def _sampled_settings(profile: ProfileConfig, splits: list[str]) -> dict:
    """The avg@k settings of each evaluated benchmark that declares them (real benchmarks only)."""
    if profile.data.source != "benchmarks" or not profile.eval.sampled:
        return {}
    from dcod.benchmarks import get_benchmark, list_benchmarks

    known = list_benchmarks()
    settings = {split: get_benchmark(split).generation for split in splits if split in known}
    return {split: g.sampled for split, g in settings.items() if g is not None and g.sampled is not None}

