"""Trace examples: what the teacher, the base student, the baseline and the subject wrote on the same
problems, each step marked as the grader saw it (docs/toy_world.md: step styles and local correctness).

The report shows traces, not only means, and a reader must be able to trust that they were not picked by
hand: the problems come from a fixed rule over the evaluation files (``select_examples``), the rule is
printed above the examples, and the report is rebuilt from the same files each time. ``dcod inspect``
(``dcod.reporting.inspect``) reuses the file readers and step marks here for any problem.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from dcod.io import read_jsonl
from dcod.layout import TABLE_REFERENCES
from dcod.reporting import eval_dirs, is_seeded
from dcod.reporting.claims import HARD_SPLITS, IN_DISTRIBUTION_SPLITS

N_DISAGREE = 3  # problems on which the subject and the baseline disagree, per split
N_BOTH_FAIL = 2  # problems on which both fail, per split
N_TEACHER_TRACES = 3  # training traces shown with the teacher's uncertain tokens
UNCERTAIN_P = 0.9  # a completion token is "uncertain" when the teacher gave it a probability below this
NO_BOX = "no \\boxed{} (math-verify fallback)"
MAX_TRACE_CHARS = 400  # a real model's trace is cut here in the report (samples.jsonl keeps it whole)


# ----------------------------------------------------------------------------- reading
def id_key(problem_id: str) -> tuple:
    """Natural order of problem ids (``id-2`` before ``id-10``; the toy's zero-padded ids sort either way)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(problem_id)))


def read_sample_rows(path: Path) -> dict[tuple[str, str], dict]:
    """(split, id) -> the row of one ``samples.jsonl``; only the fields every evaluation writes are required
    (a field added later is carried along untouched)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing evaluation samples {path} (has the evaluate stage run?)")
    rows = {}
    for number, row in enumerate(read_jsonl(path), start=1):
        for key in ("id", "split", "correct"):
            if key not in row:
                raise ValueError(f"{path}: row {number} has no {key!r} field")
        rows[(str(row["split"]), str(row["id"]))] = row
    if not rows:
        raise ValueError(f"{path}: no samples")
    return rows


def read_records(work: Path, split: str) -> dict[str, dict] | None:
    """id -> the world's record of ``split`` (question, gold, the toy's ops), or None when the file is absent."""
    path = Path(work) / "world" / f"{split}.jsonl"
    return {str(r["id"]): r for r in read_jsonl(path)} if path.is_file() else None


def samples_path(work: Path, model: str, seed: int, paired: bool) -> Path:
    """A model's ``samples.jsonl`` for one seed (references without seeds have one evaluation)."""
    return eval_dirs(Path(work), model, [seed], paired)[0] / "samples.jsonl"


# ----------------------------------------------------------------------------- grading marks
def answer_of(row: dict) -> str:
    """The answer the grader read: its ``extracted`` field when the evaluation kept it, else the last
    ``\\boxed{}`` of the prediction (grading.py rule 2). Without a box the grader falls back to
    math-verify's own extraction (rule 5), which this does not rerun: it says so."""
    from dcod.grading import last_boxed

    extracted = row.get("extracted")
    if extracted not in (None, ""):
        return str(extracted)
    boxed = last_boxed(str(row.get("prediction") or ""))
    return NO_BOX if boxed is None else boxed


def step_marks(record: dict | None, prediction: str) -> list[dict] | None:
    """The toy world's step analysis of a completion (``toy.world.analyze_completion``): per step its text,
    style, local correctness and whether it is the first wrong one; None where there are no steps to
    analyse (no world record, or a task other than the toy's arithmetic)."""
    from dcod.toy.world import analyze_completion

    if record is None or record.get("task") != "arith" or "ops" not in record:
        return None
    steps = analyze_completion(record, prediction)
    first_wrong = next((s.index for s in steps if not s.correct), None)
    return [{"index": s.index, "text": s.text, "style": s.style, "correct": s.correct,
             "malformed": s.malformed, "terminated": s.terminated, "first_wrong": s.index == first_wrong}
            for s in steps]


def first_wrong_text(marks: list[dict] | None) -> str:
    if marks is None:
        return "–"
    wrong = next((m for m in marks if m["first_wrong"]), None)
    return "none" if wrong is None else f"step {wrong['index'] + 1} ({wrong['style']})"


