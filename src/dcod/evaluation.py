"""Evaluation: greedy pass@1 per split, graded by math-verify (IFEval: lm-eval's instruction checkers),
plus trace analysis and stability.

Per-sample generations go to ``samples.jsonl`` (so any number can be recomputed or audited: each row has
the question, the full completion ``prediction``, the ``extracted`` answer the grader compared with the
``gold``, how it was found (``extraction``: boxed, last_expression, none), the verdict ``correct`` and its
``status`` (ok, timeout, no_answer, ...) and the ``finish_reason``) and per-split metrics to ``metrics.csv``. For the toy world each completion is also parsed into steps, so
the calibration report can give per-step error rates by style and the figures the style shift.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pandas as pd

from dcod import grading
from dcod.generation import SamplingParams
from dcod.ifeval import TASK as IFEVAL_TASK
from dcod.io import read_jsonl, write_csv, write_jsonl
from dcod.models import encode_prompt
from dcod.shards import run_sharded, shard_seed
from dcod.toy.world import analyze_completion, direct_at_branch


def _step_stats(record: dict, text: str) -> dict:
    """Step counts of one toy completion by style; ``steps_direct_branch`` / ``errors_direct_branch`` count
    the direct steps written where the two styles differ (a branch point, ``toy.world.direct_at_branch``):
    a step like ``85+4=89`` reads the same in both styles, so it shows no choice (docs/claims.md, "Direct
    steps"). A decomposed step always differs from its direct rendering, so the steps at branch points are
    ``steps_direct_branch + steps_decomposed``."""
    if record.get("task") != "arith":
        return {}
    steps = analyze_completion(record, text)
    stats = Counter(steps_direct_branch=0, errors_direct_branch=0)
    for step in steps:
        stats[f"steps_{step.style}"] += 1
        stats[f"errors_{step.style}"] += int(not step.correct)
        stats["steps_malformed"] += int(step.malformed)
        if step.style == "direct" and direct_at_branch(step.text):
            stats["steps_direct_branch"] += 1
            stats["errors_direct_branch"] += int(not step.correct)
    return dict(stats)


def step_hazard_counts(record: dict, text: str) -> tuple[list[int], list[int]] | None:
    """(at risk, errors) per step position of one sampled toy trace (docs/claims.md, "Claim (b)"): position j
    is at risk when steps 1..j−1 are all correct, and an error when step j is then wrong or missing. None
    for a record without graded steps (not the toy's arithmetic)."""
    if record.get("task") != "arith":
        return None
    steps = analyze_completion(record, text)
    at_risk, errors = [0] * len(record["ops"]), [0] * len(record["ops"])
    for j in range(len(record["ops"])):
        at_risk[j] = 1
        if j >= len(steps) or not steps[j].correct:
            errors[j] = 1
            break
    return at_risk, errors


def _context(backend) -> int | None:
    model = getattr(backend, "model", None)
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def _fitting(backend, prompts: list[list[int]]) -> list[int]:
    """Indices of the prompts that fit the model's context; the others are counted, never generated."""
    context = _context(backend)
    return [i for i, p in enumerate(prompts) if context is None or len(p) < context]


# ----------------------------------------------------------------------------- records
RECORD_KEYS = ("id", "question", "gold")  # what every evaluation record (a line of <world>/<split>.jsonl) holds


def _record_problem(record) -> str | None:
    """Why ``record`` cannot be evaluated, or None: without these keys the passes fail later with a bare
    KeyError, after the model has generated for every earlier record."""
    if not isinstance(record, dict):
        return f"is a JSON {type(record).__name__}, not an object"
    for key in RECORD_KEYS:
        if key not in record:
            return f"has no {key!r} key"
    for key in ("question", "gold"):
        if not isinstance(record[key], str) or not record[key].strip():
            return f"key {key!r} must be a non-empty string, got {record[key]!r:.80}"
    return None


def read_split(path) -> list[dict]:
    """The records of an evaluation split file, refused before anything is generated when a line lacks
    ``id``, ``question`` or ``gold`` (the error names the file, the 1-based line and the key)."""
    path = Path(path)
    records = read_jsonl(path)
    with open(path) as handle:  # read_jsonl skips blank lines: their numbers, for the error
        lines = [number for number, line in enumerate(handle, start=1) if line.strip()]
    for record, line in zip(records, lines):
        problem = _record_problem(record)
        if problem:
            raise ValueError(f"{path}: line {line}: evaluation record {problem}")
    return records


def check_records(records: list[dict], source: str) -> None:
    """The same check at each pass's entry, for records that did not come through ``read_split``; they
    also need the ``split`` the pipeline adds. Records are numbered from 1 and named by id."""
    for index, record in enumerate(records):
        problem = _record_problem(record) or (None if "split" in record else "has no 'split' key")
        if problem:
            name = f" (id {record['id']!r})" if isinstance(record, dict) and "id" in record else ""
            raise ValueError(f"{source}: record {index + 1}{name} {problem}")


def evaluate_records(backend, tokenizer, records: list[dict], *, max_new_tokens: int, timeout: float = 5.0,
                     workers: int = 1, seed: int = 0) -> list[dict]:
    """Greedy completions, scored by the record's task: math answers graded against the gold by
    math-verify, ``ifeval`` responses checked by lm-eval's IFEval checkers (``dcod.ifeval``). A record's
    own ``max_new_tokens`` (its benchmark's budget) overrides the default. A prompt that does not fit the
    model's context is not generated: it is kept as a wrong answer with status ``prompt_too_long`` and
    counted in the metrics."""
    check_records(records, "evaluate_records")
    prompts = [encode_prompt(tokenizer, r["question"]) for r in records]
    context = _context(backend)
    too_long = [context is not None and len(p) >= context for p in prompts]
    if any(too_long):
        kept = [i for i, bad in enumerate(too_long) if not bad]
        rows = evaluate_records(backend, tokenizer, [records[i] for i in kept], max_new_tokens=max_new_tokens,
                                timeout=timeout, workers=workers, seed=seed) if kept else []
        by_index = dict(zip(kept, rows))
        return [by_index.get(i) or {"id": r["id"], "split": r["split"], "task": r.get("task"), "k": r.get("k"),
                                    "question": r["question"], "gold": r["gold"], "prediction": "", "correct": False,
                                    "status": "prompt_too_long", **_unanswered(r), "finish_reason": "skipped",
                                    "num_tokens": 0}
                for i, r in enumerate(records)]
    generations = _generate_by_budget(backend, prompts, records, SamplingParams(
        max_new_tokens=max_new_tokens, temperature=0.0, seed=seed))
    scores = _score(records, [g.text for g in generations], timeout=timeout, workers=workers)
    rows = []
    for record, generation, score in zip(records, generations, scores):
        rows.append({"id": record["id"], "split": record["split"], "task": record.get("task"),
                     "k": record.get("k"), "question": record["question"], "gold": record["gold"],
                     "prediction": generation.text, **score,
                     "finish_reason": generation.finish_reason, "num_tokens": len(generation.token_ids),
                     **_step_stats(record, generation.text)})
    return rows


def _generate_by_budget(backend, prompts: list[list[int]], records: list[dict], params: SamplingParams):
    """``backend.generate`` once per distinct budget (a record's own ``max_new_tokens``, its benchmark's,
    else ``params.max_new_tokens``; one call in all for the toy world). The generations come back in
    prompt order with ``prompt_index`` pointing into ``prompts``, a prompt's samples in their order."""
    budgets = [r.get("max_new_tokens") or params.max_new_tokens for r in records]
    generations = []
    for budget in sorted(set(budgets)):
        indices = [i for i, b in enumerate(budgets) if b == budget]
        for generation in backend.generate([prompts[i] for i in indices], replace(params, max_new_tokens=budget),
                                           progress=True):
            generation.prompt_index = indices[generation.prompt_index]
            generations.append(generation)
    return sorted(generations, key=lambda g: g.prompt_index)  # stable: keeps each prompt's sample order


def _unanswered(record: dict) -> dict:
    """The extra verdicts of a record that was never generated: every IFEval instruction not followed."""
    if record.get("task") != IFEVAL_TASK:
        return {}
    from dcod import ifeval

    missed = [False] * len(ifeval.parse_gold(record["gold"], record["id"])["instruction_id_list"])
    return {"prompt_loose": False, "instructions_strict": missed, "instructions_loose": missed}


def _score(records: list[dict], texts: list[str], *, timeout: float, workers: int) -> list[dict]:
    """``correct`` and ``status`` per completion (plus lm-eval's loose and per-instruction verdicts for
    IFEval records), by the scorer of each record's task."""
    scores: list[dict] = [{} for _ in records]
    ifeval_rows = [i for i, r in enumerate(records) if r.get("task") == IFEVAL_TASK]
    math_rows = [i for i, r in enumerate(records) if r.get("task") != IFEVAL_TASK]
    if math_rows:
        graded = grading.grade([records[i]["gold"] for i in math_rows], [texts[i] for i in math_rows],
                               timeout=timeout, workers=workers)
        for i, result in zip(math_rows, graded):
            scores[i] = {"correct": bool(result.correct), "status": result.status, "extracted": result.extracted,
                         "extraction": _extraction(texts[i], result)}
    if ifeval_rows:
        from dcod import ifeval

        verdicts = ifeval.score([records[i]["gold"] for i in ifeval_rows], [texts[i] for i in ifeval_rows],
                                [records[i]["id"] for i in ifeval_rows])
        for i, verdict in zip(ifeval_rows, verdicts):
            scores[i] = {"correct": verdict.prompt_strict,
                         "status": "followed" if verdict.prompt_strict else "not_followed",
                         "prompt_loose": verdict.prompt_loose, "instructions_strict": verdict.instructions_strict,
                         "instructions_loose": verdict.instructions_loose}
    return scores


def _extraction(text: str, result) -> str:
    """How the graded answer was found, for an audit of ``samples.jsonl``: ``boxed`` (a ``\\boxed{}``, which
    math-verify reads first), ``last_expression`` (no box: math-verify's fallback match, e.g. the last number
    of the text, which can come from inside a truncated step) or ``none`` (nothing extracted)."""
    if result.extracted is None:
        return "none"
    return "boxed" if "\\boxed" in text else "last_expression"


def stability_rows(backend, tokenizer, records: list[dict], *, samples: int, temperature: float,
                   max_new_tokens: int, timeout: float, workers: int, seed: int) -> list[dict]:
    """k sampled completions per problem: answer agreement and malformed-output rate (trace stability).
    A record's own ``max_new_tokens`` (its benchmark's budget, as in the greedy pass) overrides the default.
    A prompt that does not fit the model's context is never generated (as in the greedy pass, which counts
    it as ``prompt_too_long``): its row has 0 samples, no agreement or malformed rate (left out of their
    means) and sample accuracy 0."""
    check_records(records, "stability_rows")
    prompts = [encode_prompt(tokenizer, r["question"]) for r in records]
    fits = _fitting(backend, prompts)
    generations = _generate_by_budget(backend, [prompts[i] for i in fits], [records[i] for i in fits],
                                      SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                                     n=samples, seed=seed + 1))
    graded = grading.grade([records[fits[g.prompt_index]]["gold"] for g in generations],
                           [g.text for g in generations], timeout=timeout, workers=workers) if fits else []
    by_problem: dict[int, list] = {}
    for generation, result in zip(generations, graded):
        by_problem.setdefault(fits[generation.prompt_index], []).append((generation, result))
    rows = []
    for index, record in enumerate(records):
        items = by_problem.get(index)
        if not items:  # beyond the context
            rows.append({"id": record["id"], "split": record["split"], "k": record.get("k"), "samples": 0,
                         "agreement": None, "malformed_rate": None, "sample_accuracy": 0.0,
                         "majority_accuracy": 0.0, "hazard_at_risk": "", "hazard_errors": ""})
            continue
        answers = [grading.last_boxed(g.text) for g, _ in items]
        counts = Counter(a for a in answers if a is not None)
        majority = counts.most_common(1)[0][1] if counts else 0
        # the majority vote's answer is correct when a trace giving it was graded correct (same answer)
        voted = counts.most_common(1)[0][0] if counts else None
        rows.append({"id": record["id"], "split": record["split"], "k": record.get("k"),
                     "samples": len(items), "agreement": majority / len(items),
                     "malformed_rate": sum(a is None or g.finish_reason != "stop" for (g, _), a in zip(items, answers))
                     / len(items),
                     "sample_accuracy": sum(r.correct for _, r in items) / len(items),
                     "majority_accuracy": float(any(r.correct for (_, r), a in zip(items, answers)
                                                    if voted is not None and a == voted)),
                     **_hazard_columns(record, [g.text for g, _ in items])})
    return rows


def _hazard_columns(record: dict, texts: list[str]) -> dict:
    """The step-hazard counts of a problem's sampled traces, summed per step position and ``;``-joined
    (``hazard_at_risk``, ``hazard_errors``); empty for records without graded steps."""
    counts = [step_hazard_counts(record, text) for text in texts]
    if not counts or counts[0] is None:
        return {"hazard_at_risk": "", "hazard_errors": ""}
    at_risk = [sum(c[0][j] for c in counts) for j in range(len(counts[0][0]))]
    errors = [sum(c[1][j] for c in counts) for j in range(len(counts[0][1]))]
    return {"hazard_at_risk": ";".join(map(str, at_risk)), "hazard_errors": ";".join(map(str, errors))}


def sampled_rows(backend, tokenizer, records: list[dict], *, k: int, temperature: float, top_p: float,
                 max_new_tokens: int, seed: int, timeout: float = 5.0, workers: int = 1) -> list[dict]:
    """avg@k: k sampled completions per problem, graded; one row per problem with its mean accuracy.
    A prompt that does not fit the model's context is kept with 0 samples (counted, never generated)."""
    check_records(records, "sampled_rows")
    prompts = [encode_prompt(tokenizer, r["question"]) for r in records]
    fits = _fitting(backend, prompts)
    generations = backend.generate([prompts[i] for i in fits], SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=k, seed=seed), progress=True)
    graded = grading.grade([records[fits[g.prompt_index]]["gold"] for g in generations],
                           [g.text for g in generations], timeout=timeout, workers=workers) if fits else []
    correct: dict[int, list[bool]] = {i: [] for i in range(len(records))}
    for generation, result in zip(generations, graded):
        correct[fits[generation.prompt_index]].append(bool(result.correct))
    return [{"id": r["id"], "split": r["split"], "samples": len(correct[i]),
             "sample_accuracy": sum(correct[i]) / len(correct[i]) if correct[i] else 0.0}
            for i, r in enumerate(records)]


