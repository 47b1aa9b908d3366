"""The per-process memory estimate (dcod.memory) on hand-computed cases, the refusal before loading, the
teacher cast before it moves, and DeepSpeed + accumulation + a weighted loss refused (dcod.launch)."""

from __future__ import annotations

import json

import pytest
import torch

from dcod import memory
from dcod.config import TrainConfig
from dcod.launch import check_launch

# Qwen2.5-1.5B and Qwen2.5-Math-7B-Instruct as their config.json files state them
QWEN_1_5B = {"model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "intermediate_size": 8960,
             "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}
QWEN_MATH_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "intermediate_size": 18944,
                "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                "tie_word_embeddings": False}


def test_parameter_counts_by_hand():
    # per layer: q,o 2 x 1536^2 = 4,718,592; k,v 2 x 1536 x 256 = 786,432; biases 1536 + 512 = 2,048;
    # MLP 3 x 1536 x 8960 = 41,287,680; norms 3,072 -> 46,797,824 x 28 = 1,310,339,072;
    # embeddings 151,936 x 1536 = 233,373,696 (tied head); final norm 1,536
    student = memory.shape_from_config(QWEN_1_5B)
    assert student.params == 1_543_714_304 and student.kv_width == 256
    # per layer 233,057,792 x 28 = 6,525,618,176; embeddings + untied head 2 x 152,064 x 3584 = 1,089,994,752
    assert memory.shape_from_config(QWEN_MATH_7B).params == 7_615_616_512


def test_a_tiny_model_by_hand():
    tiny = memory.Shape(params=1000, hidden=8, layers=2, intermediate=16, kv_width=4, vocab=10)
    est = memory.train_estimate(tiny, micro_batch=2, seq_len=5, bf16=True)
    per_layer = 16 * 8 + 4 * 4 + 8 * 16  # 272 bytes per token and layer
    assert est.parts == {"student (16 B/param)": 16_000, "activations": 10 * 2 * per_layer,
                         "logits": 3 * 4 * 10 * 10, "overhead": memory.OVERHEAD_BYTES}
    # checkpointing keeps each layer's fp32 input (4h) and recomputes one layer at a time
    ckpt = memory.train_estimate(tiny, micro_batch=2, seq_len=5, checkpointing=True)
    assert ckpt.parts["activations"] == 10 * (2 * 4 * 8 + per_layer)
    # full sharding over 4 processes divides all 16 bytes; ZeRO-2 leaves the 4 of the weights whole
    assert memory.train_estimate(tiny, micro_batch=2, seq_len=5, processes=4, sharding="full").parts[
        "student (16 B/param)"] == 4_000
    assert memory.train_estimate(tiny, micro_batch=2, seq_len=5, processes=4, sharding="grads_and_optimizer").parts[
        "student (16 B/param)"] == 4 * 1000 + 3_000
    # a bf16 teacher, a reference, the engine, the teacher distributions of 3 micro-batches + 5 working copies
    teacher = memory.Shape(params=5000, hidden=8, layers=2, intermediate=16, kv_width=4, vocab=10)
    full = memory.train_estimate(tiny, micro_batch=2, seq_len=5, accumulation=3, teacher=teacher, reference=True,
                                 engine_bytes=123.0, logits_chunk_tokens=4)
    assert full.parts["teacher"] == 10_000 and full.parts["reference"] == 2_000 and full.parts["vLLM engine"] == 123
    assert full.parts["teacher distributions"] == 4 * 10 * (10 * 3 + 5 * 10)
    assert full.parts["logits"] == 3 * 4 * 10 * 4  # a chunk of 4 of the 10 tokens
    assert full.total == sum(full.parts.values())


def test_the_paper_on_policy_job_by_hand():
    """On-policy KD in the paper profile: one process, 1.5B trained, 7B teacher in bf16, engine at 30% of an
    80 GB device, micro-batch 4 of (2,048 + 1,024) tokens, 16 micro-batches per step, checkpointing on."""
    student, teacher = memory.shape_from_config(QWEN_1_5B), memory.shape_from_config(QWEN_MATH_7B)
    est = memory.train_estimate(student, micro_batch=4, seq_len=3072, accumulation=16, checkpointing=True,
                                logits_chunk_tokens=1024, teacher=teacher, engine_bytes=0.3 * 80e9)
    assert est.parts["student (16 B/param)"] == pytest.approx(24.70e9, rel=1e-3)
    assert est.parts["teacher"] == pytest.approx(15.23e9, rel=1e-3)
    # 12,288 tokens x (28 x 4 x 1536 + 16 x 1536 + 4 x 256 + 8 x 8960 = 269,312 B) = 3.31 GB
    assert est.parts["activations"] == 12_288 * 269_312
    # the teacher's log-probs of all 16 x 12,288 tokens are alive at once: 12,288 x 21 x 151,936 x 4 = 156.8 GB
    assert est.parts["teacher distributions"] == 4 * 151_936 * 12_288 * 21
    with pytest.raises(memory.DoesNotFitError, match=r"(?s)teacher distributions.*total"):
        memory.check_fits(est, 80e9, "train onpolicy_kd")


def test_refusal_names_the_arithmetic_and_passes_when_it_fits():
    tiny = memory.Shape(params=10**9, hidden=8, layers=2, intermediate=16, kv_width=4, vocab=10)
    est = memory.train_estimate(tiny, micro_batch=1, seq_len=1)
    with pytest.raises(memory.DoesNotFitError) as error:
        memory.check_fits(est, 10e9, "train sft")
    message = str(error.value)
    assert "train sft: estimated 18.0 GB" in message and "10.0 GB free" in message
    assert "student (16 B/param)" in message and "16.00 GB" in message and "train.micro_batch_size" in message
    memory.check_fits(est, 19e9, "train sft")  # fits: no error


def test_train_stage_refuses_before_loading_on_a_small_device(tmp_path, monkeypatch):
    """check_train_memory on a fake 1 GB GPU: it raises before any weights are read (the folder holds only
    a config.json), naming the estimate."""
    from dcod import pipeline
    from dcod.config import load_profile
    from dcod.methods import Needs

    (tmp_path / "config.json").write_text(json.dumps(QWEN_1_5B))
    profile = load_profile("config/profiles/paper.yaml")
    cfg = TrainConfig(batch_size=64, micro_batch_size=4, mixed_precision="bf16", gradient_checkpointing=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1e9, 80e9))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(memory.DoesNotFitError, match=r"train sft: estimated .* GB per process, the device has 1.0 GB"):
        pipeline.check_train_memory(profile, cfg, Needs(), tmp_path, name="sft")
    # under FSDP on 8 GPUs the student's 16 B/param are sharded: 24.7 GB / 8
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (80e9, 80e9))
    pipeline.check_train_memory(profile, TrainConfig(batch_size=64, micro_batch_size=4, mixed_precision="bf16",
                                                     gradient_checkpointing=True), Needs(), tmp_path, name="sft")


