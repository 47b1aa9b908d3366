"""Declarative benchmarks: one YAML per benchmark under ``dcod/benchmarks/``, loaded as records.

A declaration says where the data lives (hub dataset id, configs, split, revision, and a path under a local
data directory for machines that cannot reach the hub), which fields hold the id, question and gold,
how the gold is normalised into the text the grader wraps as ``$gold$``, the prompt template, the
generation settings and the metric. Unknown keys are errors that name the key.

``load_benchmark(name)`` returns ``[{id, question, gold, prompt}]``. It reads the local JSONL when a
data directory is given (argument or ``DCOD_DATA_DIR``) and the hub otherwise. A row without a declared
field, an empty question or gold, or a gold its normaliser refuses (a GSM8K answer that is not a number)
is an error naming the file, the 1-based line (hub: dataset and row) and the field; a math gold that
math-verify cannot parse is kept and reported (a warning with the same coordinates).

Gold normalisers (``GOLD_NORMALISERS``):

- ``identity``: the field as text. AIME golds stay strings such as ``"025"``: math-verify parses
  ``025`` and ``25`` to the same integer, so no zero-stripping is needed (tests check it).
- ``gsm8k_hash``: the text after the last ``####`` with thousands commas removed (``1,000`` -> ``1000``).
- ``float_to_str``: AMC golds are floats; integral ones lose the ``.0`` (``27.0`` -> ``27``).
- ``last_boxed``: the last ``\\boxed{...}`` of a MATH solution (MATH has no answer field).
- ``join_list``: OlympiadBench golds are lists of ``$...$`` strings. Every ``$`` delimiter is removed
  and elements are joined with ``", "``, so ``["$69$,$84$"]`` becomes ``69,84``, which math-verify
  parses as the set {69, 84}: several answers grade as a set, order free, all required.
- ``json_fields``: for a ``gold_field`` that lists several fields (IFEval: prompt, instruction ids and
  their arguments), a JSON object of those fields with sorted keys.

The metric decides how a completion is scored (``METRICS``): ``math_verify_accuracy`` by the math
grader (``dcod.grading``), ``ifeval_prompt_level_strict`` by lm-eval's IFEval checkers (``dcod.ifeval``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from dcod.io import parse_yaml

PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")
DEFAULT_PROMPT_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
PROMPT_PLACEHOLDER = "{question}"


def _identity(value) -> str:
    return str(value).strip()


def _gsm8k_hash(value) -> str:
    if "####" not in str(value):
        raise ValueError("no '#### <answer>' line")
    answer = str(value).rsplit("####", 1)[1].strip().replace(",", "")
    if not PLAIN_NUMBER.fullmatch(answer):  # GSM8K answers are numbers: 'twelve' is a broken row
        raise ValueError(f"the answer after '####' is not a number: {answer!r}")
    return answer


def _float_to_str(value) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return str(int(number)) if number.is_integer() else repr(number)


def _last_boxed(value) -> str:
    from dcod.grading import last_boxed  # the grader's brace-balanced scanner

    boxed = last_boxed(str(value))
    if boxed is None:
        raise ValueError("no complete \\boxed{...} in the solution")
    return boxed.strip()


def _join_list(value) -> str:
    elements = value if isinstance(value, (list, tuple)) else [value]
    answers = [_strip_dollars(str(element)).strip() for element in elements]
    return ", ".join(answer for answer in answers if answer)


def _strip_dollars(text: str) -> str:
    """Remove math-mode ``$`` delimiters, keeping escaped ``\\$`` (a currency sign)."""
    return "".join(char for i, char in enumerate(text) if char != "$" or (i > 0 and text[i - 1] == "\\"))


def _json_fields(value) -> str:
    if not isinstance(value, dict):
        raise ValueError("json_fields needs a gold_field that lists several fields")
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


GOLD_NORMALISERS = {
    "identity": _identity,
    "gsm8k_hash": _gsm8k_hash,
    "float_to_str": _float_to_str,
    "last_boxed": _last_boxed,
    "join_list": _join_list,
    "json_fields": _json_fields,
}
# metric -> the record's task, which picks the scorer in dcod.evaluation
METRICS = {"math_verify_accuracy": "math", "ifeval_prompt_level_strict": "ifeval"}
# the claim roles a split can declare (docs/claims.md): (a) in-distribution and hard accuracy, (c) retention
CLAIM_ROLES = ("in_distribution", "hard", "retention")


@dataclass(frozen=True)
class SampledGeneration:
    """avg@k: k samples per question at this temperature and top-p; the score is their mean accuracy."""

    temperature: float
    top_p: float
    k: int


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    greedy: bool = True  # pass@1 with greedy decoding
    sampled: SampledGeneration | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    version: int
    hub_id: str
    split: str
    question_field: str
    gold_field: str | list[str]  # several fields: the normaliser gets {field: value} (json_fields)
    gold_normaliser: str
    metric: str
    hub_configs: list[str] | None = None  # several configs are concatenated in this order
    local_path: str | None = None  # relative to the local data directory; None: hub only
    id_field: str | None = None  # None: the running index ("config/index" with several configs)
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    generation: GenerationSettings | None = None  # None for training-prompt sources
    description: str = ""
    # the hub dataset's commit sha or tag, passed to datasets.load_dataset; None: the hub's latest
    # (docs/paper_setting.md, "Pinned versions")
    revision: str | None = None
    # the claim of docs/claims.md this split serves (CLAIM_ROLES; None: none) and, among the splits of one
    # role in a table, its precedence (the lowest present one is judged)
    claim_role: str | None = None
    claim_rank: int = 0

    @property
    def task(self) -> str:
        """What a record of this benchmark is: ``math`` (math-verify) or ``ifeval`` (instruction checkers)."""
        return METRICS[self.metric]

    @property
    def gold_fields(self) -> list[str]:
        return list(self.gold_field) if isinstance(self.gold_field, list) else [self.gold_field]


def _check_keys(cls, mapping: dict, where: str) -> None:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    known = {field.name for field in dataclasses.fields(cls)}
    for key in mapping:
        if key not in known:
            raise ValueError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(known))})")


def parse_declaration(mapping: dict, where: str = "benchmark") -> Benchmark:
    """Validate a declaration mapping (from YAML) into a Benchmark; errors name the key."""
    _check_keys(Benchmark, mapping, where)
    mapping = dict(mapping)
    generation = mapping.get("generation")
    if generation is not None:
        _check_keys(GenerationSettings, generation, f"{where}: generation")
        generation = dict(generation)
        if generation.get("sampled") is not None:
            _check_keys(SampledGeneration, generation["sampled"], f"{where}: generation.sampled")
            generation["sampled"] = SampledGeneration(**generation["sampled"])
        mapping["generation"] = GenerationSettings(**generation)
    try:
        benchmark = Benchmark(**mapping)
    except TypeError as error:  # a required key is missing
        raise ValueError(f"{where}: {error}") from None
    if benchmark.gold_normaliser not in GOLD_NORMALISERS:
        raise ValueError(f"{where}: gold_normaliser '{benchmark.gold_normaliser}' is not one of "
                         f"{', '.join(GOLD_NORMALISERS)}")
    if benchmark.metric not in METRICS:
        raise ValueError(f"{where}: metric '{benchmark.metric}' is not one of {', '.join(METRICS)}")
    if isinstance(benchmark.gold_field, list) != (benchmark.gold_normaliser == "json_fields"):
        raise ValueError(f"{where}: a list of gold fields goes with gold_normaliser json_fields, and only with it")
    if benchmark.claim_role is not None and benchmark.claim_role not in CLAIM_ROLES:
        raise ValueError(f"{where}: claim_role '{benchmark.claim_role}' is not one of {', '.join(CLAIM_ROLES)}")
    if PROMPT_PLACEHOLDER not in benchmark.prompt_template:
        raise ValueError(f"{where}: prompt_template has no {PROMPT_PLACEHOLDER} placeholder")
    return benchmark


def _declaration_files() -> dict[str, object]:
    folder = resources.files("dcod").joinpath("benchmarks")
    return {entry.name.removesuffix(".yaml"): entry for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def list_benchmarks() -> list[str]:
    return sorted(_declaration_files())


def get_benchmark(name: str) -> Benchmark:
    files = _declaration_files()
    if name not in files:
        raise ValueError(f"unknown benchmark '{name}'; known: {', '.join(sorted(files))}")
    try:
        mapping = parse_yaml(files[name].read_text(encoding="utf-8"), f"{name}.yaml")
    except yaml.YAMLError as error:
        raise ValueError(f"{name}.yaml is not valid YAML: {error}") from None
    benchmark = parse_declaration(mapping, f"{name}.yaml")
    if benchmark.name != name:
        raise ValueError(f"{name}.yaml declares name '{benchmark.name}'")
    return benchmark


def format_prompt(benchmark: Benchmark, question: str) -> str:
    # Plain replacement, not str.format: templates hold LaTeX braces such as \boxed{}.
    return benchmark.prompt_template.replace(PROMPT_PLACEHOLDER, question)


def _read_local(benchmark: Benchmark, data_dir: Path) -> list[tuple[object, dict, str]]:
    """(fallback id, row, where) triples; the fallback id is the row index, ``where`` the file and its
    1-based line, for errors."""
    if benchmark.local_path is None:
        raise FileNotFoundError(f"benchmark '{benchmark.name}' has no local copy (local_path: null); "
                                f"unset DCOD_DATA_DIR / data_dir to read {benchmark.hub_id} from the hub")
    path = Path(data_dir) / benchmark.local_path
    if not path.is_file():
        raise FileNotFoundError(f"benchmark '{benchmark.name}': local file {path} does not exist (the local copy "
                                f"comes from DCOD_DATA_DIR or data.data_dir; unset both to read {benchmark.hub_id} "
                                "from the hub)")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {line_number} is not valid JSON: {error}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}: line {line_number} is a JSON {type(row).__name__}, "
                                     f"not an object")
                rows.append((len(rows), row, f"{path}: line {line_number}"))
    return rows


def _read_hub(benchmark: Benchmark) -> list[tuple[object, dict, str]]:
    """(fallback id, row, where) triples; the fallback id is the row index, "config/index" with several
    configs; ``where`` names the dataset, its config and the 1-based row, for errors."""
    import datasets

    configs = benchmark.hub_configs or [None]
    rows = []
    for config in configs:
        dataset = datasets.load_dataset(benchmark.hub_id, config, split=benchmark.split, revision=benchmark.revision)
        pinned = f"@{benchmark.revision}" if benchmark.revision else ""
        source = f"{benchmark.hub_id}{pinned}{f' ({config})' if config else ''} split {benchmark.split}"
        rows.extend((f"{config}/{index}" if len(configs) > 1 else index, dict(row),
                     f"{source}: row {index + 1}") for index, row in enumerate(dataset))
    return rows


def _report_unparseable_golds(benchmark: Benchmark, records: list[dict], wheres: list[str]) -> int:
    """Count (and warn about, naming file, line and field) the math golds from which math-verify gets no
    sympy expression: the grader marks them ``unparseable_gold``, wrong for every model. They are kept,
    not refused: two OlympiadBench golds are such (tests/evaluation/test_benchmarks.py), and MATH's golds are LaTeX,
    so "not a number" is no criterion. Plain numbers skip math-verify (most golds; it costs ~10 ms each)."""
    suspects = [i for i, record in enumerate(records) if not PLAIN_NUMBER.fullmatch(record["gold"])]
    if not suspects:
        return 0
    from dcod.grading import _parse_gold, prepare_gold  # the grader's own rule 6 (dcod.grading)

    logger = logging.getLogger("math_verify")  # its "timeout disabled" notice: the grader silences it too
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        bad = [i for i in suspects if not _parse_gold(prepare_gold(records[i]["gold"]))]
    finally:
        logger.setLevel(level)
    if bad:
        listed = "; ".join(f"{wheres[i]} field '{benchmark.gold_field}' gold {records[i]['gold']!r}"
                           for i in bad[:5])
        warnings.warn(f"benchmark '{benchmark.name}': {len(bad)} gold(s) unparseable by math-verify, graded "
                      f"wrong for every model: {listed}{' ...' if len(bad) > 5 else ''}", stacklevel=3)
    return len(bad)


def load_benchmark(name: str, *, data_dir: str | os.PathLike | None = None,
                   limit: int | None = None) -> list[dict]:
    """Records ``{id, question, gold, prompt}`` of a benchmark, from a local directory or the hub."""
    benchmark = get_benchmark(name)
    data_dir = data_dir if data_dir is not None else os.environ.get("DCOD_DATA_DIR") or None
    rows = _read_local(benchmark, Path(data_dir)) if data_dir is not None else _read_hub(benchmark)
    normalise = GOLD_NORMALISERS[benchmark.gold_normaliser]
    records, wheres = [], []
    for fallback_id, row, where in rows[:limit] if limit is not None else rows:
        for field in (benchmark.question_field, *benchmark.gold_fields, benchmark.id_field):
            if field is not None and field not in row:
                raise ValueError(f"benchmark '{name}': {where} has no field '{field}'")
            if field is not None and row[field] is None:  # str(None) would be a question or gold "None"
                raise ValueError(f"benchmark '{name}': {where} field '{field}' is null")
        record_id = row[benchmark.id_field] if benchmark.id_field is not None else fallback_id
        gold_value = ({field: row[field] for field in benchmark.gold_fields}
                      if isinstance(benchmark.gold_field, list) else row[benchmark.gold_field])
        try:
            gold = normalise(gold_value)
        except (ValueError, TypeError) as error:
            raise ValueError(f"benchmark '{name}': {where} field '{benchmark.gold_field}': "
                             f"{benchmark.gold_normaliser} failed: {error}") from None
        if not gold.strip():  # graded wrong for every model, silently: never a real gold
            raise ValueError(f"benchmark '{name}': {where} field '{benchmark.gold_field}': empty gold "
                             f"(from {gold_value!r:.80})")
        question = str(row[benchmark.question_field])
        if not question.strip():
            raise ValueError(f"benchmark '{name}': {where} field '{benchmark.question_field}': empty question")
        records.append({"id": record_id, "question": question, "gold": gold,
                        "prompt": format_prompt(benchmark, question)})
        wheres.append(where)
    if benchmark.task == "math":
        _report_unparseable_golds(benchmark, records, wheres)
    return records
