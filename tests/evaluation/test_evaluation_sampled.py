"""avg@k evaluation (sampled completions per problem) with its standard error, and pass@1's."""

import dataclasses
import math

import pandas as pd
import pytest

from dcod import benchmarks, evaluation
from dcod.config import StudentConfig, load_profile
from dcod.generation import HFBackend
from dcod.models import build_tiny_llama

from conftest import REPO, SHARED_DATA

TINY = StudentConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64, max_position_embeddings=1024)


def test_avg_at_k_rows_and_standard_error(toy_tokenizer):
    model = build_tiny_llama(TINY, toy_tokenizer, seed=0).eval()
    backend = HFBackend(model, toy_tokenizer, batch_size=16)
    records = [{"id": f"p{i}", "split": "s", "question": f"Q:{i}+1\nA:", "gold": str(i + 1)} for i in range(4)]
    records.append({"id": "long", "split": "s", "question": "Q:" + "1+" * 600 + "1\nA:", "gold": "601"})
    rows = evaluation.sampled_rows(backend, toy_tokenizer, records, k=3, temperature=1.0, top_p=1.0,
                                   max_new_tokens=8, seed=0)
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "long"]
    assert [r["samples"] for r in rows] == [3, 3, 3, 3, 0]  # the prompt beyond the context is not generated
    rows = [{**r, "sample_accuracy": a} for r, a in zip(rows, [1.0, 2 / 3, 0.0, 1 / 3, 0.0])]
    summary = evaluation.summarise_sampled(rows).set_index("split").loc["s"]
    values = pd.Series([1.0, 2 / 3, 0.0, 1 / 3, 0.0])
    assert summary["avg_at_k"] == pytest.approx(values.mean())
    assert summary["avg_at_k_stderr"] == pytest.approx(values.std(ddof=1) / math.sqrt(5))
    assert summary["avg_at_k_samples"] == 3
    greedy = evaluation.summarise([{"split": "s", "correct": c, "status": "ok", "finish_reason": "stop",
                                    "num_tokens": 1} for c in (True, False, False, True)])
    assert greedy.loc[0, "accuracy_stderr"] == pytest.approx(pd.Series([1.0, 0, 0, 1]).std(ddof=1) / 2)


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"no offline benchmark copies at {SHARED_DATA}")
def test_stage_evaluate_adds_avg_at_k_for_benchmarks_that_declare_it(tmp_path, monkeypatch, toy_tokenizer):
    from dcod.pipeline import stage_evaluate, stage_world

    monkeypatch.setenv("DCOD_DATA_DIR", str(SHARED_DATA))
    profile = load_profile(REPO / "config" / "profiles" / "smol.yaml")
    profile.data.eval, profile.data.eval_limit, profile.eval.splits = ["aime24", "gsm8k"], 2, ["aime24", "gsm8k"]
    profile.eval.max_new_tokens = 6
    stage_world(profile, tmp_path / "world")
    declared = benchmarks.get_benchmark

    def small_k(name):  # AIME's avg@64, cut to avg@2 for the test
        benchmark = declared(name)
        if benchmark.generation and benchmark.generation.sampled:
            sampled = dataclasses.replace(benchmark.generation.sampled, k=2)
            benchmark = dataclasses.replace(benchmark, generation=dataclasses.replace(benchmark.generation,
                                                                                       sampled=sampled))
        return benchmark

    monkeypatch.setattr(benchmarks, "get_benchmark", small_k)
    model = build_tiny_llama(TINY, toy_tokenizer, seed=0)
    model.save_pretrained(tmp_path / "model")
    toy_tokenizer.save_pretrained(tmp_path / "model")
    stage_evaluate(profile, tmp_path / "world", str(tmp_path / "model"), tmp_path / "eval")
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv").set_index("split")
    assert metrics.loc["aime24", "avg_at_k_samples"] == 2 and 0 <= metrics.loc["aime24", "avg_at_k"] <= 1
    assert math.isnan(metrics.loc["gsm8k", "avg_at_k"])  # GSM8K declares greedy pass@1 only
    assert len(pd.read_csv(tmp_path / "eval" / "sampled.csv")) == 2
    assert not list((tmp_path / "eval").glob(".shards-*"))
