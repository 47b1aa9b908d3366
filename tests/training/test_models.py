"""Teacher/student vocabulary checks: one tokenizer, logits sliced to it when lm-heads are padded."""

import pytest
import torch

from dcod.models import teacher_full_logprobs
from dcod.models import check_same_tokenizer, shared_vocab_logits


def test_padded_lm_head_is_sliced_to_the_tokenizer():
    logits = torch.randn(2, 3, 40)
    assert shared_vocab_logits(logits, 34).shape == (2, 3, 34)
    with pytest.raises(ValueError, match="40 output logits but the tokenizer has 50"):
        shared_vocab_logits(logits, 50)


def test_different_tokenizers_are_refused(toy_tokenizer):
    from transformers import PreTrainedTokenizerFast

    other = PreTrainedTokenizerFast(tokenizer_object=toy_tokenizer.backend_tokenizer)
    other.add_tokens(["<extra>"])
    check_same_tokenizer(toy_tokenizer, toy_tokenizer)
    with pytest.raises(ValueError, match="tokenizers differ"):
        check_same_tokenizer(other, toy_tokenizer)


def test_hf_teacher_distributions_cover_the_shared_vocabulary_only():
    class PaddedTeacher(torch.nn.Module):  # an lm-head 6 logits wider than the tokenizer
        def forward(self, input_ids):
            return type("Out", (), {"logits": torch.randn(*input_ids.shape, 40)})()

    batch = {"input_ids": torch.randint(0, 34, (2, 5))}
    full = teacher_full_logprobs(PaddedTeacher(), [], batch, vocab_size=34)
    assert full.shape == (2, 4, 34)
    # float32 log-softmax over V = 34, exp, sum: <= V eps = 4e-6 relative, inside allclose's rtol 1e-5
    assert torch.allclose(full.exp().sum(-1), torch.ones(2, 4))