# ----------------------------------------------------------------------------- passes over a split set
def stability_pass(backend, tokenizer, records: list[dict], ev, *, skip_split: str, folder: Path,
                   fingerprint: dict, seed: int) -> list[dict]:
    """The trace-stability rows (``ev``: the profile's EvalConfig): ``ev.stability_samples`` samples for
    half of ``ev.stability_problems`` from each of the first two evaluation splits other than
    ``skip_split`` (the tuning split), math splits only (agreement compares boxed answers, which IFEval
    responses do not have). Resumable shards in ``folder``."""
    math_splits = {r["split"] for r in records if r.get("task") != IFEVAL_TASK}
    test_splits = [s for s in ev.splits if s != skip_split and s in math_splits][:2]
    subset = []
    for index, split in enumerate(test_splits):
        # an even share each, the first split taking the remainder: 100 over two splits is 50 + 50, and
        # 1 problem is 1 + 0 (an integer split alone would give 0 + 0: an empty table, silently)
        share = ev.stability_problems // len(test_splits) + (index < ev.stability_problems % len(test_splits))
        subset += [r for r in records if r["split"] == split][:share]
    return run_sharded(
        folder, fingerprint, subset, ev.shard_size, desc="stability",
        work=lambda shard, problems: stability_rows(
            backend, tokenizer, problems, samples=ev.stability_samples, temperature=ev.stability_temperature,
            max_new_tokens=ev.max_new_tokens, timeout=5.0, workers=1, seed=shard_seed(seed, shard)))


