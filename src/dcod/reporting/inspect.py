"""``python -m dcod inspect``: one problem (or a filtered set) across every model and seed of a work folder.

Every evaluation keeps its greedy completions in ``<work>/eval/<model>[/seed<k>]/samples.jsonl``; this
reads all of them and shows, per problem, what each model wrote, its answer, the grader's verdict and (toy
world) each step's style and local correctness with the first wrong step (docs/toy_world.md). Output:
side by side for a terminal (its width from ``shutil.get_terminal_size``), markdown, HTML, or JSON.

Models are named ``<experiment>/seed<k>`` for runs, ``<reference>`` for a reference evaluated once
(``base_student/seed<k>`` when the profile pre-trains one per seed). In a filter a bare experiment name
stands for all its seeds. The step marks, answers and file readers are those of the report's trace
examples (``dcod.reporting.traces``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import textwrap
from pathlib import Path

from dcod.reporting.traces import (NO_BOX, TABLE_HEAD, answer_of, first_wrong_text, graded_text, id_key,
                                   model_row, read_records, read_sample_rows, short, step_marks)

NOTHING = "No problem matches."
MIN_COLUMN = 30  # characters: narrower side-by-side columns wrap a step over too many lines


# ----------------------------------------------------------------------------- reading
def discover(work: Path) -> dict[str, Path]:
    """label -> samples.jsonl of every evaluation of the work folder (references, then runs, by name)."""
    work = Path(work)
    if not work.is_dir():
        raise FileNotFoundError(f"work folder {work} does not exist (a finished run writes work/<profile>)")
    found = {}
    for path in sorted((work / "eval").glob("*/samples.jsonl")):
        found[path.parent.name] = path
    for path in sorted((work / "eval").glob("*/seed*/samples.jsonl"), key=lambda p: id_key(str(p))):
        found[f"{path.parent.parent.name}/{path.parent.name}"] = path
    if not found:
        raise FileNotFoundError(f"{work / 'eval'}: no samples.jsonl under eval/<model>/ or eval/<model>/seed<k>/")
    return found


def seed_of(label: str) -> str | None:
    match = re.fullmatch(r".*/seed(\d+)", label)
    return match.group(1) if match else None


def resolve(name: str, labels: list[str]) -> list[str]:
    """The labels a filter's model name stands for: itself, or every seed of a bare experiment name."""
    if name in labels:
        return [name]
    matched = [label for label in labels if label.split("/")[0] == name]
    if not matched:
        raise ValueError(f"unknown model {name!r}; the work folder has {', '.join(labels)}")
    return matched


# ----------------------------------------------------------------------------- selecting
def select(rows: dict[str, dict], ids: list[str], split: str | None, correct: list[str], incorrect: list[str],
           disagree: str | None) -> list[tuple[str, str]]:
    """(split, id) of the problems to show, in split then natural id order. ``rows``: label -> the
    ``read_sample_rows`` map of its samples."""
    labels = list(rows)
    problems = sorted({key for table in rows.values() for key in table}, key=lambda k: (k[0], id_key(k[1])))
    splits = sorted({s for s, _ in problems})
    if split is not None and split not in splits:
        raise ValueError(f"unknown split {split!r}; the samples have {', '.join(splits)}")
    if ids:
        known = {i for _, i in problems}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"unknown problem id(s) {', '.join(unknown)}: no samples.jsonl of the work folder has "
                             f"them (ids look like {', '.join(i for _, i in problems[:3])})")
        problems = [k for k in problems if k[1] in set(ids)]
    if split is not None:
        problems = [k for k in problems if k[0] == split]
    for name in correct:
        problems = [k for k in problems if _all(rows, resolve(name, labels), k, True)]
    for name in incorrect:
        problems = [k for k in problems if _all(rows, resolve(name, labels), k, False)]
    if disagree:
        pairs = _pairs(disagree, labels)
        problems = [k for k in problems if any(_differ(rows, a, b, k) for a, b in pairs)]
    return problems


