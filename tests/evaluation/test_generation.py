"""Generation backends return the log-prob of each sampled token under the distribution sampled from."""

import pytest
import torch

from dcod.config import StudentConfig
from dcod.generation import HFBackend, SamplingParams, process_logits
from dcod.models import build_tiny_llama

TINY = StudentConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
PROMPTS = ["Q:47+38*6\nA:", "Q:rev 123\nA:", "Q:12-5\nA:"]
# KV-cached, left-padded, batched decoding vs one unpadded full forward: the same float32 model in
# differently shaped computations (one-token steps against a cache, padded rows, other GEMM and attention
# blockings). Log-probs here are >= -4 and the model sums <= 64 terms per contraction over 2 layers, so
# rounding moves them by ~1e-6 at most (measured <= 4.8e-7 on three CPU kernel paths). A real decoding bug
# is far larger: a row attending to its left pads moves its log-probs by 5e-3 to 1e-2 (measured), a stale
# or misaligned cache by O(1).
LOGPROB_ATOL = 1e-4


@pytest.fixture(scope="module")
def backend(toy_tokenizer):
    model = build_tiny_llama(TINY, toy_tokenizer, seed=0).eval()
    return HFBackend(model, toy_tokenizer, batch_size=2)


def _reference_logprobs(model, prompt, completion, temperature, top_p):
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1]
    lp = process_logits(logits, temperature, top_p)
    return lp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9)])
def test_logprobs_match_a_full_forward_pass(backend, toy_tokenizer, temperature, top_p):
    """KV-cached, left-padded batched decoding equals an unpadded full forward on the same tokens."""
    prompts = [toy_tokenizer(p)["input_ids"] for p in PROMPTS]
    params = SamplingParams(max_new_tokens=12, temperature=temperature, top_p=top_p, n=2, seed=5)
    for g in backend.generate(prompts, params):
        reference = _reference_logprobs(backend.model, g.prompt_ids, g.token_ids, temperature, top_p)
        assert torch.allclose(torch.tensor(g.logprobs), reference, rtol=0, atol=LOGPROB_ATOL), g
        assert len(g.logprobs) == len(g.token_ids) <= 12


def test_sampling_is_seeded_and_greedy_is_deterministic(backend, toy_tokenizer):
    prompts = [toy_tokenizer(p)["input_ids"] for p in PROMPTS]
    sample = lambda seed, t: [g.token_ids for g in backend.generate(prompts, SamplingParams(
        max_new_tokens=10, temperature=t, seed=seed))]
    assert sample(1, 1.0) == sample(1, 1.0)
    assert sample(1, 1.0) != sample(2, 1.0)
    assert sample(1, 0.0) == sample(2, 0.0)


def test_topk_logprobs_are_the_top_of_the_sampled_distribution(backend, toy_tokenizer):
    prompts = [toy_tokenizer(PROMPTS[0])["input_ids"]]
    (g,) = backend.generate(prompts, SamplingParams(max_new_tokens=6, top_k_logprobs=3, seed=0))
    for t, token in enumerate(g.token_ids):
        assert len(g.topk_ids[t]) == 3
        assert g.topk_logprobs[t] == sorted(g.topk_logprobs[t], reverse=True)
        # exact: the log-prob and the top-k are read from the same float32 step_logprobs tensor
        if token in g.topk_ids[t]:
            assert g.topk_logprobs[t][g.topk_ids[t].index(token)] == g.logprobs[t]
        else:
            assert g.logprobs[t] <= g.topk_logprobs[t][-1]


def test_bad_sampling_params_are_refused():
    for kwargs in ({"temperature": -1}, {"top_p": 0}, {"n": 0}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingParams(**kwargs)


def test_a_prompt_longer_than_the_context_is_refused_by_name(backend, toy_tokenizer):
    context = backend.model.config.max_position_embeddings
    prompts = [toy_tokenizer("Q:1+1\nA:")["input_ids"], [toy_tokenizer.bos_token_id] + [9] * context]
    with pytest.raises(ValueError, match="prompt 1 has .* tokens, the model's context is"):
        backend.generate(prompts, SamplingParams(max_new_tokens=4))


def test_evaluation_counts_prompts_that_do_not_fit(backend, toy_tokenizer, monkeypatch):
    from dcod import evaluation

    monkeypatch.setattr(evaluation.grading, "grade", lambda golds, preds, **kw: [
        type("R", (), {"correct": False, "status": "ok", "extracted": None})() for _ in golds])
    context = backend.model.config.max_position_embeddings
    records = [{"id": "a", "split": "id", "question": "Q:1+1\nA:", "gold": "2"},
               {"id": "b", "split": "id", "question": "Q:" + "1+" * context + "1\nA:", "gold": "9"}]
    rows = evaluation.evaluate_records(backend, toy_tokenizer, records, max_new_tokens=4)
    assert [r["status"] for r in rows] == ["ok", "prompt_too_long"]
    assert evaluation.summarise(rows).loc[0, "prompt_too_long_count"] == 1


class _EosBoost(torch.nn.Module):
    """The tiny model with +2 on the eos logit, so that rows of a batch finish at different steps."""

    def __init__(self, inner, eos):
        super().__init__()
        self.inner, self.eos, self.config = inner, eos, inner.config

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits[..., self.eos] += 2.0
        return out


def test_rows_that_finish_early_leave_the_batch_without_changing_the_others(toy_tokenizer):
    """Finished rows are dropped from the batch and its cache (compaction): every row still equals
    an unpadded full forward, and greedy decoding equals decoding one prompt at a time."""
    model = _EosBoost(build_tiny_llama(TINY, toy_tokenizer, seed=0).eval(), toy_tokenizer.eos_token_id)
    prompts = [toy_tokenizer(p)["input_ids"] for p in PROMPTS + ["Q:5*9+1\nA:", "Q:rev 98765\nA:"]]
    params = SamplingParams(max_new_tokens=30, temperature=1.0, n=4, seed=3)
    generations = HFBackend(model, toy_tokenizer, batch_size=20).generate(prompts, params)
    lengths = {len(g.token_ids) for g in generations if g.finish_reason == "stop"}
    assert len(lengths) >= 4, lengths  # the batch really shrank several times
    for g in generations:
        reference = _reference_logprobs(model, g.prompt_ids, g.token_ids, 1.0, 1.0)
        assert torch.allclose(torch.tensor(g.logprobs), reference, rtol=0, atol=LOGPROB_ATOL), g
        assert (g.finish_reason == "stop") == (g.token_ids[-1] == toy_tokenizer.eos_token_id)
    greedy = SamplingParams(max_new_tokens=30, temperature=0)
    batched = HFBackend(model, toy_tokenizer, batch_size=20).generate(prompts, greedy)
    single = HFBackend(model, toy_tokenizer, batch_size=1).generate(prompts, greedy)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.prompt_index for g in batched] == list(range(len(prompts)))
