"""Benchmark golds are checked at load time: an unusable gold names the file, the line and the field
(dcod/benchmarks.py; issue 11, list 6). Tiny hand-made files."""

import json
import warnings

import pytest





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