def _all(rows, labels, key, value: bool) -> bool:
    """Every one of ``labels`` evaluated ``key`` and graded it ``value`` (correct or not)."""
    return all(key in rows[label] and bool(rows[label][key]["correct"]) == value for label in labels)


def _pairs(spec: str, labels: list[str]) -> list[tuple[str, str]]:
    """``A,B`` -> the label pairs to compare: the same seed of two runs, or a reference with every seed."""
    names = [n.strip() for n in spec.split(",")]
    if len(names) != 2 or not all(names):
        raise ValueError(f"--disagree takes two model names separated by a comma, got {spec!r}")
    first, second = (resolve(n, labels) for n in names)
    return [(a, b) for a in first for b in second
            if seed_of(a) is None or seed_of(b) is None or seed_of(a) == seed_of(b)]


def _differ(rows, a, b, key) -> bool:
    return key in rows[a] and key in rows[b] and bool(rows[a][key]["correct"]) != bool(rows[b][key]["correct"])


# ----------------------------------------------------------------------------- one record per problem
def problem_record(work: Path, key: tuple[str, str], rows: dict[str, dict], records: dict) -> dict:
    """Everything shown for one problem, as plain data (the --json output)."""
    split, problem_id = key
    if split not in records:
        records[split] = read_records(work, split) or {}
    record = records[split].get(problem_id)
    models = []
    for label, table in rows.items():
        row = table.get(key)
        if row is None:
            continue
        marks = step_marks(record, str(row.get("prediction") or ""))
        models.append({"model": label, "correct": bool(row["correct"]), "answer": answer_of(row),
                       "status": row.get("status"), "finish_reason": row.get("finish_reason"),
                       "prediction": row.get("prediction"), "steps": marks, "first_wrong": first_wrong_text(marks)})
    gold = next((table[key].get("gold") for table in rows.values() if key in table), None)
    return {"id": problem_id, "split": split, "question": record.get("question") if record else None,
            "gold": gold, "k": record.get("k") if record else None, "models": models, "_record": record}


