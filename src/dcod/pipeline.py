"""Pipeline stages: each function is one CLI subcommand and one Snakemake rule.

world -> teacher, base student -> teacher traces -> (offline student passes, per seed, for the methods that
declare them) -> train {experiment} x {seed} -> evaluate -> tables, figures, report. Every stage writes its outputs atomically and saves the resolved config beside them.
What a stage builds on lives next to its concept: backends (``dcod.backends``), splits and generation
budgets (``dcod.splits``), the evaluation passes (``dcod.evaluation``), methods (``dcod.methods``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from dcod.backends import frozen_on_device, generation_backend, load_teacher, rollout_backend, teacher_scorer
from dcod.config import (LearningRate, ProfileConfig, TrainConfig, learning_rate_for, load_experiment,
                         train_config_for)
from dcod.data import check_vocab, load_traces, use_student_prompts
from dcod.generation import SamplingParams
from dcod.io import (atomic_path, code_version, content_digest, environment_version, read_jsonl, write_json,
                     write_parquet)
from dcod.launch import check_launch
from dcod.methods import Cost, Method, Needs, StepContext, resolve
from dcod.models import (build_tiny_llama, check_same_tokenizer, encode_prompt, load_model,
                         pretrained_student_end_tokens, set_end_tokens, set_threads)
from dcod.provenance import machine_info, machine_label
from dcod.shards import run_sharded, shard_seed
from dcod.shards import finish as finish_shards
from dcod.splits import generation_budgets, sampled_settings, world_config, write_benchmark_world
from dcod.training import Trainer


def _provenance(profile: ProfileConfig, **extra) -> dict:
    """Saved beside every artefact: the resolved profile, the commit, the installed packages (the lock's hash
    and a digest of every version) and the machine (its CPU kernels and thread count decide the floats:
    docs/reproducibility.md)."""
    return {"profile": profile.model_dump(mode="json"), "code_version": code_version(),
            "environment": environment_version(), "machine": machine_info(), **extra}


# ----------------------------------------------------------------------------- world
def stage_world(profile: ProfileConfig, out_dir: Path) -> None:
    """The prompts of every split as ``<split>.jsonl`` plus the tokenizer: the toy world, or real benchmarks."""
    out_dir = Path(out_dir)
    if profile.data.source == "benchmarks":
        summary = write_benchmark_world(profile, out_dir)
        write_json(out_dir / "world.json", {**_provenance(profile), **summary})
        return
    from dcod.toy.tokenizer import build_tokenizer
    from dcod.toy.world import config_dict, write_world

    world = world_config(profile)
    write_world(world, out_dir)
    with atomic_path(out_dir / "tokenizer", directory=True) as tmp:
        build_tokenizer().save_pretrained(tmp)
    write_json(out_dir / "world.json", {**_provenance(profile), "world": config_dict(world)})


# ----------------------------------------------------------------------------- base student
def stage_base_student(profile: ProfileConfig, world_dir: Path, out_dir: Path, threads: int | None = None) -> None:
    """Pre-train the toy student on its native decomposed style plus the retention skill; for a profile
    with a pretrained student (``student.path``), save that model as a plain HF folder instead."""
    from transformers import AutoTokenizer

    set_threads(threads or profile.pretrain.threads or profile.threads)
    if profile.student.path is not None:
        model, tokenizer = load_model(profile.student.path, gguf_file=profile.student.gguf_file,
                                      revision=profile.student.revision)
        # its generation_config.json lists every end token it must stop on, the teacher's included
        set_end_tokens(model, pretrained_student_end_tokens(model, tokenizer, profile.student, profile.teacher))
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
    cfg = TrainConfig(steps=pre.steps, batch_size=pre.batch_size, lr=pre.lr, warmup_steps=pre.warmup_steps,
                      checkpoint_every=max(1, pre.steps // 4))
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=examples, batch_size=pre.batch_size, seed=pre.seed)
    ctx.total_steps = pre.steps
    method = Method(Method.Params(), ctx, cost)  # the base contract: NLL on every completion token
    fingerprint = {"config": {"profile": profile.model_dump(mode="json")},
                   "inputs": {"world": content_digest(world_dir)}}
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
    fingerprint = {"profile": profile.model_dump(mode="json"),
                   "world": content_digest(Path(world_dir) / "train.jsonl"),
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


# ----------------------------------------------------------------------------- offline student passes
def stage_student_traces(profile: ProfileConfig, world_dir: Path, base_dir: Path, traces_path: Path, seed: int,
                         out_path: Path) -> None:
    """One completion per training prompt from the seed's base student, scored by the teacher
    (``Needs.student_traces``; dcod.student_pass)."""
    from dcod import student_pass

    set_threads(profile.threads)
    backend, tokenizer = generation_backend(profile.eval.backend, base_dir, batch_size=profile.eval.batch_size)
    # in fp32, as the traces stage's teacher (a prepare stage: it does not read the train section)
    teacher, teacher_tokenizer = teacher_scorer(profile, world_dir, TrainConfig(mixed_precision="no"))
    check_same_tokenizer(teacher_tokenizer, tokenizer)  # the teacher scores the student's tokens
    traces = load_traces(traces_path)
    use_student_prompts(traces, tokenizer)
    prompts = student_pass.training_prompts(traces)
    k = profile.traces.top_k_logprobs
    params = SamplingParams(max_new_tokens=profile.traces.max_new_tokens, temperature=student_pass.STUDENT_TEMPERATURE,
                            top_p=student_pass.STUDENT_TOP_P, n=1)

    def work(shard: int, records: list[dict]) -> list[dict]:
        sampling = replace(params, seed=shard_seed(profile.traces.seed * 1000 + seed, shard))
        generations, generate_s = student_pass.timed(backend.generate, [r["prompt_ids"] for r in records], sampling)
        examples = [{"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids} for g in generations]
        scores, score_s = student_pass.timed(student_pass.teacher_scores, teacher, examples, tokenizer.pad_token_id,
                                             len(tokenizer), k)
        share = 1 / max(1, len(generations))  # the shard's seconds, apportioned to its rows
        return [{**{key: records[g.prompt_index][key] for key in ("id", "question", "gold")
                    if key in records[g.prompt_index]},
                 "prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "text": g.text,
                 "finish_reason": g.finish_reason, **score,
                 "generate_seconds": generate_s * share, "score_seconds": score_s * share}
                for g, score in zip(generations, scores)]

    out_path = Path(out_path)
    shard_dir = out_path.parent / f".{out_path.stem}.shards"
    fingerprint = {"profile": profile.model_dump(mode="json"), "seed": seed, "base": content_digest(base_dir),
                   "traces": content_digest(traces_path), "output": str(out_path)}
    rows = run_sharded(shard_dir, fingerprint, prompts, profile.traces.shard_size, work, desc="student traces")
    generate_s = sum(row.pop("generate_seconds") for row in rows)
    score_s = sum(row.pop("score_seconds") for row in rows)
    generated = sum(len(row["completion_ids"]) for row in rows)
    write_parquet(out_path, pd.DataFrame(rows))
    write_json(out_path.with_suffix(".json"), {
        **_provenance(profile), "seed": seed, "prompts": len(rows), "tokens_generated": generated,
        "student_forward_tokens": 0, "teacher_forward_tokens": sum(len(r["prompt_ids"]) for r in rows) + generated,
        "generation_seconds": generate_s, "scoring_seconds": score_s, "seconds": generate_s + score_s,
        "temperature": params.temperature, "top_p": params.top_p, "max_new_tokens": params.max_new_tokens})
    finish_shards(shard_dir)


def stage_score_traces(profile: ProfileConfig, base_dir: Path, traces_path: Path, out_path: Path) -> None:
    """Every teacher trace scored by the seed's base student: per-token NLL and rank (``Needs.trace_scores``;
    dcod.student_pass)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dcod import student_pass
    from dcod.backends import on_device

    set_threads(profile.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = on_device(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32))
    traces = load_traces(traces_path)
    use_student_prompts(traces, tokenizer)  # scored after the prompt the student trains with

    def work(shard: int, records: list[dict]) -> list[dict]:
        scores, seconds = student_pass.timed(student_pass.student_scores, model, records, tokenizer.pad_token_id)
        return [{**score, "seconds": seconds / max(1, len(records))} for score in scores]

    out_path = Path(out_path)
    shard_dir = out_path.parent / f".{out_path.stem}.shards"
    fingerprint = {"profile": profile.model_dump(mode="json"), "base": content_digest(base_dir),
                   "traces": content_digest(traces_path), "output": str(out_path)}
    rows = run_sharded(shard_dir, fingerprint, traces, profile.traces.shard_size, work, desc="trace scores")
    seconds = sum(row.pop("seconds") for row in rows)
    write_parquet(out_path, pd.DataFrame(rows))
    write_json(out_path.with_suffix(".json"), {
        **_provenance(profile), "traces": len(rows), "tokens_generated": 0, "teacher_forward_tokens": 0,
        "student_forward_tokens": sum(len(t["prompt_ids"]) + len(t["completion_ids"]) for t in traces),
        "seconds": seconds})
    finish_shards(shard_dir)