def cell(text: str) -> str:
    """Text inside a markdown table cell: pipes escaped, newlines as spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    """Inline code that survives backticks in the text (a real model writes them)."""
    text = str(text)
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def short(text: str) -> str:
    """One line, cut at MAX_TRACE_CHARS (the file it came from keeps it whole)."""
    text = str(text).replace("\n", " ↵ ")
    if len(text) > MAX_TRACE_CHARS:
        text = text[:MAX_TRACE_CHARS] + f" … ({len(text) - MAX_TRACE_CHARS} more characters)"
    return text


def marked_trace(row: dict, marks: list[dict] | None) -> str:
    """One completion as a table cell: each step in code with its style and ✓/✗ (the first wrong step in
    bold), then the rest of the text; a trace without step analysis is shown as text, cut for length."""
    prediction = str(row.get("prediction") or "")
    if marks is None:
        return cell(code(short(prediction))) if prediction else "(empty)"
    parts = []
    for mark in marks:
        verdict = "✓" if mark["correct"] else "✗"
        cut = "" if mark["terminated"] else " (cut off)"
        text = f"{code(mark['text'] + (';' if mark['terminated'] else ''))} {mark['style']}{cut} {verdict}"
        parts.append(f"**{text} ← first wrong**" if mark["first_wrong"] else text)
    consumed = sum(len(m["text"]) + m["terminated"] for m in marks)
    rest = prediction[consumed:]
    if rest:
        parts.append(code(rest))
    return cell(" ".join(parts)) if parts else "(empty)"


# ----------------------------------------------------------------------------- the rule
def select_examples(subject: dict, baseline: dict, split: str, n_disagree: int = N_DISAGREE,
                    n_both_fail: int = N_BOTH_FAIL) -> list[tuple[str, str]]:
    """(id, why) of the problems shown for ``split``: in natural id order over the problems both models
    answered, the first ``n_disagree`` on which exactly one of them is correct, then the first
    ``n_both_fail`` on which both are wrong. ``subject`` and ``baseline`` are ``read_sample_rows`` maps."""
    ids = sorted({i for s, i in subject if s == split} & {i for s, i in baseline if s == split}, key=id_key)
    right = {i: (bool(subject[(split, i)]["correct"]), bool(baseline[(split, i)]["correct"])) for i in ids}
    disagree = [(i, "disagree") for i in ids if right[i][0] != right[i][1]][:n_disagree]
    both_fail = [(i, "both fail") for i in ids if not any(right[i])][:n_both_fail]
    return disagree + both_fail


def rule_text(subject: str, baseline: str, seed: int) -> str:
    return (f"Rule (fixed before looking): on each split, among the problems evaluated for both `{subject}` and "
            f"`{baseline}` at training seed {seed}, in problem-id order, the first {N_DISAGREE} on which exactly "
            f"one of the two is correct, then the first {N_BOTH_FAIL} on which both are wrong "
            "(`dcod.reporting.traces.select_examples`). Every model's greedy completion is shown as the grader "
            "saw it: each step's style and local correctness (a step is correct when it applies the problem's "
            "operation to its own left-hand value; docs/toy_world.md), the first wrong step in bold, the answer "
            "read from the last `\\boxed{}`.")


# ----------------------------------------------------------------------------- sections
def traces_section(profile, work: str | Path | None) -> list[str]:
    """The report's "Trace examples" section: one subsection per claim split of the profile, then the
    teacher's uncertain tokens on its training traces. ``work`` None: ``work/<profile name>``."""
    work = Path(work) if work else Path("work") / profile.name
    lines = ["## Trace examples", ""]
    if not work.is_dir():
        return lines + [f"Not produced: the work folder `{work}` is absent (the evaluation samples live there).", ""]
    subject, baseline, seed = profile.report.subject, profile.report.baseline, profile.seeds[0]
    paired = profile.pretrain.per_seed  # as dcod.reporting.paired_base: the base student per seed
    models = [*TABLE_REFERENCES, baseline, subject]
    rows = {m: read_sample_rows(samples_path(work, m, seed, paired)) for m in dict.fromkeys(models)}
    lines += [rule_text(subject, baseline, seed), ""]
    splits = [s for s in profile.eval.splits if s in (*IN_DISTRIBUTION_SPLITS, *HARD_SPLITS)]
    for split in splits:
        lines += split_section(work, split, rows, models, subject, baseline, seed, paired)
    return lines + teacher_uncertainty_section(work, profile)


def split_section(work: Path, split: str, rows: dict, models: list[str], subject: str, baseline: str,
                  seed: int, paired: bool) -> list[str]:
    lines = [f"### Traces on `{split}`", ""]
    chosen = select_examples(rows[subject], rows[baseline], split)
    if not chosen:
        return lines + [f"No problem of `{split}` on which `{subject}` and `{baseline}` disagree or both fail.", ""]
    records = read_records(work, split)
    if records is None:
        lines += [f"Steps not analysed: `{work}/world/{split}.jsonl` (the problems' operations) is absent.", ""]
    for problem_id, why in chosen:
        record = (records or {}).get(problem_id)
        lines += example_lines(split, problem_id, why, record, rows, models, subject, baseline, seed, paired)
    return lines


def model_label(model: str, seed: int, paired: bool) -> str:
    return f"{model} (seed {seed})" if is_seeded(model, paired) else model


