"""Evaluation records and passes (dcod/evaluation.py): a record without a key or with an empty one is
refused naming the file, line and key, before anything is generated (issue 11, list 6)."""

import json

import pytest





@pytest.mark.parametrize("key", ["gold", "question", "id"])
def test_a_split_record_without_a_key_names_file_line_and_key(tmp_path, key):
    from dcod.evaluation import read_split

    rows = [{"id": f"id-{i}", "question": f"Q:{i}+1\nA:", "gold": str(i + 1)} for i in range(3)]
    del rows[2][key]
    path = tmp_path / "id.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[1:]))  # a blank line
    with pytest.raises(ValueError, match=rf"id\.jsonl: line 4: evaluation record has no '{key}' key"):
        read_split(path)


@pytest.mark.parametrize("key, value", [("gold", ""), ("gold", 12), ("question", " "), ("question", None)])
def test_a_split_record_with_an_empty_gold_or_question_names_file_line_and_key(tmp_path, key, value):
    from dcod.evaluation import read_split

    rows = [{"id": f"id-{i}", "question": f"Q:{i}+1\nA:", "gold": str(i + 1)} for i in range(3)]
    path = tmp_path / "id.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_split(path) == rows
    rows[1][key] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=rf"id\.jsonl: line 2: evaluation record key '{key}' must be a non-empty"):
        read_split(path)


class _NoGeneration:
    """A backend that must never be asked: the records are refused before any generation."""

    def generate(self, *args, **kwargs):
        raise AssertionError("generated before the records were checked")


@pytest.mark.parametrize("entry", ["evaluate_records", "stability_rows", "sampled_rows"])
def test_every_evaluation_pass_refuses_a_record_without_gold_before_generating(entry, toy_tokenizer):
    from dcod import evaluation

    records = [{"id": "a", "split": "id", "question": "Q:1+1\nA:", "gold": "2"},
               {"id": "b", "split": "id", "question": "Q:2+2\nA:"}]
    kwargs = {"evaluate_records": {"max_new_tokens": 4},
              "stability_rows": {"samples": 2, "temperature": 1.0, "max_new_tokens": 4, "timeout": 5.0,
                                 "workers": 1, "seed": 0},
              "sampled_rows": {"k": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4, "seed": 0}}[entry]
    with pytest.raises(ValueError, match=rf"{entry}: record 2 \(id 'b'\) has no 'gold' key"):
        getattr(evaluation, entry)(_NoGeneration(), toy_tokenizer, records, **kwargs)


def test_the_stability_pass_counts_a_prompt_beyond_the_context_as_the_greedy_pass_does(toy_tokenizer):
    from dcod import evaluation
    from dcod.config import StudentConfig
    from dcod.generation import HFBackend
    from dcod.models import build_tiny_llama

    tiny = StudentConfig(hidden_size=32, num_layers=1, num_heads=1, intermediate_size=64,
                         max_position_embeddings=64)
    backend = HFBackend(build_tiny_llama(tiny, toy_tokenizer, seed=0).eval(), toy_tokenizer, batch_size=8)
    records = [{"id": "short", "split": "id", "question": "Q:1+1\nA:", "gold": "2"},
               {"id": "long", "split": "id", "question": "Q:" + "1+" * 80 + "1\nA:", "gold": "81"},
               {"id": "short2", "split": "id", "question": "Q:2+2\nA:", "gold": "4"}]
    greedy = evaluation.evaluate_records(backend, toy_tokenizer, records, max_new_tokens=4)
    assert [r["status"] == "prompt_too_long" for r in greedy] == [False, True, False]
    rows = evaluation.stability_rows(backend, toy_tokenizer, records, samples=2, temperature=1.0, max_new_tokens=4,
                                     timeout=5.0, workers=1, seed=0)
    assert [(r["id"], r["samples"]) for r in rows] == [("short", 2), ("long", 0), ("short2", 2)]
    assert rows[1]["agreement"] is None and rows[1]["malformed_rate"] is None  # left out of the means
    alone = evaluation.stability_rows(backend, toy_tokenizer, records[:1], samples=2, temperature=1.0,
                                      max_new_tokens=4, timeout=5.0, workers=1, seed=0)
    assert alone == rows[:1]  # the short prompt's samples do not depend on the skipped one
    assert [r["samples"] for r in evaluation.stability_rows(backend, toy_tokenizer, records[1:2], samples=2,
            temperature=1.0, max_new_tokens=4, timeout=5.0, workers=1, seed=0)] == [0]


@pytest.mark.parametrize("problems, expected", [(1, {"id": 1}), (3, {"id": 2, "long": 1}), (100, {"id": 5, "long": 5})])
def test_the_stability_pass_never_gets_an_empty_share(monkeypatch, tmp_path, problems, expected):
    """stability_problems smaller than the number of test splits gave each split 0 problems (an empty
    stability table, silently): shares are even, the first split taking the remainder."""
    from types import SimpleNamespace

    from dcod import evaluation

    chosen = []
    monkeypatch.setattr(evaluation, "run_sharded", lambda folder, fingerprint, items, *a, **k: chosen.extend(items))
    records = [{"id": f"{split}-{i}", "split": split, "task": "arith"} for split in ("validation", "id", "long")
               for i in range(5)]
    ev = SimpleNamespace(splits=["validation", "id", "long"], stability_problems=problems, stability_samples=2,
                         stability_temperature=1.0, shard_size=8, max_new_tokens=10)
    evaluation.stability_pass(None, None, records, ev, skip_split="validation", folder=tmp_path,
                              fingerprint={}, seed=0)
    counts = {}
    for record in chosen:
        counts[record["split"]] = counts.get(record["split"], 0) + 1
    assert counts == expected