def test_on_cpu_it_only_prints(tmp_path, monkeypatch, capsys):
    from dcod import pipeline
    from dcod.config import load_profile
    from dcod.methods import Needs

    (tmp_path / "config.json").write_text(json.dumps(QWEN_1_5B))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pipeline.check_train_memory(load_profile("config/profiles/paper.yaml"), TrainConfig(batch_size=64), Needs(),
                                tmp_path, name="sft")
    assert "memory estimate of sft" in capsys.readouterr().out


def test_a_method_reading_the_whole_distribution_is_estimated_with_the_full_logits(tmp_path, monkeypatch, capsys):
    """asft and onpolicy_kd cannot read the LM head in chunks: on the paper profile (Qwen's 151,936-token
    vocabulary) their logits line is the whole micro-batch's, not one chunk's."""
    from dcod import pipeline
    from dcod.config import load_profile
    from dcod.methods import Needs, get_method

    (tmp_path / "config.json").write_text(json.dumps(QWEN_1_5B))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    profile, cfg = load_profile("config/profiles/paper.yaml"), TrainConfig(batch_size=64, micro_batch_size=4)
    logits = {}
    for name in ("sft", "asft", "onpolicy_kd"):
        pipeline.check_train_memory(profile, cfg, Needs(), tmp_path, name=name,
                                    chunked_logits=get_method(name).chunked_logits)
        line = next(row for row in capsys.readouterr().out.splitlines() if row.strip().startswith("logits"))
        logits[name] = float(line.split()[1])
    tokens = 4 * (profile.traces.max_new_tokens + memory.PROMPT_ALLOWANCE)
    assert logits["sft"] == pytest.approx(3 * 4 * 151936 * cfg.logits_chunk_tokens / memory.GB, abs=0.01)
    assert logits["asft"] == logits["onpolicy_kd"] == pytest.approx(3 * 4 * 151936 * tokens / memory.GB, abs=0.01)


