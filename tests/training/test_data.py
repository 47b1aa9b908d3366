"""Teacher traces are refused at load time by an error that names the file, the row (counted from 1) and
the key (dcod/data.py; issue 11, list 6). Tiny hand-made files; no model is trained."""

import re

import pandas as pd
import pytest

from dcod.data import load_traces
from dcod.io import write_parquet



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
