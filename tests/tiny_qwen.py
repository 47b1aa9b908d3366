"""A locally built Qwen2-style teacher/student pair for the stop-token tests and the paper_smoke CPU twin.

The paper's pair (Qwen2.5-Math-7B-Instruct -> Qwen2.5-1.5B) shares one vocabulary but not its end tokens:
the instruct teacher's eos is ``<|im_end|>`` (its chat turns end with it), the base student's is
``<|endoftext|>``. Here, without the hub: a byte-level BPE tokenizer (Qwen2's pre-tokenizer and byte
decoder, the 256 byte symbols as vocabulary, no merges) with Qwen's three special tokens and the ChatML
chat template, saved twice with the two eos settings; and tiny random ``Qwen2ForCausalLM`` models built
from config.

``end_turns`` makes a random model end its answers with one token, as an instruct teacher (or a student
distilled from one) does: the residual stream's dimension 0 is made a constant (no layer writes it), so
after the final RMSNorm it is positive at every position, and the LM head reads it only for the end
token (raised) and for the suppressed tokens (lowered). Every other logit stays random.
"""

from __future__ import annotations

from pathlib import Path

import torch

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
STUDENT_SYSTEM = "You are a helpful assistant."  # Qwen2.5's default system prompt
TEACHER_SYSTEM = "Please reason step by step, and put your final answer in a box."  # as Qwen2.5-Math-Instruct: another default

# Qwen2.5's ChatML template without the tool branches
CHATML = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nSYSTEM<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message['role'] != 'system' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tokenizer(eos: str, system: str):
    """A Qwen2Tokenizer over the 256 byte symbols plus <|endoftext|>, <|im_start|>, <|im_end|> (ids 256-258
    in both tokenizers of a pair), eos ``eos``, pad <|endoftext|>, the ChatML template with ``system`` as
    the default system prompt."""
    from tokenizers import AddedToken, pre_tokenizers
    from transformers import Qwen2Tokenizer

    symbols = [*sorted(pre_tokenizers.ByteLevel.alphabet()), ENDOFTEXT, IM_START, IM_END]  # the ids fixed here
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token=eos, pad_token=ENDOFTEXT, unk_token=None)
    tokenizer.add_tokens([AddedToken(t, special=True) for t in (ENDOFTEXT, IM_START, IM_END)], special_tokens=True)
    tokenizer.chat_template = CHATML.replace("SYSTEM", system)
    assert [tokenizer.convert_tokens_to_ids(t) for t in (ENDOFTEXT, IM_START, IM_END)] == [256, 257, 258]
    return tokenizer


def build_model(tokenizer, seed: int, eos_ids, *, hidden_size: int = 64, layers: int = 2):
    """A random Qwen2ForCausalLM (head size 32, untied head) whose generation config's eos is ``eos_ids``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=2 * hidden_size,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config.eos_token_id = eos_ids
    return model


@torch.no_grad()
def end_turns(model, end_id: int, scale: float, suppress=()) -> None:
    """Raise ``end_id``'s logit by ``scale`` / rms(residual) at every position and lower ``suppress``'s by 20x
    that (see the module docstring); the model then ends a sample after a few random tokens."""
    model.model.embed_tokens.weight[:, 0] = 1.0
    for layer in model.model.layers:  # no layer writes dimension 0: it stays 1 in the residual stream
        layer.self_attn.o_proj.weight[0, :] = 0.0
        layer.mlp.down_proj.weight[0, :] = 0.0
    model.lm_head.weight[:, 0] = 0.0
    model.lm_head.weight[end_id, 0] = scale
    for token in suppress:
        model.lm_head.weight[token, 0] = -20 * scale


def save(model, tokenizer, folder: Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_pair(root: Path, *, seed: int = 0, scale: float = 0.5, prime_student: bool = True) -> tuple[Path, Path]:
    """``(student_dir, teacher_dir)`` under ``root``: the student as Qwen2.5-1.5B (eos <|endoftext|>, generation
    config eos <|endoftext|>), the teacher as Qwen2.5-Math-7B-Instruct (eos <|im_end|>, generation config eos
    [<|im_end|>, <|endoftext|>]). The teacher ends its answers with <|im_end|>; with ``prime_student`` so
    does the student (as a student distilled from that teacher would), never emitting <|endoftext|>."""
    student_tok = build_tokenizer(ENDOFTEXT, STUDENT_SYSTEM)
    teacher_tok = build_tokenizer(IM_END, TEACHER_SYSTEM)
    im_end, endoftext = teacher_tok.convert_tokens_to_ids(IM_END), teacher_tok.convert_tokens_to_ids(ENDOFTEXT)
    teacher = build_model(teacher_tok, seed + 1, [im_end, endoftext])
    end_turns(teacher, im_end, scale)
    student = build_model(student_tok, seed, endoftext)
    if prime_student:
        end_turns(student, im_end, scale, suppress=[endoftext])
    return save(student, student_tok, Path(root) / "student"), save(teacher, teacher_tok, Path(root) / "teacher")