def sampled_pass(backend, tokenizer, records: list[dict], settings: dict, budgets: dict[str, int], *,
                 shard_size: int, out_dir: Path, fingerprint: dict, seed: int) -> list[dict]:
    """avg@k rows of every split with sampled ``settings`` (``dcod.splits.sampled_settings``), each
    within its split's generation budget; resumable shards in ``out_dir/.shards-sampled-<split>``."""
    rows = []
    for split, sampled in settings.items():
        rows += run_sharded(
            Path(out_dir) / f".shards-sampled-{split}", fingerprint, [r for r in records if r["split"] == split],
            shard_size, desc=f"avg@{sampled.k} {split}",
            work=lambda shard, problems, s=sampled, budget=budgets[split]: sampled_rows(
                backend, tokenizer, problems, k=s.k, temperature=s.temperature, top_p=s.top_p,
                max_new_tokens=budget, seed=shard_seed(seed + 2, shard)))
    return rows


def _standard_error(values: pd.Series) -> float:
    """Standard error of a mean over problems (sample std / sqrt(n)); NaN for fewer than 2 problems."""
    return float(values.std(ddof=1) / len(values) ** 0.5) if len(values) > 1 else float("nan")


def summarise_sampled(rows: list[dict]) -> pd.DataFrame:
    """Per split: avg@k (mean over problems of the per-problem sample accuracy) and its standard error."""
    frame = pd.DataFrame(rows, columns=["id", "split", "samples", "sample_accuracy"])
    return pd.DataFrame([{"split": split, "avg_at_k": group["sample_accuracy"].mean(),
                          "avg_at_k_stderr": _standard_error(group["sample_accuracy"]),
                          "avg_at_k_samples": int(group["samples"].max())}
                         for split, group in frame.groupby("split", sort=False)],
                        columns=["split", "avg_at_k", "avg_at_k_stderr", "avg_at_k_samples"])


