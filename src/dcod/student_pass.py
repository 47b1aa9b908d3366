"""Offline passes over the base student that some methods need besides the teacher traces.

A method declares them in its ``Needs`` (``dcod.methods.base``); the DAG runs each once per training seed
(the seed's base student: under ``pretrain.per_seed`` each seed has its own) as its own stage, before the
seed's training jobs, and only for methods that declare it (docs/architecture.md, "Offline student passes"):

- ``student_traces``: one completion per training prompt (the prompts of the teacher traces file) sampled
  from the base student, every token then scored by the teacher: its log-prob and top-k, stored in the
  teacher traces' columns, so a method reads them like the traces (``StepContext.student_traces``).
  Sampling: temperature 0.8, top-p 0.95, one sample per prompt, the profile's ``traces.max_new_tokens``
  (the defaults of DistiLLM-2's released ``generate/generate_vllm.py``, github.com/jongwooko/distillm-2),
  seeded by ``traces.seed`` and the training seed. No completion is graded or dropped: the student's own
  outputs, right or wrong, are the data (as the authors' pairs keep every student response).
- ``trace_scores``: every teacher trace scored by the base student, one forward pass: per completion
  token its NLL and its rank (1 + the number of vocabulary tokens with a strictly larger logit), in the
  traces file's row order (``StepContext.trace_scores``).

Both passes are resumable in shards (``dcod.shards``) and write a summary JSON beside their parquet with
what they cost (tokens generated, student and teacher forward tokens, seconds); training copies it into
run.json (``offline_passes``), so a table can count it the way it counts the teacher traces' one-off cost.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from dcod.data import collate, load_traces, use_student_prompts

STUDENT_TEMPERATURE = 0.8  # DistiLLM-2's generate_vllm.py default (--temperature)
STUDENT_TOP_P = 0.95  # its --top_p default
SCORE_ELEMENTS = 2**27  # logits per forward pass when scoring, [rows, width, V] (memory, not results)
PASSES = ("student_traces", "trace_scores")  # the Needs fields that name a pass (and its summary key)


def training_prompts(traces: list[dict]) -> list[dict]:
    """One record per distinct question of the traces, in order of first appearance: the prompts the
    student samples from (a question with several teacher traces is sampled once)."""
    seen: dict[str, dict] = {}
    for trace in traces:
        if trace["question"] not in seen:
            seen[trace["question"]] = {key: trace[key] for key in ("id", "question", "gold", "prompt_ids")
                                       if key in trace}
    return list(seen.values())


def score_batches(examples: list[dict], vocab_size: int, elements: int = SCORE_ELEMENTS):
    """Consecutive runs of ``examples`` whose logits [rows, width, V] stay within ``elements`` (one example
    at least): a 151k vocabulary and 2,000-token traces score a few rows at a time, the toy world hundreds."""
    start = 0
    while start < len(examples):
        stop, width = start, 0
        while stop < len(examples):
            width = max(width, len(examples[stop]["prompt_ids"]) + len(examples[stop]["completion_ids"]))
            if stop > start and (stop - start + 1) * width * vocab_size > elements:
                break
            stop += 1
        yield examples[start:stop]
        start = stop


def token_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The rank of each target under ``logits`` [..., V]: 1 + the number of tokens with a strictly larger
    logit (ties share the best rank), unclipped; ``targets`` [...] → [...] long."""
    target = logits.gather(-1, targets[..., None])
    return 1 + (logits > target).sum(-1)


@torch.no_grad()
def student_scores(model, examples: list[dict], pad_id: int) -> list[dict]:
    """Per example, the student's NLL and rank of each completion token (float32 logits, full vocabulary)."""
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for chunk in score_batches(examples, model.config.vocab_size):
        batch = collate([{"prompt_ids": e["prompt_ids"], "completion_ids": e["completion_ids"]} for e in chunk],
                        pad_id)
        logits = model(input_ids=batch["input_ids"].to(device),
                       attention_mask=batch["attention_mask"].to(device)).logits[:, :-1].float().cpu()
        targets = batch["targets"]
        nll = torch.logsumexp(logits, -1) - logits.gather(-1, targets[..., None]).squeeze(-1)
        ranks = token_ranks(logits, targets)
        for row, example in enumerate(chunk):
            mask = batch["loss_mask"][row]
            rows.append({"nll": nll[row][mask].tolist(), "rank": ranks[row][mask].tolist()})
    return rows


