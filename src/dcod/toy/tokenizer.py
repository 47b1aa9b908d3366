"""Character-level tokenizer of the toy world, saved as a ``PreTrainedTokenizerFast``.

Why a real HF tokenizer for a toy: the toy models must load through exactly the same code as the
real ones (``AutoTokenizer.from_pretrained``, HF ``generate``, vLLM), so the tokenizer is built with
the ``tokenizers`` library and saved in the standard ``tokenizer.json`` format.

Design:
- one token per character (WordLevel model over single characters, a pre-tokenizer that isolates
  every character, newline and space included);
- ids are fixed: ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3, then the world's characters in
  sorted (code point) order, so a vocabulary is identical on every machine and every run;
- encoding prepends ``<bos>`` (TemplateProcessing), never appends ``<eos>``: the training code adds
  eos after the completion itself;
- the decoder is ``Fuse`` (plain concatenation) and ``clean_up_tokenization_spaces`` is off, so
  ``decode(encode(text), skip_special_tokens=True) == text`` exactly (the default decoder would join
  the characters with spaces);
- characters outside the vocabulary map to ``<unk>``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# Everything the world writes: digits, operators, the prompt/answer scaffolding `Q:`, `A:`,
# `rev `, `\boxed{...}`, the newline between question and answer, and the step separator `;`.
WORLD_CHARS = "".join(sorted(set("0123456789+-*=;:{}\\\n QArevboxed")))
VOCAB: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
VOCAB.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(WORLD_CHARS)})
VOCAB_SIZE = len(VOCAB)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character tokenizer (deterministic: same ids on every call)."""
    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token=UNK))
    # `[\s\S]` rather than `.`: the regex dot does not match the newline.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, BOS_ID)]
    )
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        padding_side="right",
        model_max_length=4096,
    )
    _check(fast)
    return fast


def save_tokenizer(out_dir: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Save the tokenizer to ``out_dir`` (loadable with ``AutoTokenizer.from_pretrained``)."""
    tok = build_tokenizer()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return tok


def _check(tok: PreTrainedTokenizerFast) -> None:
    """Fail loudly if a library upgrade changed the ids or the exact round trip."""
    sample = "Q:47+38*6-91\nA:47+38=47+30+8=77+8=85;\\boxed{85}"
    ids = tok(sample)["input_ids"]
    if ids[0] != BOS_ID or len(ids) != len(sample) + 1 or tok.eos_token_id != EOS_ID:
        raise RuntimeError(f"toy tokenizer built wrong ids: {ids[:8]}...")
    if tok.decode(ids, skip_special_tokens=True) != sample:
        raise RuntimeError("toy tokenizer does not round-trip text exactly")