# ----------------------------------------------------------------------------- training
def step_context(profile: ProfileConfig, cfg: TrainConfig, needs: Needs, *, model, tokenizer, traces: list[dict],
                 seed: int, world_dir: Path, base_dir: Path, passes: dict[str, Path] | None = None) -> StepContext:
    """What a method's declared ``needs`` ask for, loaded for the training process: a rollout backend over
    the live student, a teacher in memory (one tokenizer with the student's), the training prompts with a
    grader, a frozen copy of the initial student, the outputs of its offline student passes (``passes``:
    need name -> the pass's parquet, dcod.student_pass)."""
    from dcod import student_pass

    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=seed,
                      total_steps=cfg.steps, max_new_tokens=profile.traces.max_new_tokens)
    paths = passes or {}
    if needs.student_traces:
        ctx.student_traces = student_pass.load_student_traces(paths["student_traces"], tokenizer)
        check_vocab(ctx.student_traces, len(tokenizer), str(paths["student_traces"]))
    if needs.trace_scores:
        ctx.trace_scores = student_pass.load_trace_scores(paths["trace_scores"], traces)
    if needs.student_rollouts:
        ctx.student_backend = rollout_backend(cfg, model, tokenizer, base_dir, profile.eval.batch_size)
    if needs.teacher_model:
        ctx.teacher, teacher_tokenizer = teacher_scorer(profile, world_dir, cfg)
        check_same_tokenizer(teacher_tokenizer, tokenizer)  # token-level KD needs one vocabulary
    if needs.training_prompts:
        from dcod import grading

        ctx.prompts = [{"prompt_ids": encode_prompt(tokenizer, r["question"]), "gold": r["gold"]}
                       for r in read_jsonl(Path(world_dir) / "train.jsonl")]
        ctx.grade = lambda golds, texts: [r.correct for r in grading.grade(golds, texts)]
    if needs.reference_model:
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        ctx.reference_model = frozen_on_device(reference, cfg)
    return ctx


