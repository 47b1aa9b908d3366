"""Models: tiny Llamas built from config (toy profiles) and pretrained HF / GGUF models (real profiles)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dcod.config import StudentConfig


def set_threads(threads: int) -> None:
    """One knob for intra-op threads; Snakemake jobs each get ``threads`` so jobs do not oversubscribe."""
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def build_tiny_llama(cfg: StudentConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    """A ``LlamaForCausalLM`` from scratch: the same class, loading and generation code as real models."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def load_model(path: str | Path, *, gguf_file: str | None = None, dtype=torch.float32):
    """Load a causal LM and its tokenizer from a local directory (or a hub id where the hub is reachable)."""
    path = str(path)
    if gguf_file is None and not Path(path).exists() and Path(path).is_absolute():
        raise FileNotFoundError(f"model path {path} does not exist")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def check_same_tokenizer(teacher_tokenizer, student_tokenizer) -> None:
    """Distillation on token ids needs one tokenizer; a mismatch is an error, never a silent remap."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise ValueError("teacher and student tokenizers differ: token-level distillation needs a shared "
                         "tokenizer (pick a teacher/student pair from the same family)")


def shared_vocab_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Slice logits to the shared tokenizer length (Qwen2.5 <=3B and >=7B pad their lm-heads differently)."""
    if logits.shape[-1] < vocab_size:
        raise ValueError(f"model has {logits.shape[-1]} output logits but the tokenizer has {vocab_size} tokens")
    return logits[..., :vocab_size]
