"""Training examples and batches.

An example is a dict of lists: ``prompt_ids``, ``completion_ids`` (eos included) and, for offline
teacher traces, ``teacher_logprobs`` (one per completion token) and optionally ``topk_ids`` /
``topk_logprobs`` (``[len(completion), K]``). ``collate`` turns a list of examples into the shifted
per-target tensors described in docs/architecture.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    lengths = [len(e["prompt_ids"]) + len(e["completion_ids"]) for e in examples]
    width = max(lengths)
    batch = len(examples)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    loss_mask = torch.zeros((batch, width - 1), dtype=torch.bool)
    has_teacher = all(e.get("teacher_logprobs") is not None for e in examples)
    has_topk = all(e.get("topk_ids") is not None for e in examples)
    teacher = torch.zeros((batch, width - 1)) if has_teacher else None
    if has_topk:
        k = len(examples[0]["topk_ids"][0])
        topk_ids = torch.zeros((batch, width - 1, k), dtype=torch.long)
        topk_lps = torch.full((batch, width - 1, k), -1e4)
    for row, example in enumerate(examples):
        prompt, completion = example["prompt_ids"], example["completion_ids"]
        sequence = list(prompt) + list(completion)
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        # target position t predicts sequence[t + 1]; completion token j sits at target len(prompt)-1+j
        start, stop = len(prompt) - 1, len(prompt) - 1 + len(completion)
        loss_mask[row, start:stop] = True
        if has_teacher:
            teacher[row, start:stop] = torch.as_tensor(np.asarray(example["teacher_logprobs"], dtype=np.float32))
        if has_topk:
            topk_ids[row, start:stop] = torch.as_tensor(np.stack(example["topk_ids"]).astype(np.int64))
            topk_lps[row, start:stop] = torch.as_tensor(np.stack(example["topk_logprobs"]).astype(np.float32))
    out = {"input_ids": input_ids, "attention_mask": attention, "loss_mask": loss_mask,
           "targets": input_ids[:, 1:].clone()}
    if has_teacher:
        out["teacher_logprobs"] = teacher
    if has_topk:
        out["teacher_topk_ids"] = topk_ids
        out["teacher_topk_logprobs"] = topk_lps
    return out


def load_traces(path) -> list[dict]:
    """Read a traces parquet into examples, checking that token ids are plain lists of ints."""
    frame = _read_frame(path)
    if frame.empty:
        raise ValueError(f"{path}: no traces (empty file)")
    required = {"prompt_ids", "completion_ids", "teacher_logprobs"}
    missing = required - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    _check_lengths(frame, path)
    examples = []
    for row, record in enumerate(frame.to_dict("records"), start=1):
        example = {"prompt_ids": [int(t) for t in record["prompt_ids"]],
                   "completion_ids": [int(t) for t in record["completion_ids"]],
                   "teacher_logprobs": np.asarray(record["teacher_logprobs"], dtype=np.float32)}
        if "topk_ids" in record and record["topk_ids"] is not None and len(record["topk_ids"]):
            example["topk_ids"] = [np.asarray(v) for v in record["topk_ids"]]
            example["topk_logprobs"] = [np.asarray(v) for v in record["topk_logprobs"]]
        _check_finite_logprobs(example, path, row)
        for key in ("id", "question", "gold"):
            if key in record:
                example[key] = record[key]
        examples.append(example)
    return examples


# ----------------------------------------------------------------------------- load-time checks of traces
# (docs/architecture.md: one teacher log-prob and one top-k row per completion token). Each refusal names
# the file, the row (counted from 1, as a reader counts them) and the column, before any training starts.


def _read_frame(path) -> pd.DataFrame:
    """``pd.read_parquet``, naming the file when it is damaged: pyarrow's own errors (a bit flip gives
    "Corrupt snappy compressed data", a truncation "Parquet magic bytes not found") do not say which."""
    import pyarrow

    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise
    except (OSError, pyarrow.ArrowException) as error:
        raise ValueError(f"{path}: not a readable parquet file ({type(error).__name__}: {error})") from error


def _size(cell) -> int | None:
    return None if cell is None else len(cell)


def _check_lengths(frame: pd.DataFrame, path) -> None:
    """Refuse rows whose per-token columns do not match the completion: ``collate`` writes them into
    ``[len(completion)]`` and ``[len(completion), k]`` slots, so a mismatch would otherwise surface as
    a tensor size error in the middle of training, with no row named. Also refused: an empty
    completion (a stored trace holds at least its eos; a file of them would divide by zero tokens),
    and top-k rows of another width than the file's first (collate stacks one k per batch)."""
    completions = [_size(cell) or 0 for cell in frame["completion_ids"]]
    if not any(completions):
        raise ValueError(f"{path}: every completion_ids is empty ({len(completions)} rows): no token to train on")
    has_topk = "topk_ids" in frame.columns
    if has_topk and "topk_logprobs" not in frame.columns:
        raise ValueError(f"{path}: column topk_ids without topk_logprobs")
    width = None  # the file's k, set by the first row with top-k
    for index, length in enumerate(completions):
        where = f"{path}: row {index + 1}"
        if length == 0:
            raise ValueError(f"{where}: completion_ids is empty (a stored trace holds at least one token)")
        stored = _size(frame["teacher_logprobs"].iat[index])
        if stored != length:
            raise ValueError(f"{where}: teacher_logprobs has {stored} values for {length} completion_ids tokens")
        if not has_topk:
            continue
        ids, lps = frame["topk_ids"].iat[index], frame["topk_logprobs"].iat[index]
        k = 0  # this row's width; 0: no top-k stored (top_k_logprobs: 0)
        if _size(ids) or _size(lps):
            for name, rows in (("topk_ids", ids), ("topk_logprobs", lps)):
                if _size(rows) != length:
                    raise ValueError(f"{where}: {name} has {_size(rows)} rows for {length} completion_ids tokens")
                widths = {_size(entry) or 0 for entry in rows}
                if len(widths) != 1 or 0 in widths:
                    raise ValueError(f"{where}: {name} rows are ragged (widths {sorted(widths)}); "
                                     f"every completion token needs the same k")
                k = k or widths.pop()
                if {_size(entry) for entry in rows} != {k}:
                    raise ValueError(f"{where}: {name} has top-{_size(rows[0])}, topk_ids top-{k}")
        if width is None:
            width = k
        elif k != width:
            raise ValueError(f"{where}: topk_ids holds {f'top-{k}' if k else 'no top-k'} while earlier rows hold "
                             f"{f'top-{width}' if width else 'none'} (one k per file)")


