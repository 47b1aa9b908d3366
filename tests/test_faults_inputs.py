"""Faulty inputs are refused at load time by an error that names the file, the row or line (counted from
1) and the key (issue 11, list 6). Tiny hand-made files; no model is trained."""

import json
import re
import warnings

import pandas as pd
import pytest

from dcod.data import load_traces
from dcod.io import write_parquet

# ----------------------------------------------------------------------------- traces parquet


def _trace(length: int = 3, k: int = 2) -> dict:
    return {"id": "t", "question": "Q:1+1\nA:", "gold": "2", "prompt_ids": [1, 5, 6],
            "completion_ids": list(range(10, 10 + length)), "teacher_logprobs": [-0.5] * length,
            "topk_ids": [list(range(k))] * length, "topk_logprobs": [[-0.1] * k] * length}


def _write(tmp_path, rows: list[dict]):
    path = tmp_path / "traces.parquet"
    write_parquet(path, pd.DataFrame(rows))
    return path


def test_valid_traces_load(tmp_path):
    examples = load_traces(_write(tmp_path, [_trace(), _trace(4)]))
    assert [len(e["completion_ids"]) for e in examples] == [3, 4] and len(examples[1]["topk_ids"][0]) == 2
    no_topk = [{**_trace(), "topk_ids": [], "topk_logprobs": []}] * 2  # traces.top_k_logprobs: 0
    assert "topk_ids" not in load_traces(_write(tmp_path, no_topk))[0]


def test_a_bit_flipped_parquet_names_the_file(tmp_path):
    path = _write(tmp_path, [_trace(200) for _ in range(20)])
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 4, len(data) // 4 + 64):  # inside the first column chunk's pages
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": not a readable parquet file"):
        load_traces(path)


def test_a_truncated_parquet_names_the_file(tmp_path):
    path = _write(tmp_path, [_trace()])
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"traces\.parquet: not a readable parquet file"):
        load_traces(path)


@pytest.mark.parametrize("logprobs", [[-0.5] * 2, [-0.5] * 4, None])
def test_teacher_logprobs_of_another_length_names_the_row(tmp_path, logprobs):
    path = _write(tmp_path, [_trace(), _trace(), {**_trace(), "teacher_logprobs": logprobs}])
    with pytest.raises(ValueError, match=r"traces\.parquet: row 3: teacher_logprobs has \w+ values for 3 "
                                         r"completion_ids tokens"):
        load_traces(path)


def test_topk_rows_not_matching_the_completion_name_the_row(tmp_path):
    short = {**_trace(), "topk_ids": [[0, 1]] * 2}
    with pytest.raises(ValueError, match=r"traces\.parquet: row 2: topk_ids has 2 rows for 3 completion_ids"):
        load_traces(_write(tmp_path, [_trace(), short]))
    short = {**_trace(), "topk_logprobs": [[-0.1, -0.2]] * 4}
    with pytest.raises(ValueError, match=r"traces\.parquet: row 1: topk_logprobs has 4 rows for 3 completion_ids"):
        load_traces(_write(tmp_path, [short]))


def test_ragged_topk_names_the_row_and_column(tmp_path):
    ragged = {**_trace(), "topk_ids": [[0, 1], [0], [0, 1]]}
    with pytest.raises(ValueError, match=r"traces\.parquet: row 2: topk_ids rows are ragged \(widths \[1, 2\]\)"):
        load_traces(_write(tmp_path, [_trace(), ragged]))
    other_k = {**_trace(), "topk_logprobs": [[-0.1] * 3] * 3}
    with pytest.raises(ValueError, match=r"traces\.parquet: row 1: topk_logprobs has top-3, topk_ids top-2"):
        load_traces(_write(tmp_path, [other_k]))
    with pytest.raises(ValueError, match=r"traces\.parquet: row 3: topk_ids holds top-3 while earlier rows hold "
                                         r"top-2"):
        load_traces(_write(tmp_path, [_trace(), _trace(), _trace(k=3)]))
    with pytest.raises(ValueError, match=r"traces\.parquet: row 2: topk_ids holds no top-k while earlier rows"):
        load_traces(_write(tmp_path, [_trace(), {**_trace(), "topk_ids": [], "topk_logprobs": []}]))


def test_empty_completions_are_refused(tmp_path):
    empty = {**_trace(0), "topk_ids": [], "topk_logprobs": []}
    with pytest.raises(ValueError, match=r"traces\.parquet: every completion_ids is empty \(2 rows\)"):
        load_traces(_write(tmp_path, [empty, empty]))
    with pytest.raises(ValueError, match=r"traces\.parquet: row 2: completion_ids is empty"):
        load_traces(_write(tmp_path, [_trace(), empty]))


# ----------------------------------------------------------------------------- benchmark golds


def _benchmark_file(tmp_path, relative: str, rows: list[dict]):
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_gsm8k_gold_that_is_not_a_number_names_file_line_and_field(tmp_path):
    from dcod.benchmarks import load_benchmark

    rows = [{"question": "1+1?", "answer": "so\n#### 2"}, {"question": "6+6?", "answer": "so\n#### twelve"}]
    _benchmark_file(tmp_path, "gsm8k/test.jsonl", rows)
    with pytest.raises(ValueError, match=r"gsm8k/test\.jsonl: line 2 field 'answer': gsm8k_hash failed: the answer "
                                         r"after '####' is not a number: 'twelve'"):
        load_benchmark("gsm8k", data_dir=tmp_path)


@pytest.mark.parametrize("answer, message", [("", "empty gold"), ("  ", "empty gold"), (None, "is null")])
def test_an_empty_gold_names_file_line_and_field(tmp_path, answer, message):
    from dcod.benchmarks import load_benchmark

    rows = [{"id": 1, "problem": "Q1", "answer": "7"}, {"id": 2, "problem": "Q2", "answer": "8"},
            {"id": 3, "problem": "Q3", "answer": answer}]
    path = _benchmark_file(tmp_path, "aime24/test.jsonl", rows)
    path.write_text("\n" + path.read_text())  # a blank first line: numbers are the file's lines
    with pytest.raises(ValueError, match=rf"aime24/test\.jsonl: line 4 field 'answer'.*{message}"):
        load_benchmark("aime24", data_dir=tmp_path)


def test_a_gold_math_verify_cannot_parse_is_kept_and_counted(tmp_path):
    from dcod.benchmarks import load_benchmark

    rows = [{"unique_id": "a", "problem": "Q1", "answer": "\\frac{1}{2}"},
            {"unique_id": "b", "problem": "Q2", "answer": "t(0,4]"}]
    _benchmark_file(tmp_path, "math500/test.jsonl", rows)
    counted = (r"benchmark 'math500': 1 gold\(s\) unparseable by math-verify, graded wrong for every model: "
               r".*math500/test\.jsonl: line 2 field 'answer' gold 't\(0,4\]'")
    with pytest.warns(UserWarning, match=counted):
        records = load_benchmark("math500", data_dir=tmp_path)
    assert [r["gold"] for r in records] == ["\\frac{1}{2}", "t(0,4]"]
    with warnings.catch_warnings():  # golds that parse: no warning
        warnings.simplefilter("error")
        _benchmark_file(tmp_path, "math500/test.jsonl", rows[:1])
        load_benchmark("math500", data_dir=tmp_path)


# ----------------------------------------------------------------------------- evaluation records


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
