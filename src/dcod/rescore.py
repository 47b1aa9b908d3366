"""Bring your own traces: score an existing (prompt, completion) dataset with the profile's teacher.

Public reasoning-trace sets hold text only, while every offline method trains on a traces file whose
rows carry the teacher's log-prob of each completion token (and the top-k, ``traces.top_k_logprobs``).
``stage_rescore`` reads such a set (a local JSONL or parquet file, or a hub dataset at a pinned revision),
tokenises each row exactly as the ``traces`` stage stores a teacher sample and writes the same file
(``dcod.pipeline.stage_traces``; schema in ``dcod.data``) from one teacher forward per row
(docs/paper_setting.md, "Bring your own traces").

- The prompt is the user turn of the teacher's chat template with the generation prompt
  (``dcod.models.encode_prompt``, as in the ``traces`` stage; training re-encodes it with the student's
  template). The completion is the assistant turn as the template renders it, up to and including the
  token that closes the turn (the teacher's end token, what a teacher sample ends with), so the loss
  covers the assistant's tokens only. A template that does not render the completion verbatim after
  the very prompt the stage encodes is refused with the row named, never tokenised another way.
- The log-probs are those of the distribution the ``traces`` stage samples from: the teacher's logits
  at ``traces.temperature`` and ``traces.top_p`` (``dcod.generation.process_logits``; the paper profile's
  T=1, top-p 1 is the teacher's own distribution). A completion token outside the top-p nucleus has no
  finite log-prob: refused, naming the row.
- With a gold field the completion is graded like a teacher trace (``verified``) and
  ``traces.keep_only_correct`` applies; without one every row is kept and ``verified`` is null.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dcod.config import ProfileConfig

LOCAL_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class TraceSource:
    """Where the traces come from and which fields hold what (the ``rescore`` command's options)."""

    location: str  # a local .jsonl / .parquet file, or a hub dataset id
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    id_field: str | None = None  # None: the row index
    gold_field: str | None = None  # None: nothing to grade, every row kept
    gold_normaliser: str = "identity"  # one of dcod.benchmarks.GOLD_NORMALISERS
    revision: str | None = None  # hub only, required there: a commit sha or tag
    split: str = "train"  # hub only
    config: str | None = None  # hub only: the dataset's configuration name
    limit: int = 0  # the first rows only; 0: all

    def describe(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- reading the rows
def _read_local(path: Path) -> list[tuple[dict, str]]:
    """(row, where) pairs of a local file; ``where`` names the file and the 1-based line or row."""
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {number} is not valid JSON: {error}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {number} is a JSON {type(row).__name__}, not an object")
                rows.append((row, f"{path}: line {number}"))
        return rows
    import pandas as pd

    frame = pd.read_parquet(path)
    return [(row, f"{path}: row {index}") for index, row in enumerate(frame.to_dict("records"), start=1)]


def _read_hub(source: TraceSource) -> list[tuple[dict, str]]:
    """(row, where) pairs of a hub dataset at the pinned revision."""
    import datasets

    dataset = datasets.load_dataset(source.location, source.config, split=source.split, revision=source.revision)
    name = f"{source.location}@{source.revision}{f' ({source.config})' if source.config else ''} split {source.split}"
    return [(dict(row), f"{name}: row {index}") for index, row in enumerate(dataset, start=1)]


def read_source(source: TraceSource) -> list[dict]:
    """``[{id, question, completion, gold}]`` from the source; a missing, null or empty field is an error
    naming the file (or dataset) and the row. A hub dataset needs a pinned revision."""
    from dcod.benchmarks import GOLD_NORMALISERS

    if source.gold_normaliser not in GOLD_NORMALISERS:
        raise ValueError(f"gold normaliser {source.gold_normaliser!r} is not one of {', '.join(GOLD_NORMALISERS)}")
    path = Path(source.location)
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise ValueError(f"{path}: a local trace file is .jsonl or .parquet, not {path.suffix or 'no suffix'}")
        rows = _read_local(path)
    elif path.suffix in LOCAL_SUFFIXES or path.is_absolute() or source.location.startswith("."):
        raise FileNotFoundError(f"trace file {path} does not exist")
    elif source.revision is None:
        raise ValueError(f"{source.location}: a hub dataset needs --revision (a commit sha or tag): the traces "
                         f"file must be rebuilt from the same rows")
    else:
        rows = _read_hub(source)
    if source.limit:
        rows = rows[:source.limit]
    if not rows:
        raise ValueError(f"{source.location}: no rows")
    normalise = GOLD_NORMALISERS[source.gold_normaliser]
    records = []
    for index, (row, where) in enumerate(rows):
        for field in (source.prompt_field, source.completion_field, source.id_field, source.gold_field):
            if field is not None and row.get(field) is None:
                raise ValueError(f"{where}: no field {field!r} (fields: {', '.join(sorted(row))})")
        text = {field: str(row[field]) for field in (source.prompt_field, source.completion_field)}
        for field, value in text.items():
            if not value.strip():
                raise ValueError(f"{where}: field {field!r} is empty")
        gold = None
        if source.gold_field is not None:
            try:
                gold = normalise(row[source.gold_field])
            except (ValueError, TypeError) as error:
                raise ValueError(f"{where}: field {source.gold_field!r}: {source.gold_normaliser} failed: "
                                 f"{error}") from None
        records.append({"id": str(row[source.id_field]) if source.id_field else str(index),
                        "question": text[source.prompt_field], "completion": text[source.completion_field],
                        "gold": gold, "where": where})
    return records


# ----------------------------------------------------------------------------- tokens
def completion_ids(tokenizer, question: str, completion: str, prompt_ids: list[int], where: str) -> list[int]:
    """The completion's token ids as a teacher sample of the ``traces`` stage holds them: the assistant
    turn that the chat template renders after ``prompt_ids``, up to and including the end token that
    closes it. A tokenizer without a chat template (the toy world's): the plain tokens and the end token."""
    eos = tokenizer.eos_token_id
    plain = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not getattr(tokenizer, "chat_template", None):
        return list(plain) + [eos]
    full = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                          {"role": "assistant", "content": completion}], tokenize=True)
    full = list(full["input_ids"] if hasattr(full, "keys") else full)
    if full[:len(prompt_ids)] != list(prompt_ids):
        raise ValueError(f"{where}: the chat template renders the prompt differently when an assistant turn "
                         f"follows it, so the completion cannot be placed after the prompt the teacher sees")
    rest = full[len(prompt_ids):]
    if eos not in rest:
        raise ValueError(f"{where}: the chat template does not close the assistant turn with the teacher's end "
                         f"token {tokenizer.eos_token!r}")
    ids = rest[:rest.index(eos) + 1]
    if ids[:-1] != list(plain):
        raise ValueError(f"{where}: the chat template does not render the completion verbatim (it changes its "
                         f"text or tokens, or the completion holds the end token {tokenizer.eos_token!r})")
    return ids