def check_train_memory(profile: ProfileConfig, cfg: TrainConfig, needs: Needs, base_dir: Path, name: str,
                       chunked_logits: bool = True) -> None:
    """Print the memory estimate of this training process (dcod.memory) and, on a GPU, refuse a job whose
    estimate exceeds the device's free memory, before any model is loaded. ``chunked_logits``: the method's
    loss reads the LM head in chunks (``Method.chunked_logits``); one that reads the whole distribution
    (asft, onpolicy_kd) holds the full logits, and is estimated so."""
    import os

    from dcod import memory

    student = memory.read_shape(base_dir)
    if student is None:
        print(f"memory estimate: skipped ({base_dir} has no config.json)")
        return
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    sharding = "none"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        sharding = "full"
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        sharding = "full" if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" else "grads_and_optimizer"
    micro = cfg.micro_batch_size or cfg.batch_size // processes
    teacher = None
    if needs.teacher_model and profile.teacher.kind == "hf" and profile.teacher.gguf_file is None \
            and not str(profile.teacher.path).startswith("pkg://"):
        teacher = memory.read_shape(profile.teacher.path) or _hub_shape(profile.teacher.path)
    free = total = None
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
    engine = 0.0
    if needs.student_rollouts and cfg.rollout_backend == "vllm" and total is not None:
        engine = (cfg.rollout_gpu_memory_utilization or 0.9) * total  # VLLMBackend's GPU default: 0.9
    estimate = memory.train_estimate(
        student, micro_batch=micro, seq_len=profile.traces.max_new_tokens + memory.PROMPT_ALLOWANCE,
        accumulation=cfg.batch_size // (micro * processes), processes=processes, sharding=sharding,
        checkpointing=cfg.gradient_checkpointing, bf16=cfg.mixed_precision == "bf16",
        logits_chunk_tokens=cfg.logits_chunk_tokens if chunked_logits and student.vocab >= cfg.logits_chunk_min_vocab
        else 0,
        teacher=teacher, reference=needs.reference_model, engine_bytes=engine)
    if needs.teacher_model and teacher is None and profile.teacher.kind == "hf":
        estimate.notes.append(f"teacher {profile.teacher.path}: size not read (no config.json), not counted")
    print(f"memory estimate of {name}, one of {processes} process(es):\n{estimate.table()}", flush=True)
    if free is not None:
        memory.check_fits(estimate, free, f"train {name}")


def _hub_shape(path):
    """A hub model's Shape from its config (the hub cache, or the hub), or None."""
    from dcod import memory

    try:
        from transformers import AutoConfig

        return memory.shape_from_config(AutoConfig.from_pretrained(str(path)).get_text_config().to_dict())
    except (OSError, ValueError, KeyError):
        return None