# ----------------------------------------------------------------------------- rendering
def render_text(problems: list[dict], width: int) -> str:
    """Side by side: as many model columns per band as the width allows (at least MIN_COLUMN each)."""
    out = []
    for problem in problems:
        out.append("=" * width)
        out.append(f"{problem['id']} ({problem['split']})  gold: {problem['gold']}")
        if problem["question"]:
            out.append(f"question: {short(problem['question'])}")
        per_band = max(1, (width + 3) // (MIN_COLUMN + 3))
        models = problem["models"]
        for start in range(0, len(models), per_band):
            band = models[start:start + per_band]
            column = max(10, (width - 3 * (len(band) - 1)) // len(band))
            cells = [model_lines(m, column) for m in band]
            out.append("-" * width)
            for i in range(max(len(c) for c in cells)):
                out.append(" │ ".join((c[i] if i < len(c) else "").ljust(column) for c in cells).rstrip())
    return "\n".join(out) + "\n"


def model_lines(model: dict, width: int) -> list[str]:
    """One model's column: name, verdict, answer, then each step (✓/✗ style) or the wrapped text."""
    verdict = ("✓ " if model["correct"] else "✗ ") + graded_text(model)
    lines = [line for head in (model["model"], verdict, f"answer: {model['answer']}")
             for line in textwrap.wrap(head, width, subsequent_indent="  ")]
    if model["steps"] is not None:
        for step in model["steps"]:
            mark = "✓" if step["correct"] else "✗"
            first = " ← first wrong" if step["first_wrong"] else ""
            cut = "" if step["terminated"] else ", cut off"
            lines += textwrap.wrap(f"{mark} {step['text']} ({step['style']}{cut}{first})", width, subsequent_indent="  ")
    else:
        lines += textwrap.wrap(str(model["prediction"] or "(empty)"), width, replace_whitespace=True) or [""]
    return [line[:width] for line in lines]


def render_markdown(problems: list[dict]) -> str:
    lines = ["# dcod inspect", ""] + ([] if problems else [NOTHING, ""])
    for problem in problems:
        lines += [f"## `{problem['id']}` ({problem['split']})", "",
                  (f"Question: `{short(problem['question'])}` · " if problem["question"] else "")
                  + f"gold: `{problem['gold']}`", "", *TABLE_HEAD]
        lines += [model_row(m["model"], _row(m), problem["_record"]) for m in problem["models"]] + [""]
    return "\n".join(lines)


def render_html(problems: list[dict]) -> str:
    """One self-contained page: a table per problem, each step in code with its mark."""
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>dcod inspect</title><style>"
             "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
             ".wrong{color:#b00} .first{font-weight:bold;background:#fee} code{white-space:pre-wrap}"
             "</style></head><body><h1>dcod inspect</h1>" + ("" if problems else f"<p>{NOTHING}</p>")]
    for problem in problems:
        parts.append(f"<h2><code>{esc(problem['id'])}</code> ({esc(problem['split'])})</h2><p>")
        if problem["question"]:
            parts.append(f"Question: <code>{esc(str(problem['question']))}</code> · ")
        parts.append(f"gold: <code>{esc(str(problem['gold']))}</code></p><table><tr><th>model</th><th>answer</th>"
                     "<th>graded</th><th>trace, steps as graded</th><th>first wrong step</th></tr>")
        for m in problem["models"]:
            parts.append(f"<tr><td>{esc(m['model'])}</td><td><code>{esc(m['answer'])}</code></td>"
                         f"<td class='{'' if m['correct'] else 'wrong'}'>{esc(graded_text(_row(m)))}</td>"
                         f"<td>{_html_trace(m)}</td><td>{esc(m['first_wrong'])}</td></tr>")
        parts.append("</table>")
    return "".join(parts) + "</body></html>\n"


def _html_trace(model: dict) -> str:
    if model["steps"] is None:
        return f"<code>{html.escape(str(model['prediction'] or ''))}</code>"
    steps = []
    for step in model["steps"]:
        mark = "✓" if step["correct"] else "✗"
        cls = "first" if step["first_wrong"] else ("" if step["correct"] else "wrong")
        steps.append(f"<span class='{cls}'><code>{html.escape(step['text'])}</code> {step['style']} {mark}</span>")
    return " ".join(steps)


def _row(model: dict) -> dict:
    """A model entry back as a samples row (what the shared markdown helpers read)."""
    return {"correct": model["correct"], "status": model["status"], "finish_reason": model["finish_reason"],
            "prediction": model["prediction"], "extracted": model["answer"] if model["answer"] != NO_BOX else None}


# ----------------------------------------------------------------------------- the command
def inspect(args) -> str:
    """The rendered output of ``dcod inspect`` for parsed arguments (cli.py)."""
    work = Path(args.work)
    if work.name == "world.json":
        work = work.parent.parent
    paths = discover(work)
    if args.models:
        wanted = [label for name in args.models.split(",") for label in resolve(name.strip(), list(paths))]
        paths = {label: paths[label] for label in dict.fromkeys(wanted)}
    if args.seed is not None:
        paths = {label: path for label, path in paths.items() if seed_of(label) in (None, str(args.seed))}
    rows = {label: read_sample_rows(path) for label, path in paths.items()}
    keys = select(rows, args.ids, args.split, args.correct or [], args.incorrect or [], args.disagree)
    total = len(keys)
    if args.limit and not args.ids:
        keys = keys[:args.limit]
    records: dict = {}
    problems = [problem_record(work, key, rows, records) for key in keys]
    if args.json:
        return json.dumps([{k: v for k, v in p.items() if k != "_record"} for p in problems], indent=1) + "\n"
    if args.format == "md":
        return render_markdown(problems)
    if args.format == "html":
        return render_html(problems)
    width = args.width or shutil.get_terminal_size((120, 24)).columns
    shown = (f"{len(problems)} of {total} matching problems" + (" (--limit)" if len(problems) < total else "")
             if total else NOTHING)
    return render_text(problems, width) + shown + "\n"


def run(args) -> None:
    text = inspect(args)
    if args.out:
        from dcod.io import write_text

        write_text(Path(args.out), text)
        print(f"inspect: -> {args.out}")
    else:
        print(text, end="")