# ----------------------------------------------------------------------------- the teacher's log-probs
@torch.no_grad()
def score(model, prompt_ids: list[int], completion: list[int], *, vocab_size: int, temperature: float,
          top_p: float, top_k: int, chunk: int = 256) -> tuple[list[float], list[list[int]], list[list[float]]]:
    """The log-prob of each completion token and the top-k of the distribution it would be sampled from
    (``process_logits`` at ``temperature`` and ``top_p``, over the tokenizer's ``vocab_size`` tokens), from
    one forward of prompt + completion. Positions are processed ``chunk`` at a time: the [tokens, vocab]
    float32 log-probs of a long trace never exist whole (2,048 x 152k would be 1.2 GB)."""
    from dcod.generation import process_logits
    from dcod.models import shared_vocab_logits

    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(completion)], device=device)
    start = len(prompt_ids) - 1  # position t predicts token t + 1: the first completion token
    logits = shared_vocab_logits(model(input_ids=ids).logits[0, start:start + len(completion)], vocab_size)
    targets = torch.tensor(completion, device=device)
    sampled, top_ids, top_lps = [], [], []
    for begin in range(0, len(completion), chunk):
        logprobs = process_logits(logits[begin:begin + chunk], temperature, top_p)
        sampled += logprobs.gather(-1, targets[begin:begin + chunk, None]).squeeze(-1).float().cpu().tolist()
        if top_k:
            values, indices = logprobs.topk(min(top_k, vocab_size), dim=-1)
            top_ids += indices.cpu().tolist()
            top_lps += values.float().cpu().tolist()
    return sampled, top_ids, top_lps