def summarise(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    out = []
    for split, group in frame.groupby("split", sort=False):
        record = {"split": split, "n": len(group), "accuracy": group["correct"].mean(),
                  "accuracy_stderr": _standard_error(group["correct"].astype(float)),
                  "no_answer_rate": (group["status"] == "no_answer").mean(),
                  "timeout_count": int((group["status"] == "timeout").sum()),
                  "prompt_too_long_count": int((group["status"] == "prompt_too_long").sum()),
                  "truncated_rate": (group["finish_reason"] == "length").mean(),
                  "mean_tokens": group["num_tokens"].mean()}
        for style in ("direct", "decomposed"):
            if f"steps_{style}" in group:
                steps = group[f"steps_{style}"].fillna(0).sum()
                record[f"steps_{style}"] = int(steps)
                record[f"step_error_rate_{style}"] = group[f"errors_{style}"].fillna(0).sum() / steps if steps else None
        if "prompt_loose" in group and group["prompt_loose"].notna().any():  # IFEval: lm-eval's other metrics
            record["prompt_level_loose"] = group["prompt_loose"].astype(float).mean()
            for kind in ("strict", "loose"):
                verdicts = [v for cell in group[f"instructions_{kind}"] for v in cell]
                record[f"instruction_level_{kind}"] = sum(verdicts) / len(verdicts) if verdicts else None
        if "steps_direct" in record:
            total = record["steps_direct"] + record.get("steps_decomposed", 0)
            record["direct_step_fraction"] = record["steps_direct"] / total if total else None
        if "steps_direct_branch" in group:  # docs/claims.md, "Direct steps": only where the styles differ
            branch = int(group["steps_direct_branch"].fillna(0).sum())
            at_branch = branch + record.get("steps_decomposed", 0)
            record["steps_direct_branch"] = branch
            record["errors_direct_branch"] = int(group["errors_direct_branch"].fillna(0).sum())
            record["direct_branch_fraction"] = branch / at_branch if at_branch else None
        out.append(record)
    return pd.DataFrame(out)


def write_results(out_dir: Path, rows: list[dict], stability: list[dict], info: dict,
                  sampled: list[dict] | None = None) -> None:
    """samples.jsonl, stability.csv and metrics.csv; with ``sampled`` (avg@k rows) also sampled.csv and
    the avg@k columns of metrics.csv for the splits that have them."""
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "samples.jsonl", rows)
    columns = ["id", "split", "k", "samples", "agreement", "malformed_rate", "sample_accuracy", "majority_accuracy",
               "hazard_at_risk", "hazard_errors"]
    write_csv(out_dir / "stability.csv", pd.DataFrame(stability, columns=columns))  # header only when off
    metrics = summarise(rows)
    if sampled:
        write_csv(out_dir / "sampled.csv", pd.DataFrame(sampled))
        metrics = metrics.merge(summarise_sampled(sampled), on="split", how="left")
    for key, value in info.items():
        metrics[key] = value
    write_csv(out_dir / "metrics.csv", metrics)
