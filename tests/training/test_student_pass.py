"""The offline student passes (dcod.student_pass, docs/architecture.md "Offline student passes"): the two
stages on the toy world, their cost summaries, resuming, and the train stage's checks of what it is given."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from dcod.data import collate
from dcod.methods import Needs
from dcod.models import build_tiny_llama
from dcod.pipeline import _check_passes, stage_score_traces, stage_student_traces
from dcod.student_pass import load_student_traces, load_trace_scores, pass_cost, training_prompts
from dcod.toy.teacher import ToyTeacher

from tiny_training import TINY, traces  # noqa: F401  (the module's toy traces fixture)


@pytest.fixture()
def setup(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """A world folder (tokenizer), a tiny base student and a traces parquet of 12 traces over 6 questions."""
    world, base = tmp_path / "world", tmp_path / "base"
    toy_tokenizer.save_pretrained(world / "tokenizer")
    model = build_tiny_llama(TINY, toy_tokenizer, seed=0)
    model.save_pretrained(base)
    toy_tokenizer.save_pretrained(base)
    rows = []
    for index, trace in enumerate(traces[:12]):
        rows.append({"id": f"q{index // 2}", "question": f"q{index // 2}", "gold": "0",
                     "prompt_ids": trace["prompt_ids"], "completion_ids": trace["completion_ids"],
                     "teacher_logprobs": list(trace["teacher_logprobs"]), "topk_ids": trace["topk_ids"],
                     "topk_logprobs": trace["topk_logprobs"]})
    path = tmp_path / "traces" / "train.parquet"
    path.parent.mkdir()
    pd.DataFrame(rows).to_parquet(path)
    return world, base, path, model


@pytest.fixture()
def keep_prompts(monkeypatch):
    """The toy questions of the fixture are placeholders: keep the stored prompt ids (no re-encoding)."""
    monkeypatch.setattr("dcod.pipeline.use_student_prompts", lambda examples, tokenizer: 0)
    monkeypatch.setattr("dcod.student_pass.use_student_prompts", lambda examples, tokenizer: 0)


def test_score_traces_writes_the_students_nll_and_rank_per_token(ci_profile, setup, tmp_path, keep_prompts):
    world, base, traces_path, model = setup
    out = tmp_path / "trace_scores" / "seed0" / "train.parquet"
    stage_score_traces(ci_profile, base, traces_path, out)
    traces = pd.read_parquet(traces_path).to_dict("records")
    scores = pd.read_parquet(out).to_dict("records")
    assert len(scores) == len(traces)
    for trace, score in zip(traces[:3], scores):
        batch = collate([{"prompt_ids": list(trace["prompt_ids"]), "completion_ids": list(trace["completion_ids"])}],
                        0)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
        mask = batch["loss_mask"][0]
        targets = batch["targets"][0][mask]
        logp = logits[mask].log_softmax(-1)
        expected_nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
        expected_rank = 1 + (logits[mask] > logits[mask].gather(-1, targets[:, None])).sum(-1)
        np.testing.assert_allclose(score["nll"], expected_nll.numpy(), rtol=1e-4, atol=1e-5)
        assert list(score["rank"]) == expected_rank.tolist()
    summary = json.loads(out.with_suffix(".json").read_text())
    tokens = sum(len(t["prompt_ids"]) + len(t["completion_ids"]) for t in traces)
    assert pass_cost(out.with_suffix(".json")) == {"tokens_generated": 0, "student_forward_tokens": tokens,
                                                   "teacher_forward_tokens": 0, "seconds": summary["seconds"]}
    assert summary["seconds"] > 0 and not (out.parent / ".train.shards").exists()
    examples = [{"completion_ids": list(t["completion_ids"])} for t in traces]
    assert len(load_trace_scores(out, examples)) == len(traces)


def test_student_traces_sample_each_prompt_once_scored_by_the_exact_teacher(ci_profile, setup, tmp_path,
                                                                            toy_tokenizer, keep_prompts):
    world, base, traces_path, _ = setup
    out = tmp_path / "student_traces" / "seed1" / "train.parquet"
    stage_student_traces(ci_profile, world, base, traces_path, 1, out)
    rows = pd.read_parquet(out).to_dict("records")
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(6)]  # one per question, in order
    teacher = ToyTeacher(toy_tokenizer, p_direct=ci_profile.teacher.p_direct, floor=ci_profile.teacher.floor)
    k = ci_profile.traces.top_k_logprobs
    for row in rows:
        assert 1 <= len(row["completion_ids"]) <= ci_profile.traces.max_new_tokens
        exact = teacher.next_token_logprobs(list(row["prompt_ids"]), list(row["completion_ids"]))[:-1]
        expected = exact.gather(-1, torch.tensor(list(row["completion_ids"]))[:, None]).squeeze(-1)
        np.testing.assert_array_equal(np.asarray(row["teacher_logprobs"], dtype=np.float32), expected.numpy())
        assert all(len(ids) == k for ids in row["topk_ids"])
        np.testing.assert_array_equal(np.stack(row["topk_logprobs"]).astype(np.float32),
                                      exact.topk(k, dim=-1).values.numpy())
    summary = json.loads(out.with_suffix(".json").read_text())
    generated = sum(len(r["completion_ids"]) for r in rows)
    assert summary["tokens_generated"] == generated and summary["prompts"] == 6
    assert summary["teacher_forward_tokens"] == generated + sum(len(r["prompt_ids"]) for r in rows)
    assert summary["temperature"] == 0.8 and summary["top_p"] == 0.95  # DistiLLM-2's generation defaults
    assert len(load_student_traces(out, toy_tokenizer)) == 6
    # the same seed draws the same traces (a resumed or rerun job); another seed other ones
    again, other = tmp_path / "again" / "train.parquet", tmp_path / "other" / "train.parquet"
    stage_student_traces(ci_profile, world, base, traces_path, 1, again)
    stage_student_traces(ci_profile, world, base, traces_path, 2, other)
    completions = lambda path: [list(r) for r in pd.read_parquet(path)["completion_ids"]]  # noqa: E731
    assert completions(again) == completions(out) and completions(other) != completions(out)


def test_a_pass_resumes_from_its_finished_shards(ci_profile, setup, tmp_path, keep_prompts, monkeypatch):
    world, base, traces_path, _ = setup
    profile = ci_profile.model_copy(update={"traces": ci_profile.traces.model_copy(update={"shard_size": 5})})
    out = tmp_path / "scores" / "train.parquet"
    from dcod import student_pass

    calls = []
    real = student_pass.student_scores

    def failing(model, records, pad_id, *args):
        calls.append(len(records))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed in the second shard
        return real(model, records, pad_id, *args)

    monkeypatch.setattr(student_pass, "student_scores", failing)
    with pytest.raises(KeyboardInterrupt):
        stage_score_traces(profile, base, traces_path, out)
    assert (out.parent / ".train.shards" / "part-00000.jsonl").is_file() and not out.exists()
    stage_score_traces(profile, base, traces_path, out)
    assert calls == [5, 5, 5, 2]  # shard 0 was not recomputed
    assert len(pd.read_parquet(out)) == 12


def test_the_train_stage_checks_the_passes_it_is_given(tmp_path):
    here = tmp_path / "x.parquet"
    here.write_text("")
    with pytest.raises(ValueError, match="needs the trace_scores pass.*--trace-scores"):
        _check_passes(Needs(trace_scores=True), {}, "experiments/x/config.yaml")
    with pytest.raises(ValueError, match="--student-traces given, but its method does not declare"):
        _check_passes(Needs(), {"student_traces": here}, "experiments/x/config.yaml")
    with pytest.raises(FileNotFoundError, match="--student-traces: .*missing.parquet does not exist"):
        _check_passes(Needs(student_traces=True), {"student_traces": tmp_path / "missing.parquet"}, "x")
    assert _check_passes(Needs(student_traces=True), {"student_traces": str(here), "trace_scores": None}, "x") \
        == {"student_traces": here}


def test_training_prompts_are_the_distinct_questions_in_order():
    traces = [{"question": q, "id": q, "gold": "1", "prompt_ids": [i]} for i, q in enumerate("abacb")]
    assert [p["question"] for p in training_prompts(traces)] == ["a", "b", "c"]
    assert [p["prompt_ids"] for p in training_prompts(traces)] == [[0], [1], [3]]


def test_score_batches_bound_the_logits_of_one_forward():
    from dcod.student_pass import score_batches

    examples = [{"prompt_ids": [0] * 2, "completion_ids": [0] * n} for n in (3, 3, 8, 1, 1)]  # widths 5 5 10 3 3
    groups = [[len(e["completion_ids"]) for e in group] for group in score_batches(examples, 10, elements=100)]
    assert groups == [[3, 3], [8], [1, 1]]  # 2·5·10 = 100 fits; 2·10·10 does not; 10·10 alone
    assert [len(g) for g in score_batches(examples, 1000, elements=10)] == [1] * 5  # one row at least