def _check_finite_logprobs(example: dict, path, row: int) -> None:
    """NaN/inf teacher log-probs would train silently wrong (``kd`` reads a NaN top-k entry as zero mass):
    refuse them at load, naming the file and the 1-based row. A sampled token's log-prob must be finite;
    a top-k entry may be -inf (zero mass after top-p), never NaN or +inf."""
    sampled = example["teacher_logprobs"]
    bad = np.flatnonzero(~np.isfinite(sampled))
    if bad.size:
        raise ValueError(f"{path}: row {row}: teacher_logprobs[{bad[0]}] is {sampled[bad[0]]} "
                         f"({bad.size} non-finite values); a sampled token's log-prob must be finite")
    if "topk_logprobs" in example and len(example["topk_logprobs"]):
        topk = np.concatenate([np.ravel(v) for v in example["topk_logprobs"]]).astype(np.float32)
        if np.isnan(topk).any() or (topk == np.inf).any():  # one vectorised test per row; details on error
            for token, values in enumerate(example["topk_logprobs"]):
                values = np.asarray(values, dtype=np.float32)
                if np.isnan(values).any() or (values == np.inf).any():
                    raise ValueError(f"{path}: row {row}: topk_logprobs at completion token {token} is "
                                     f"{values.tolist()}; top-k log-probs may be -inf (zero mass), "
                                     "never NaN or +inf")


def use_student_prompts(examples: list[dict], tokenizer) -> int:
    """Re-encode each trace's question with the student's tokenizer and chat template, in place.

    The teacher generated from its own template (Qwen2.5-Math-7B-Instruct's default system prompt is not
    Qwen2.5-1.5B's); the student is trained, sampled and evaluated with its own, so it learns the
    teacher's completions after the prompt it will actually see. The completion ids and the teacher's
    log-probs are kept: they are the teacher's, under the teacher's prompt. Returns how many prompts
    changed (0 when both templates agree, as in the toy world). Examples without a question are refused."""
    from dcod.models import encode_prompt

    cache: dict[str, list[int]] = {}
    changed = 0
    for index, example in enumerate(examples):
        question = example.get("question")
        if not isinstance(question, str):
            raise ValueError(f"trace {index} has no question to encode with the student's template")
        if question not in cache:
            cache[question] = list(encode_prompt(tokenizer, question))
        changed += cache[question] != example["prompt_ids"]
        example["prompt_ids"] = cache[question]
    return changed


def check_vocab(examples: list[dict], vocab_size: int, source: str) -> None:
    """Token ids beyond the vocabulary would index garbage embeddings: refuse them by example index."""
    for index, example in enumerate(examples):
        ids = list(example["prompt_ids"]) + list(example["completion_ids"])
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"{source}: example {index} has token ids {bad[:5]} outside the vocabulary "
                             f"(size {vocab_size})")


class EpochSampler:
    """Deterministic batches: step ``s`` of seed ``seed`` always sees the same examples.

    The order is a function of (seed, epoch) only, so a resumed run draws exactly the batches the
    uninterrupted run would have drawn, with no sampler state in the checkpoint. An epoch is
    ``size // batch_size`` full batches (the remainder waits for the next epoch's shuffle).

    With ``lengths``, batches are grouped by length (as ``group_by_length`` in HF's Trainer): each
    shuffled window of ``window`` batches is sorted by length before it is cut into batches, and the
    batch order is shuffled again. Padding per batch drops sharply (traces range from ~20 to ~150
    tokens), while every example is still seen once per epoch in a seeded random order.
    """

    def __init__(self, size: int, batch_size: int, seed: int, lengths=None, window: int = 16):
        if size < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.window = window
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    def _epoch(self, epoch: int) -> list[list[int]]:
        if self._epoch_cache and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size)
        if self.size < self.batch_size:  # tiny datasets: repeat to fill one batch
            order = np.resize(order, self.batch_size)
        n_batches = len(order) // self.batch_size
        order = order[: n_batches * self.batch_size]
        if self.lengths is not None:
            span = self.window * self.batch_size
            windows = [order[i:i + span] for i in range(0, len(order), span)]
            order = np.concatenate([w[np.argsort(self.lengths[w], kind="stable")] for w in windows])
        batches = [order[i * self.batch_size:(i + 1) * self.batch_size].tolist() for i in range(n_batches)]
        if self.lengths is not None:
            batches = [batches[i] for i in rng.permutation(n_batches)]
        self._epoch_cache = (epoch, batches)
        return batches

    def indices(self, step: int) -> list[int]:
        n_batches = max(1, max(self.size, self.batch_size) // self.batch_size)
        epoch, index = divmod(step, n_batches)
        return self._epoch(epoch)[index]


def example_lengths(examples: list[dict]) -> list[int]:
    return [len(e["prompt_ids"]) + len(e["completion_ids"]) for e in examples]
