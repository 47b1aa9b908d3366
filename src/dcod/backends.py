"""Which model generates or scores for a stage: generation backends over a model folder, the teacher, the
student's rollout sampler while it trains, and frozen scorers on the training device."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dcod.config import ProfileConfig, TrainConfig
from dcod.generation import HFBackend
from dcod.models import load_model, pinned_path


def on_device(model):
    """The model on this process's device (accelerate's choice: a GPU when there is one, else the CPU)."""
    from accelerate import PartialState

    return model.to(PartialState().device)


def frozen_dtype(cfg: TrainConfig):
    """The dtype of a model that only scores: bf16 when training in bf16, else fp32."""
    return torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float32


def frozen_on_device(model, cfg: TrainConfig):
    """A model that only scores (a teacher in memory, a frozen reference) on this process's training
    device (accelerate's choice: its GPU under a launcher, else the CPU), in bf16 when training in bf16
    (a 7B teacher: 15 GB instead of 30), in eval mode. Cast BEFORE the move: moving first would put the
    fp32 copy on the device (30 GB for a 7B teacher) before the cast halves it."""
    return on_device(model.to(dtype=frozen_dtype(cfg))).eval()


def generation_backend(name: str, model_dir, *, batch_size: int, max_logprobs: int = 20):
    """A generation backend over a model folder: ``hf`` (always available) or ``vllm``."""
    if name == "vllm":
        from dcod.generation_vllm import VLLMBackend

        backend = VLLMBackend(str(model_dir), max_logprobs=max(20, max_logprobs))
        return backend, backend.tokenizer
    model, tokenizer = load_model(model_dir)
    return HFBackend(on_device(model), tokenizer, batch_size=batch_size), tokenizer


def load_teacher(profile: ProfileConfig, world_dir: Path, style_override: str | None = None,
                 backend: str = "hf"):
    """The teacher as a generation backend (toy: the exact programmatic teacher) and its tokenizer."""
    if profile.teacher.kind == "programmatic":
        from transformers import AutoTokenizer

        from dcod.toy.teacher import ToyTeacher

        tokenizer = AutoTokenizer.from_pretrained(Path(world_dir) / "tokenizer")
        return ToyTeacher(tokenizer, p_direct=profile.teacher.p_direct, floor=profile.teacher.floor,
                          style_override=style_override, variants=profile.teacher.variants,
                          direct_confidence=profile.teacher.direct_confidence,
                          registers=profile.teacher.register_list, space=profile.teacher.p_space,
                          layout=profile.teacher.layout), tokenizer
    if style_override is not None:  # an HF teacher has no step styles to force: never evaluate it under that name
        raise ValueError(f"teacher:{style_override}: forcing a step style needs the toy world's programmatic teacher, "
                         f"not teacher.kind {profile.teacher.kind!r}")
    if backend == "vllm":
        return generation_backend("vllm", pinned_path(profile.teacher.path, profile.teacher.revision),
                                  batch_size=profile.eval.batch_size,
                                  max_logprobs=profile.traces.top_k_logprobs)
    model, tokenizer = load_model(profile.teacher.path, gguf_file=profile.teacher.gguf_file,
                                  revision=profile.teacher.revision)
    return HFBackend(on_device(model), tokenizer, batch_size=profile.eval.batch_size), tokenizer


def teacher_scorer(profile: ProfileConfig, world_dir: Path, cfg: TrainConfig):
    """The teacher that scores training examples in memory (toy: the exact teacher; HF: its model, frozen
    on the training device) and its tokenizer."""
    if profile.teacher.kind == "programmatic":
        return load_teacher(profile, world_dir)
    # loaded in the dtype it scores in (a 7B teacher: 15 GB of host memory in bf16, not 30), then moved
    model, tokenizer = load_model(profile.teacher.path, gguf_file=profile.teacher.gguf_file, dtype=frozen_dtype(cfg))
    return frozen_on_device(model, cfg), tokenizer


def rollout_backend(cfg: TrainConfig, model, tokenizer, base_dir: Path, batch_size: int):
    """The student sampler of methods that sample while training: the training model through
    ``HFBackend``, or a vLLM engine in this process that receives the model's weights before every
    sampling call."""
    if cfg.rollout_backend == "hf":
        return HFBackend(model, tokenizer, batch_size=batch_size)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"train.rollout_backend vllm runs one training process; this job has WORLD_SIZE="
                         f"{os.environ['WORLD_SIZE']} (start it with `python -m dcod train`, as the train rules do "
                         f"for methods with student rollouts, or use rollout_backend hf under accelerate launch)")
    from dcod.generation_vllm import SyncedVLLMSampler

    return SyncedVLLMSampler(model, base_dir, gpu_memory_utilization=cfg.rollout_gpu_memory_utilization)
