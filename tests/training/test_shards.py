"""Interrupted trace generation and evaluation resume from their finished shards, with the same result."""

import json
from pathlib import Path

import pandas as pd
import pytest

from dcod import pipeline
from dcod.config import load_profile
from dcod.models import build_tiny_llama
from dcod.shards import run_sharded
from dcod.toy.teacher import ToyTeacher

from conftest import REPO


class Interrupt(Exception):
    pass


def test_run_sharded_keeps_finished_shards_and_discards_foreign_ones(tmp_path):
    calls, died = [], []

    def work(index, items):
        calls.append(index)
        if index == 2 and not died:
            died.append(index)
            raise Interrupt  # the first pass dies in shard 2
        return [{"x": item, "shard": index} for item in items]

    items = list(range(10))
    with pytest.raises(Interrupt):
        run_sharded(tmp_path / "s", {"a": 1}, items, 3, work, progress=False)
    assert calls == [0, 1, 2] and sorted(p.name for p in (tmp_path / "s").glob("part-*")) == [
        "part-00000.jsonl", "part-00001.jsonl"]
    rows = run_sharded(tmp_path / "s", {"a": 1}, items, 3, work, progress=False)
    assert calls == [0, 1, 2, 2, 3]  # only the unfinished shards ran again
    assert [row["x"] for row in rows] == items and [row["shard"] for row in rows] == [0] * 3 + [1] * 3 + [2] * 3 + [3]
    calls.clear()
    run_sharded(tmp_path / "s", {"a": 2}, items, 3, work, progress=False)  # another fingerprint: all redone
    assert calls == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="shard_size"):
        run_sharded(tmp_path / "t", {}, items, 0, work)


def test_shards_from_another_source_version_are_discarded(tmp_path, monkeypatch, capsys):
    """Issue 11.2: an uncommitted edit fingerprinted as `<commit>+dirty` like any other, and an evaluation
    resumed across the edit merged rows from both versions. The source fingerprint tells edits apart."""
    from dcod import io, shards

    calls = []

    def work(index, items):
        calls.append(index)
        if index == 2 and len(calls) == 3:
            raise Interrupt  # the edited version dies in shard 2, leaving shards 0 and 1
        return [{"x": item} for item in items]

    items = list(range(10))
    with monkeypatch.context() as patch:
        patch.setattr(shards, "source_fingerprint", lambda: "f" * 64)  # the edited source
        with pytest.raises(Interrupt):
            run_sharded(tmp_path / "s", {"a": 1}, items, 3, work, progress=False)
    capsys.readouterr()
    rows = run_sharded(tmp_path / "s", {"a": 1}, items, 3, work, progress=False)
    assert calls == [0, 1, 2, 0, 1, 2, 3]  # nothing of the other version kept
    assert [row["x"] for row in rows] == items
    assert f"shards in {tmp_path / 's'} were computed from other inputs (differs in: source_sha256); " \
           "starting fresh" in capsys.readouterr().out
    stamp = json.loads((tmp_path / "s" / "fingerprint.json").read_text())
    assert stamp == {"a": 1, "source_sha256": io.source_fingerprint()}


def test_source_fingerprint_tells_edits_apart(tmp_path, monkeypatch):
    """The hash covers the package's .py and .yaml files, path and content (computed once per process)."""
    import shutil

    from dcod import io

    package = tmp_path / "dcod"
    shutil.copytree(Path(io.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    digests = []
    for edit in (None, "# an uncommitted comment\n", None):
        if edit:
            (package / "shards.py").write_text((package / "shards.py").read_text() + edit)
        monkeypatch.setattr(io, "__file__", str(package / "io.py"))
        io.source_fingerprint.cache_clear()
        digests.append(io.source_fingerprint())
    io.source_fingerprint.cache_clear()
    monkeypatch.undo()
    assert digests[0] != digests[1] == digests[2]
    assert io.source_fingerprint() == digests[0]  # the copy was exact: same paths, same bytes


@pytest.fixture()
def small_profile():
    profile = load_profile(REPO / "config/profiles/ci.yaml")
    profile.world["n_train"] = 30
    profile.traces.shard_size = 8
    profile.eval.shard_size = 7
    return profile


def _interrupt_on_call(monkeypatch, owner, name, call):
    """Make ``owner.name`` raise on its ``call``-th call (1-based) and behave normally otherwise."""
    original, count = getattr(owner, name), [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == call:
            raise Interrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return count


def test_interrupted_traces_resume_to_the_same_file(tmp_path, small_profile, monkeypatch):
    world = tmp_path / "world"
    pipeline.stage_world(small_profile, world)
    pipeline.stage_traces(small_profile, world, tmp_path / "clean" / "train.parquet")
    with monkeypatch.context() as patch:
        _interrupt_on_call(patch, ToyTeacher, "generate", 3)
        with pytest.raises(Interrupt):
            pipeline.stage_traces(small_profile, world, tmp_path / "resumed" / "train.parquet")
    shards = tmp_path / "resumed" / ".train.shards"
    assert len(list(shards.glob("part-*.jsonl"))) == 2 and not (tmp_path / "resumed" / "train.parquet").exists()
    calls = _interrupt_on_call(monkeypatch, ToyTeacher, "generate", 0)
    pipeline.stage_traces(small_profile, world, tmp_path / "resumed" / "train.parquet")
    assert calls[0] == 2  # 4 shards of 8 prompts, 2 already finished
    clean = pd.read_parquet(tmp_path / "clean" / "train.parquet")
    resumed = pd.read_parquet(tmp_path / "resumed" / "train.parquet")
    pd.testing.assert_frame_equal(clean, resumed)
    assert not shards.exists()  # removed once the output is written


def test_interrupted_evaluation_resumes_to_the_same_results(tmp_path, small_profile, monkeypatch, toy_tokenizer):
    from dcod import evaluation

    world = tmp_path / "world"
    pipeline.stage_world(small_profile, world)
    model = build_tiny_llama(small_profile.student, toy_tokenizer, seed=0)
    model.save_pretrained(tmp_path / "model")
    toy_tokenizer.save_pretrained(tmp_path / "model")
    pipeline.stage_evaluate(small_profile, world, str(tmp_path / "model"), tmp_path / "clean")
    with monkeypatch.context() as patch:
        _interrupt_on_call(patch, evaluation, "stability_rows", 2)
        with pytest.raises(Interrupt):
            pipeline.stage_evaluate(small_profile, world, str(tmp_path / "model"), tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "metrics.csv").exists()
    greedy = _interrupt_on_call(monkeypatch, evaluation, "evaluate_records", 0)
    stability = _interrupt_on_call(monkeypatch, evaluation, "stability_rows", 0)
    pipeline.stage_evaluate(small_profile, world, str(tmp_path / "model"), tmp_path / "resumed")
    assert greedy[0] == 0 and stability[0] == 1  # greedy shards all kept; stability shard 1 of 2 redone
    for name in ("samples.jsonl", "stability.csv", "metrics.csv"):
        assert (tmp_path / "clean" / name).read_text() == (tmp_path / "resumed" / name).read_text(), name
    assert not list((tmp_path / "resumed").glob(".shards-*"))
