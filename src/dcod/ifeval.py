"""IFEval scoring with lm-evaluation-harness's own instruction checkers (the paper profile's retention column).

IFEval (Zhou et al., 2023) asks for verifiable instructions ("no commas", "answer in JSON", "at least
300 words"); a response is checked by code, not by a judge. We generate the responses with the
evaluation stage's own backend (``hf`` or ``vllm``, the model's chat template, greedy) and score them
with ``lm_eval.tasks.ifeval.utils.process_results`` from ``lm-eval==0.4.13`` (``pip install -e .[ifeval]``),
so the numbers are lm-eval's ``ifeval`` task's numbers for the same responses.

A record's gold is a JSON object ``{"prompt", "instruction_id_list", "kwargs"}`` (the IFEval fields;
``dcod.benchmarks`` builds it with the ``json_fields`` normaliser). Per response we keep the four
metrics of lm-eval's task: prompt-level strict (every instruction followed; the headline number, in the
``correct`` column), prompt-level loose (also accepted after dropping the first/last line or ``*``),
and the per-instruction strict and loose lists.

Two instructions count sentences or words with nltk's ``punkt_tab`` data, which lm-eval tries to
download when it is imported. Offline that download fails, and those two checks would raise inside
the scorer; ``check_golds`` refuses such records before any generation, naming the fix.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
from dataclasses import dataclass

TASK = "ifeval"
LM_EVAL_VERSION = "0.4.13"
# instructions whose checker tokenises with nltk's punkt_tab data (lm_eval/tasks/ifeval/instructions.py)
NLTK_DATA_INSTRUCTIONS = frozenset({"length_constraints:number_sentences", "change_case:capital_word_frequency"})
INSTALL_HINT = "pip install -e '.[ifeval]' (lm-eval[ifeval]==0.4.13)"


@dataclass(frozen=True)
class IFEvalResult:
    prompt_strict: bool
    prompt_loose: bool
    instructions_strict: list[bool]
    instructions_loose: list[bool]


@functools.cache
def _lm_eval_ifeval():
    """lm-eval's IFEval modules. Importing them costs ~3 s, and lm-eval then tries to download nltk's
    punkt_tab when it is missing, printing "Downloaded punkt_tab" even when that failed: its output is
    swallowed and replaced by one true line. langdetect (the language and case checkers) is seeded, or
    its verdict on a short or mixed text may change from one run to the next."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            from lm_eval.tasks.ifeval import instructions_registry, utils
    except ImportError as error:
        raise ImportError(f"the ifeval benchmark is scored by lm-evaluation-harness, which is not installed "
                          f"({error}); install it with: {INSTALL_HINT}") from None
    import langdetect

    langdetect.DetectorFactory.seed = 0
    if not _punkt_tab_available():
        print(f"ifeval: nltk's punkt_tab data is not installed (lm-eval's download did not work); "
              f"{', '.join(sorted(NLTK_DATA_INSTRUCTIONS))} cannot be scored", file=sys.stderr)
    return instructions_registry, utils


def parse_gold(gold: str, record_id=None) -> dict:
    """The IFEval fields of a gold, validated: instruction ids are strings, one kwargs mapping each."""
    where = f"ifeval record {record_id!r}" if record_id is not None else "ifeval gold"
    try:
        doc = json.loads(gold)
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: gold is not a JSON object of IFEval fields: {error}") from None
    if not isinstance(doc, dict) or not {"prompt", "instruction_id_list", "kwargs"} <= set(doc):
        raise ValueError(f"{where}: gold needs the fields prompt, instruction_id_list and kwargs")
    ids, kwargs = doc["instruction_id_list"], doc["kwargs"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
        raise ValueError(f"{where}: instruction_id_list must be a non-empty list of strings, got {ids!r}")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError(f"{where}: kwargs must be a list of {len(ids)} mappings (one per instruction)")
    return doc


def _punkt_tab_available() -> bool:
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return False
    return True


def check_golds(golds: list[str], ids: list | None = None) -> None:
    """Fail before generation on what the scorer could not score: a malformed gold, an instruction
    lm-eval does not know, lm-eval missing, or an nltk-data instruction without the nltk data."""
    registry, _ = _lm_eval_ifeval()
    ids = ids if ids is not None else list(range(len(golds)))
    needs_nltk = []
    for record_id, gold in zip(ids, golds):
        for instruction in parse_gold(gold, record_id)["instruction_id_list"]:
            if instruction not in registry.INSTRUCTION_DICT:
                raise ValueError(f"ifeval record {record_id!r}: unknown instruction {instruction!r} "
                                 f"(lm-eval {LM_EVAL_VERSION} knows {len(registry.INSTRUCTION_DICT)})")
            if instruction in NLTK_DATA_INSTRUCTIONS:
                needs_nltk.append(record_id)
    if needs_nltk and not _punkt_tab_available():
        raise RuntimeError(f"{len(needs_nltk)} ifeval records (first: {needs_nltk[0]!r}) use instructions that "
                           f"need nltk's punkt_tab data ({', '.join(sorted(NLTK_DATA_INSTRUCTIONS))}), which is not "
                           f"installed: run `python -m nltk.downloader punkt_tab` on a machine with network access "
                           f"(or point NLTK_DATA at a copy)")


def scorer_info() -> dict:
    """What scored the IFEval records (written to grader.json beside the results)."""
    import importlib.metadata

    return {"scorer": "lm_eval.tasks.ifeval.utils.process_results",
            "lm_eval_version": importlib.metadata.version("lm_eval"),
            "headline": "prompt_level_strict_acc (the correct column)",
            "also": "prompt_level_loose_acc, inst_level_strict_acc, inst_level_loose_acc (metrics.csv)",
            "langdetect_seed": 0}


def score(golds: list[str], responses: list[str], ids: list | None = None) -> list[IFEvalResult]:
    """lm-eval's IFEval verdicts for each (gold, response) pair."""
    _, utils = _lm_eval_ifeval()
    ids = ids if ids is not None else list(range(len(golds)))
    results = []
    for record_id, gold, response in zip(ids, golds, responses, strict=True):
        doc = parse_gold(gold, record_id)
        # lm-eval's process_results also reads doc["key"], which it never uses for scoring
        verdict = utils.process_results({**doc, "key": record_id}, [response])
        results.append(IFEvalResult(prompt_strict=bool(verdict["prompt_level_strict_acc"]),
                                    prompt_loose=bool(verdict["prompt_level_loose_acc"]),
                                    instructions_strict=[bool(v) for v in verdict["inst_level_strict_acc"]],
                                    instructions_loose=[bool(v) for v in verdict["inst_level_loose_acc"]]))
    return results