def load_teacher_model(profile: ProfileConfig):
    """The profile's HF teacher, frozen on this process's device (bf16 when the profile trains in bf16)."""
    from dcod.backends import frozen_on_device
    from dcod.models import load_model

    teacher = profile.teacher
    if teacher.kind != "hf":
        raise ValueError(f"rescore scores with a model teacher (teacher.kind hf); {profile.source} has teacher.kind "
                         f"{teacher.kind!r} (the toy world writes its traces with the `traces` stage)")
    model, tokenizer = load_model(teacher.path, gguf_file=teacher.gguf_file, revision=teacher.revision)
    return frozen_on_device(model, profile.train), tokenizer


# ----------------------------------------------------------------------------- the stage
def stage_rescore(profile: ProfileConfig, source: TraceSource, out_path: Path) -> None:
    """The traces file (``<out>.parquet`` and its summary ``<out>.json``) of an existing trace dataset."""
    import pandas as pd
    from tqdm import tqdm

    from dcod.io import write_json, write_parquet
    from dcod.models import encode_prompt, set_threads
    from dcod.pipeline import _provenance

    set_threads(profile.threads)
    records = read_source(source)
    model, tokenizer = load_teacher_model(profile)
    tc = profile.traces
    started = time.time()
    rows = []
    for record in tqdm(records, desc="rescore", unit="trace"):
        prompt = encode_prompt(tokenizer, record["question"])
        completion = completion_ids(tokenizer, record["question"], record["completion"], prompt, record["where"])
        logprobs, top_ids, top_lps = score(model, prompt, completion, vocab_size=len(tokenizer),
                                           temperature=tc.temperature, top_p=tc.top_p, top_k=tc.top_k_logprobs)
        bad = [i for i, value in enumerate(logprobs) if not value > float("-inf")]
        if bad:
            raise ValueError(f"{record['where']}: completion token {bad[0]} lies outside the teacher's top-p "
                             f"nucleus (traces.top_p {tc.top_p}): no finite log-prob; rescore with "
                             f"--set traces.top_p=1.0")
        rows.append({"id": record["id"], "question": record["question"], "gold": record["gold"],
                     "prompt_ids": prompt, "completion_ids": completion, "teacher_logprobs": logprobs,
                     "text": record["completion"], "topk_ids": top_ids, "topk_logprobs": top_lps,
                     "verified": None})
    seconds = time.time() - started
    grader = None
    if source.gold_field is not None:
        from dcod import grading

        grader = grading.GRADER_INFO
        for row, result in zip(rows, grading.grade([r["gold"] for r in rows], [r["text"] for r in rows])):
            row["verified"] = bool(result.correct)
    kept = [row for row in rows if row["verified"] is not False or not tc.keep_only_correct]
    if not kept:
        raise RuntimeError(f"{source.location}: no trace was graded correct and traces.keep_only_correct is set")
    write_parquet(out_path, pd.DataFrame(kept))
    # generation_seconds / tokens_generated: what the tables report as the offline traces' cost; here the
    # traces were generated elsewhere, so they hold this stage's scoring time and the completion tokens
    write_json(Path(out_path).with_suffix(".json"), {
        **_provenance(profile), "rescored_from": source.describe(), "teacher": profile.teacher.path,
        "generated": len(rows), "kept": len(kept), "generation_seconds": seconds, "scoring_seconds": seconds,
        "tokens_generated": sum(len(row["completion_ids"]) for row in rows), "grader": grader})