def stage_train(profile: ProfileConfig, experiment_config: Path, seed: int, world_dir: Path, base_dir: Path,
                traces_path: Path, out_dir: Path, *, lr: float | None = None, lr_table: Path | None = None,
                stop_after: int | None = None, passes: dict[str, Path] | None = None) -> None:
    """Train one experiment with one seed. The learning rate is the profile's for this experiment
    (``learning_rate_for``; ``lr_table``: the profile's tuning results when it takes them from there), or
    ``lr``, a point of the tuning grid. ``passes``: the parquet of each offline student pass the method
    needs (need name -> path, dcod.student_pass)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    set_threads(profile.threads)
    exp = load_experiment(experiment_config)
    if lr is not None:
        rate = LearningRate(value=lr, origin=f"--lr {lr:g}: a point of the tuning grid (tuning.lrs)")
    else:
        rate = learning_rate_for(profile, exp, lr_table)
    print(f"learning rate {rate.value:g} from {rate.origin}", flush=True)
    cfg = train_config_for(profile, exp, lr=rate.value)
    method_class, params = resolve(exp)
    needs = method_class.needs(params)
    passes = _check_passes(needs, passes or {}, experiment_config)
    experiment = {**exp.model_dump(mode="json"), "params": params.model_dump(mode="json")}  # resolved
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # before anything loads: a launch that gives wrong numbers, a job that cannot fit its device
    check_launch(cfg, method_class.weighted, cfg.accelerate_config, where=f"{experiment_config} (train)")
    check_train_memory(profile, cfg, needs, base_dir, name=exp.name, chunked_logits=method_class.chunked_logits)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    # every method reads the traces file: offline methods train on it, rollouts start from its prompts
    traces = load_traces(traces_path)
    check_vocab(traces, len(tokenizer), str(traces_path))
    prompts_reencoded = use_student_prompts(traces, tokenizer)  # the student's chat template, not the teacher's
    ctx = step_context(profile, cfg, needs, model=model, tokenizer=tokenizer, traces=traces, seed=seed,
                       world_dir=world_dir, base_dir=base_dir, passes=passes)
    cost = Cost()
    method = method_class(params, ctx, cost)
    # what the checkpoint was computed from besides the code (docs/architecture.md, "Checkpoints"): the
    # configs and the learning rate (which may come from a tuning file), and an upstream retrain changes the base
    # student's digest
    fingerprint = {"config": {"profile": profile.model_dump(mode="json"), "experiment": experiment,
                              "lr": rate.value},
                   "inputs": {"world": content_digest(world_dir), "base": content_digest(base_dir),
                              "traces": content_digest(traces_path),
                              **{name: content_digest(path) for name, path in passes.items()}}}
    trainer = Trainer(model, tokenizer, method, cfg, out_dir, cost=cost, seed=seed, stop_after=stop_after,
                      fingerprint=fingerprint, name=f"{exp.name} (seed {seed}, lr {cfg.lr:g})")
    try:
        summary = trainer.run()
    finally:
        if hasattr(ctx.student_backend, "close"):  # a vLLM rollout engine: stop it even when training fails
            ctx.student_backend.close()
    trainer.save_model(out_dir / "model")
    extra = method.run_summary()
    if hasattr(ctx.student_backend, "syncs"):  # vLLM rollouts: weight pushes by this process (after a
        extra["rollout_weight_syncs"] = ctx.student_backend.syncs  # resume: since the resume)
    # the method's declarations travel with the run: the tables read its needs (offline trace cost), its
    # Table 2 knobs (name-value pairs: run.json's keys are sorted, the columns keep the method's order) and
    # the diagnostics its weights log, without importing the method
    declared = {"needs": needs.as_dict(), "report_columns": list(method_class.report_columns(params).items()),
                "weight_diagnostics": list(method_class.weight_diagnostics)}
    # the one-off cost of the seed's offline student passes this run used (dcod.student_pass), beside the
    # training cost, as the teacher traces' one-off cost sits beside it in the tables
    from dcod.student_pass import pass_cost

    declared["offline_passes"] = {name: pass_cost(Path(path).with_suffix(".json")) for name, path in passes.items()}
    write_json(out_dir / "run.json", {**_provenance(profile), "experiment": experiment,
                                      "train": cfg.model_dump(mode="json"), "seed": seed,
                                      "learning_rate": rate.model_dump(),
                                      "trace_prompts_reencoded": prompts_reencoded, **declared, **summary, **extra})
    trainer.discard_checkpoint()  # it only rescues an interrupted job: never a later run's starting point


def _check_passes(needs: Needs, passes: dict[str, Path], experiment_config: Path) -> dict[str, Path]:
    """The offline student passes the method declares, each given and existing; an undeclared one is refused
    too (a run must not record a cost it did not incur)."""
    from dcod.student_pass import PASSES

    declared = {name for name in PASSES if getattr(needs, name)}
    given = {name for name, path in passes.items() if path is not None}
    for name in sorted(declared - given):
        raise ValueError(f"{experiment_config}: its method needs the {name} pass (Needs.{name}); pass "
                         f"--{name.replace('_', '-')} <its train.parquet> (the DAG's {name} rule builds it)")
    for name in sorted(given - declared):
        raise ValueError(f"{experiment_config}: --{name.replace('_', '-')} given, but its method does not "
                         f"declare Needs.{name}")
    for name in sorted(declared):
        if not Path(passes[name]).is_file():
            raise FileNotFoundError(f"--{name.replace('_', '-')}: {passes[name]} does not exist")
    return {name: Path(passes[name]) for name in sorted(declared)}


# ----------------------------------------------------------------------------- evaluation
def stage_evaluate(profile: ProfileConfig, world_dir: Path, model_dir: str, out_dir: Path, seed: int = 0,
                   splits: list[str] | None = None, stability: bool = True) -> None:
    """Evaluate a model directory, or the teacher: ``teacher`` (as configured), ``teacher:direct`` or
    ``teacher:decomposed`` (the toy teacher forced to one style, for the calibration report)."""
    from dcod import grading, ifeval  # dcod.ifeval imports lm-eval only when it scores
    from dcod.evaluation import evaluate_records, read_split, sampled_pass, stability_pass, write_results

    set_threads(profile.threads)
    if model_dir == "teacher" or model_dir.startswith("teacher:"):
        style = model_dir.partition(":")[2] or None
        backend, tokenizer = load_teacher(profile, world_dir, style_override=style, backend=profile.eval.backend)
    else:
        backend, tokenizer = generation_backend(profile.eval.backend, model_dir, batch_size=profile.eval.batch_size)
    ev = profile.eval
    full = splits is None  # the stability pass belongs to the full evaluation only
    splits = splits or ev.splits
    budgets = generation_budgets(profile, splits)
    records = []
    for split in splits:
        path = Path(world_dir) / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"evaluation split {split!r}: {path} does not exist (known splits are the "
                                    f"*.jsonl files of {world_dir})")
        records.extend({**r, "split": split, "max_new_tokens": budgets[split]} for r in read_split(path))
    ifeval_records = [r for r in records if r.get("task") == "ifeval"]
    if ifeval_records:  # refuse what lm-eval's checkers could not score before generating anything
        ifeval.check_golds([r["gold"] for r in ifeval_records], [r["id"] for r in ifeval_records])
    out_dir = Path(out_dir)
    fingerprint = {"profile": profile.model_dump(mode="json"), "seed": seed, "splits": splits,
                   "stability": stability,
                   "model": content_digest(model_dir) if Path(model_dir).exists() else model_dir,
                   "world": [content_digest(Path(world_dir) / f"{s}.jsonl") for s in splits]}
    rows = run_sharded(out_dir / ".shards-greedy", fingerprint, records, ev.shard_size, desc="evaluate",
                       work=lambda _, shard: evaluate_records(backend, tokenizer, shard,
                                                              max_new_tokens=ev.max_new_tokens, seed=seed))
    stability_data = []
    if ev.stability_samples and stability and full:
        stability_data = stability_pass(backend, tokenizer, records, ev, skip_split=profile.tuning.split,
                                        folder=out_dir / ".shards-stability", fingerprint=fingerprint, seed=seed)
    sampled = sampled_pass(backend, tokenizer, records, sampled_settings(profile, splits), budgets,
                           shard_size=ev.shard_size, out_dir=out_dir, fingerprint=fingerprint, seed=seed)
    grader_info, grader = dict(grading.GRADER_INFO), f"math-verify=={grading.GRADER_INFO['math_verify_version']}"
    if ifeval_records:
        grader_info["ifeval"] = ifeval.scorer_info()
        grader += f";lm-eval=={grader_info['ifeval']['lm_eval_version']}"
    write_json(out_dir / "grader.json", grader_info)
    write_results(out_dir, rows, stability_data, {"code_version": code_version(), "grader": grader,
                                                     "machine": machine_label()}, sampled)
    for folder in out_dir.glob(".shards-*"):
        finish_shards(folder)