def teacher_scores(teacher, examples: list[dict], pad_id: int, vocab_size: int, k: int) -> list[dict]:
    """Per example, the teacher's log-prob of each completion token and its top-k (ids, log-probs) at each
    position: the columns of a teacher trace (``teacher`` as ``models.teacher_full_logprobs`` takes it)."""
    from dcod.models import teacher_full_logprobs

    rows = []
    for chunk in score_batches(examples, vocab_size):
        batch = collate([{"prompt_ids": e["prompt_ids"], "completion_ids": e["completion_ids"]} for e in chunk],
                        pad_id)
        if not hasattr(teacher, "next_token_logprobs"):
            batch = {key: value.to(next(teacher.parameters()).device) for key, value in batch.items()}
        full = teacher_full_logprobs(teacher, chunk, batch, vocab_size).float().cpu()
        targets = batch["targets"].cpu()
        sampled = full.gather(-1, targets[..., None]).squeeze(-1)
        top_values, top_ids = full.topk(min(k, full.shape[-1]), dim=-1) if k else (None, None)
        for row, example in enumerate(chunk):
            mask = batch["loss_mask"][row].cpu()
            record = {"teacher_logprobs": sampled[row][mask].tolist()}
            if k:
                record["topk_ids"] = top_ids[row][mask].tolist()
                record["topk_logprobs"] = top_values[row][mask].tolist()
            rows.append(record)
    return rows


def pass_paths(folder: str | Path) -> tuple[Path, Path]:
    """(parquet, summary JSON) of a pass's output folder."""
    folder = Path(folder)
    return folder / "train.parquet", folder / "train.json"


def load_student_traces(path: str | Path, tokenizer) -> list[dict]:
    """The student traces as training examples (the teacher traces' loader and checks)."""
    examples = load_traces(path)
    use_student_prompts(examples, tokenizer)
    return examples


def load_trace_scores(path: str | Path, traces: list[dict]) -> list[dict]:
    """The base student's per-token scores of ``traces``, checked row by row against them: a scores file of
    another traces file (another length, another completion) is refused, naming the file and the row."""
    import pandas as pd

    frame = pd.read_parquet(path)
    if len(frame) != len(traces):
        raise ValueError(f"{path}: {len(frame)} scored traces for a traces file of {len(traces)}: "
                         "rebuild it from the traces this run trains on")
    rows = []
    for index, (record, trace) in enumerate(zip(frame.to_dict("records"), traces), start=1):
        nll, rank = np.asarray(record["nll"], dtype=np.float64), np.asarray(record["rank"], dtype=np.int64)
        if len(nll) != len(trace["completion_ids"]) or len(rank) != len(nll):
            raise ValueError(f"{path}: row {index}: {len(nll)} scored tokens for a trace of "
                             f"{len(trace['completion_ids'])} completion tokens (scores of another traces file)")
        if not np.isfinite(nll).all() or (rank < 1).any():
            raise ValueError(f"{path}: row {index}: non-finite NLL or rank < 1")
        rows.append({"nll": nll, "rank": rank})
    return rows


def pass_cost(summary_path: str | Path) -> dict:
    """A pass's cost from its summary JSON (what run.json records under ``offline_passes``)."""
    summary = json.loads(Path(summary_path).read_text())
    return {key: summary[key] for key in ("tokens_generated", "student_forward_tokens", "teacher_forward_tokens",
                                          "seconds")}


def timed(function, *args, **kwargs):
    """(result, seconds) of one call."""
    started = time.time()
    result = function(*args, **kwargs)
    return result, time.time() - started