def test_teacher_is_cast_before_it_moves(monkeypatch):
    """frozen_on_device casts to bf16 on the host, then moves: the device never holds the fp32 copy."""
    from dcod import backends

    seen = []
    monkeypatch.setattr(backends, "on_device", lambda model: seen.append(next(model.parameters()).dtype) or model)
    model = torch.nn.Linear(4, 4)
    out = backends.frozen_on_device(model, TrainConfig(mixed_precision="bf16"))
    assert seen == [torch.bfloat16] and next(out.parameters()).dtype == torch.bfloat16 and not out.training
    seen.clear()
    backends.frozen_on_device(torch.nn.Linear(4, 4), TrainConfig(mixed_precision="no"))
    assert seen == [torch.float32]


@pytest.mark.parametrize("micro,refused", [(4, True), (8, False)])
def test_deepspeed_accumulation_with_a_weighted_loss_is_refused(micro, refused):
    config = "config/accelerate/deepspeed_zero2.yaml"  # 8 processes
    cfg = TrainConfig(batch_size=64, micro_batch_size=micro)
    if refused:  # 64 / (4 x 8) = 2 micro-batches per step
        with pytest.raises(ValueError, match=r"(?s)experiments/dcod/config.yaml.*deepspeed_zero2.yaml.*"
                                             r"train.micro_batch_size=4 x num_processes=8\) = 2.*"
                                             r"train.micro_batch_size=8"):
            check_launch(cfg, True, config, where="experiments/dcod/config.yaml")
    else:
        check_launch(cfg, True, config, where="experiments/dcod/config.yaml")
    check_launch(cfg, False, config, where="experiments/sft/config.yaml")  # unweighted: DeepSpeed's sum is right
    check_launch(cfg, True, "config/accelerate/fsdp.yaml", where="x")  # FSDP: the trainer's own accumulation


def test_a_dry_run_with_deepspeed_accumulation_fails(tmp_path):
    """The DAG plans with the same check: a paper-profile copy on DeepSpeed ZeRO-2 with micro-batch 4 stops
    the dry run, naming the experiment."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    profile = repo / "config" / "profiles" / "paper_ds_test.yaml"
    text = (repo / "config" / "profiles" / "paper.yaml").read_text()
    profile.write_text(text.replace("accelerate_config: config/accelerate/fsdp.yaml",
                                    "accelerate_config: config/accelerate/deepspeed_zero2.yaml"))
    try:
        result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n", "--directory",
                                 str(tmp_path), "--cores", "1", "--config", "profile=paper_ds_test"],
                                cwd=repo, capture_output=True, text=True, timeout=300)
    finally:
        profile.unlink()
    assert result.returncode != 0
    assert "with gradient accumulation" in result.stdout + result.stderr
    assert "train.micro_batch_size=8" in result.stdout + result.stderr