def example_lines(split, problem_id, why, record, rows, models, subject, baseline, seed, paired) -> list[str]:
    verdict = {m: bool(rows[m][(split, problem_id)]["correct"]) for m in (subject, baseline)}
    summary = ("both wrong" if why == "both fail" else
               f"`{subject}` {'right' if verdict[subject] else 'wrong'}, `{baseline}` "
               f"{'right' if verdict[baseline] else 'wrong'}")
    question = str(record["question"]).strip() if record else None
    gold = rows[subject][(split, problem_id)].get("gold", record.get("gold") if record else "–")
    head = [f"#### `{problem_id}`: {summary}", ""]
    head += [f"Question: {code(short(question))} · gold: {code(gold)}" + (f" · k = {record['k']}" if record and
             "k" in record else ""), ""] if question else [f"Gold: {code(gold)}", ""]
    table = list(TABLE_HEAD)
    for model in models:
        table.append(model_row(model_label(model, seed, paired), rows[model].get((split, problem_id)), record))
    return head + table + [""]


TABLE_HEAD = ("| model | answer | graded | trace, steps as graded | first wrong step |", "|---|---|---|---|---|")


def graded_text(row: dict) -> str:
    """The grader's verdict in words: correct, or wrong with its status; a finish other than a stop named."""
    text = "correct" if row["correct"] else f"wrong ({row.get('status', '?')})"
    if row.get("finish_reason") not in (None, "stop"):
        text += f", finish {row['finish_reason']}"
    return text


def model_row(label: str, row: dict | None, record: dict | None) -> str:
    """One markdown table row (TABLE_HEAD) for one model's completion of a problem."""
    if row is None:
        return f"| {cell(label)} | – | not evaluated on this problem | – | – |"
    marks = step_marks(record, str(row.get("prediction") or ""))
    return (f"| {cell(label)} | {cell(code(answer_of(row)))} | {cell(graded_text(row))} | {marked_trace(row, marks)} | "
            f"{first_wrong_text(marks)} |")


def uncertain_positions(logprobs, threshold: float = UNCERTAIN_P) -> list[int]:
    """Token positions whose teacher log-prob is below log(threshold)."""
    cut = math.log(threshold)
    return [i for i, value in enumerate(logprobs) if float(value) < cut]


def teacher_uncertainty_section(work: Path, profile) -> list[str]:
    """The teacher's training traces with the characters it was unsure of marked (p < UNCERTAIN_P): where
    its own sampling branched. Evaluation problems have no teacher log-probs (the traces file holds the
    training split only), so this is shown apart."""
    lines = ["### Where the teacher was uncertain (training traces)", ""]
    path = work / "traces" / "train.parquet"
    if not path.is_file():
        return lines + [f"Not shown: `{path}` (the teacher's traces with per-token log-probs) is absent.", ""]
    if profile.data.source != "toy":
        return lines + ["Not shown for this profile: marking characters needs the toy world's one-token-per-"
                        "character tokenizer; the per-token log-probs are in `traces/train.parquet`.", ""]
    import pandas as pd

    frame = pd.read_parquet(path, columns=["id", "text", "completion_ids", "teacher_logprobs"])
    frame = frame.assign(order=frame["id"].map(id_key)).sort_values("order", kind="stable")
    first = frame.drop_duplicates("id")
    tokens = sum(len(lp) for lp in frame["teacher_logprobs"])
    uncertain = sum(len(uncertain_positions(lp)) for lp in frame["teacher_logprobs"])
    shown = [r for r in first.itertuples() if uncertain_positions(r.teacher_logprobs)][:N_TEACHER_TRACES]
    lines += [f"{uncertain:,} of {tokens:,} completion tokens ({100 * uncertain / max(tokens, 1):.1f}%) of the "
              f"{len(frame):,} kept traces have a teacher probability below {UNCERTAIN_P:g}. Rule: the first "
              f"{N_TEACHER_TRACES} training problems by id whose first kept trace has such a token; `^` marks each "
              "uncertain character (the token at that position was sampled with p < "
              f"{UNCERTAIN_P:g}).", ""]
    for row in shown:
        lines += uncertainty_block(row.id, row.text, list(row.completion_ids), list(row.teacher_logprobs), path)
    return lines


def uncertainty_block(problem_id: str, text: str, ids: list[int], logprobs: list[float], path: Path) -> list[str]:
    # the toy tokenizer writes one token per character, plus the end-of-sequence token
    if len(ids) not in (len(text), len(text) + 1) or len(logprobs) != len(ids):
        raise ValueError(f"{path}: trace {problem_id}: {len(ids)} tokens and {len(logprobs)} log-probs for "
                         f"{len(text)} characters; the toy tokenizer has one token per character")
    positions = [i for i in uncertain_positions(logprobs) if i < len(text)]
    marker = "".join("^" if i in positions else " " for i in range(len(text))).rstrip()
    details = ", ".join(f"{text[i]!r} at {i} (p = {math.exp(logprobs[i]):.2f})" for i in positions)
    return [f"`{problem_id}`: {details}", "", "```", text, marker, "```", ""]
