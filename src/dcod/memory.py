"""How much accelerator memory one training process needs, stated and checked before anything loads.

The train stage (``dcod.pipeline.stage_train``) prints ``train_estimate(...)`` and, on a GPU, compares it
with the free memory (``torch.cuda.mem_get_info``): a job that cannot fit stops with this arithmetic,
not with an out-of-memory error an hour in (docs/paper_setting.md, "Slurm resources, memory and FSDP2").
An estimate, not a measurement; every term is a stated count of bytes:

- **student** (trained, fp32 master weights under bf16 autocast): weights 4 + gradients 4 + AdamW's
  two moments 8 = 16 bytes per parameter. FSDP / ZeRO-3 (``sharding="full"``) divide all 16 by the
  number of processes; ZeRO-2 (``"grads_and_optimizer"``) divides 12 of them.
- **teacher** in memory (on-policy KD): 2 bytes per parameter in bf16 (4 in fp32); never sharded (every
  rank holds it). **reference** (a frozen initial student for DCOD / iw-SFT): the same, per parameter.
- **vLLM engine** (rollouts inside the training process): vLLM reserves ``gpu_memory_utilization`` x the
  device's total memory for its weights and KV cache.
- **activations** of one micro-batch of ``tokens`` = micro-batch x sequence length, per decoder layer and
  token (hidden size h, key/value width kv, MLP width i; bf16 = 2 bytes, fp32 norm inputs = 4):
  two RMSNorm inputs 8h, attention (q/k/v input, q, k, v, attention output) 6h + 4kv, SwiGLU MLP
  (input, gate, up, activation, product) 2h + 8i: 16h + 4kv + 8i bytes. Without checkpointing every
  layer keeps them; with gradient checkpointing each layer keeps its fp32 input (4h) and one layer at a
  time is recomputed: layers x 4h + (16h + 4kv + 8i).
- **logits**: the chunked LM head (``train.logits_chunk_tokens``) keeps chunk x vocab x 4 bytes x 3
  (logits, log-softmax, their gradient); without chunking, or for a method whose loss reads the whole
  distribution (``Method.chunked_logits`` False: asft, onpolicy_kd), the whole micro-batch's.
- **teacher distributions** (methods with a teacher in memory): the trainer collates every micro-batch
  of the optimiser step first, so the teacher's full-vocabulary log-probs of all ``step_tokens`` of the
  rank are alive at once (step_tokens x vocab x 4), and the divergence of one micro-batch holds about
  five more full-vocabulary float tensors (student logits, both log-softmaxes, the pointwise divergence,
  its gradient): 5 x tokens x vocab x 4.
- **overhead**: 2 GB for the CUDA context, the allocator's fragmentation and workspace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

GB = 1e9
OVERHEAD_BYTES = 2 * GB
# the sequence length a micro-batch is padded to, at most: the generation cap (traces.max_new_tokens) plus
# this prompt allowance (the paper profile's eval comment: 1,024 tokens of prompt)
PROMPT_ALLOWANCE = 1024


@dataclass(frozen=True)
class Shape:
    """What the arithmetic needs of a decoder-only model (read from its config.json)."""

    params: int
    hidden: int
    layers: int
    intermediate: int
    kv_width: int  # key/value heads x head size
    vocab: int


def shape_from_config(config: dict) -> Shape:
    """A Llama / Qwen2-style config.json as a Shape; the parameter count from the layer shapes (embeddings,
    untied LM head, q/k/v/o with Qwen2's q/k/v biases, SwiGLU MLP, two norms per layer, final norm)."""
    h, layers, i, vocab = (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"],
                           config["vocab_size"])
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    bias = (h + 2 * kv) if config.get("model_type") == "qwen2" else 0
    per_layer = 2 * h * h + 2 * h * kv + bias + 3 * h * i + 2 * h
    head = 0 if config.get("tie_word_embeddings", True) else vocab * h
    return Shape(params=vocab * h + head + layers * per_layer + h, hidden=h, layers=layers, intermediate=i,
                 kv_width=kv, vocab=vocab)


def read_shape(model_dir) -> Shape | None:
    """The Shape of a local HF model folder, or None when it has no config.json (a hub id, a GGUF file)."""
    path = Path(str(model_dir)) / "config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    return shape_from_config(config.get("text_config", config))


@dataclass
class Estimate:
    parts: dict[str, float] = field(default_factory=dict)  # name -> bytes
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def table(self) -> str:
        lines = [f"  {name:<22} {value / GB:8.2f} GB" for name, value in self.parts.items()]
        lines.append(f"  {'total':<22} {self.total / GB:8.2f} GB")
        return "\n".join(lines + [f"  ({note})" for note in self.notes])


def activation_bytes(shape: Shape, tokens: int, checkpointing: bool) -> float:
    per_layer = 16 * shape.hidden + 4 * shape.kv_width + 8 * shape.intermediate
    if checkpointing:
        return tokens * (shape.layers * 4 * shape.hidden + per_layer)
    return tokens * shape.layers * per_layer


def train_estimate(student: Shape, *, micro_batch: int, seq_len: int, accumulation: int = 1, processes: int = 1,
                   sharding: str = "none", checkpointing: bool = False, bf16: bool = True,
                   logits_chunk_tokens: int = 0, teacher: Shape | None = None, reference: bool = False,
                   engine_bytes: float = 0.0) -> Estimate:
    """Per-process bytes of one training process (the module docstring gives each term)."""
    if sharding not in ("none", "grads_and_optimizer", "full"):
        raise ValueError(f"sharding: none, grads_and_optimizer or full, got {sharding!r}")
    p, frozen = student.params, 2 if bf16 else 4
    parts = {}
    if sharding == "full":
        parts["student (16 B/param)"] = 16 * p / processes
    elif sharding == "grads_and_optimizer":
        parts["student (16 B/param)"] = 4 * p + 12 * p / processes
    else:
        parts["student (16 B/param)"] = 16 * p
    if teacher is not None:
        parts["teacher"] = frozen * teacher.params
    if reference:
        parts["reference"] = frozen * p
    if engine_bytes:
        parts["vLLM engine"] = engine_bytes
    tokens = micro_batch * seq_len
    parts["activations"] = activation_bytes(student, tokens, checkpointing)
    vocab = student.vocab
    parts["logits"] = 3 * 4 * vocab * (min(tokens, logits_chunk_tokens) if logits_chunk_tokens else tokens)
    if teacher is not None:
        parts["teacher distributions"] = 4 * vocab * (tokens * accumulation + 5 * tokens)
    parts["overhead"] = OVERHEAD_BYTES
    return Estimate(parts)


class DoesNotFitError(MemoryError):
    """The estimate exceeds the device's free memory: raised before any model is loaded."""


def check_fits(estimate: Estimate, free_bytes: float, what: str) -> None:
    """Refuse a job whose estimate exceeds ``free_bytes``, with the arithmetic in the message."""
    if estimate.total > free_bytes:
        raise DoesNotFitError(
            f"{what}: estimated {estimate.total / GB:.1f} GB per process, the device has {free_bytes / GB:.1f} GB "
            f"free:\n{estimate.table()}\nLower train.micro_batch_size, turn on train.gradient_checkpointing, "
            f"lower train.rollout_gpu_memory_utilization or shard the student (train.accelerate_config); "
            f"the arithmetic is in src/dcod/memory.py")
