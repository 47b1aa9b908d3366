"""IFEval: the declaration, the loader, lm-eval's checkers behind dcod.ifeval, and the evaluation stage.

The records in tests/data/ifeval_handmade.jsonl are written here in IFEval's format (the hub dataset
google/IFEval is not reachable offline); the expected verdicts below are worked out by hand from the
instructions, and lm-eval's own checkers must agree with them.
"""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dcod import benchmarks, evaluation, ifeval
from dcod.generation import Generation

HANDMADE = Path(__file__).parents[1] / "data" / "ifeval_handmade.jsonl"

# id -> (response, prompt-level strict, prompt-level loose, per-instruction strict)
RESPONSES = {
    9001: ("* The keeper wakes before dawn.\n* He polishes the great lens.\n* He logs the night's ships.",
           True, True, [True]),
    9002: ("sunlight holds every colour. the air scatters blue light much more than red light, so blue "
           "reaches your eyes from all over the sky.", True, True, [True]),
    9003: ("Bend one into a hook to fish a ring out of a drain or use it to press a tiny reset button.",
           True, True, [True]),
    # a chatty first line breaks strict JSON; loose drops the first line and accepts the rest
    9004: ('Here you go:\n{"boiling_point_celsius": 100}', False, True, [False]),
    # has "whiskers", lacks "garden"; ends with the phrase: one of two instructions followed
    9005: ("Dear neighbour, our grey cat with long white whiskers has been missing since Sunday. Thank you.",
           False, False, [False, True]),
    9006: ("How about Crumb and Crown? It sounds warm and a little royal, which suits a bakery that wants "
           "its loaves to feel special every single morning.", False, False, [False]),  # 25 words
    9007: ("<<Falling Gold>>\nThe maple lets its letters go\nand the wind reads every one.\n"
           "P.S. I wrote this on a rainy afternoon.", True, True, [True, True]),
    9008: ("My answer is yes.", True, True, [True]),
}


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "ifeval").mkdir()
    shutil.copy(HANDMADE, tmp_path / "ifeval" / "ifeval_input_data.jsonl")
    return tmp_path


def test_declaration_and_loader(data_dir):
    declaration = benchmarks.get_benchmark("ifeval")
    assert "ifeval" in benchmarks.list_benchmarks()
    assert (declaration.task, declaration.hub_id, declaration.generation.max_new_tokens) == ("ifeval", "google/IFEval",
                                                                                             1280)
    records = benchmarks.load_benchmark("ifeval", data_dir=data_dir)
    assert [r["id"] for r in records] == list(RESPONSES)
    first = records[0]
    assert first["prompt"] == first["question"]  # IFEval prompts go to the model as they are
    gold = ifeval.parse_gold(first["gold"], first["id"])
    assert gold == {"prompt": first["question"], "instruction_id_list": ["detectable_format:number_bullet_lists"],
                    "kwargs": [{"num_bullets": 3}]}


def test_lm_eval_checkers_give_the_hand_worked_verdicts(data_dir):
    records = benchmarks.load_benchmark("ifeval", data_dir=data_dir)
    ids = [r["id"] for r in records]
    ifeval.check_golds([r["gold"] for r in records], ids)
    results = ifeval.score([r["gold"] for r in records], [RESPONSES[i][0] for i in ids], ids)
    for record_id, result in zip(ids, results):
        _, strict, loose, per_instruction = RESPONSES[record_id]
        assert (result.prompt_strict, result.prompt_loose, result.instructions_strict) == \
            (strict, loose, per_instruction), record_id
    # the same answers with the instructions broken
    broken = {9002: "The sky is blue because air scatters blue light.", 9003: "Bend it, then use it.",
              9001: "* The keeper wakes.\n* He polishes the lens.", 9008: "Yes."}
    golds = {r["id"]: r["gold"] for r in records}
    assert not any(r.prompt_strict for r in ifeval.score([golds[i] for i in broken], list(broken.values())))


def _gold(instructions, kwargs=None, prompt="p") -> str:
    return json.dumps({"prompt": prompt, "instruction_id_list": instructions,
                       "kwargs": kwargs if kwargs is not None else [{} for _ in instructions]})


def test_bad_golds_are_refused_by_record():
    with pytest.raises(ValueError, match="record 'r7'.*unknown instruction 'format:haiku'"):
        ifeval.check_golds([_gold(["punctuation:no_comma"]), _gold(["format:haiku"])], ["r1", "r7"])
    with pytest.raises(ValueError, match="record 3: kwargs must be a list of 2 mappings"):
        ifeval.parse_gold(_gold(["punctuation:no_comma", "detectable_format:title"], [{}]), 3)
    with pytest.raises(ValueError, match="record 'x': gold is not a JSON object"):
        ifeval.parse_gold("{12", "x")
    with pytest.raises(ValueError, match="record 'y': gold needs the fields prompt, instruction_id_list and kwargs"):
        ifeval.parse_gold("12", "y")


def test_instructions_needing_nltk_data_are_refused_before_generation(monkeypatch):
    monkeypatch.setattr(ifeval, "_punkt_tab_available", lambda: False)  # as on a machine without the data
    golds = [_gold(["punctuation:no_comma"]), _gold(["length_constraints:number_sentences"],
                                                    [{"relation": "less than", "num_sentences": 3}])]
    with pytest.raises(RuntimeError, match="1 ifeval records .*'b'.*nltk.downloader punkt_tab"):
        ifeval.check_golds(golds, ["a", "b"])


class ByteTokenizer:
    """IFEval prompts are English: a byte-level stand-in for the toy's digit tokenizer."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text.encode())}

    def decode(self, ids, skip_special_tokens=False):
        return bytes(ids).decode()


class FixedBackend:
    """Answers each prompt with a fixed text (``default`` for prompts not in ``answers``); records the
    budget of every generate call."""

    def __init__(self, tokenizer, answers: dict[str, str], default: str | None = None):
        self.tokenizer, self.answers, self.default, self.budgets = tokenizer, answers, default, []

    def generate(self, prompts, params, progress=False):
        self.budgets.append((len(prompts), params.max_new_tokens))
        out = []
        for index, prompt in enumerate(prompts):
            question = self.tokenizer.decode(prompt)
            text = self.answers[question] if self.default is None else self.answers.get(question, self.default)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(Generation(index, list(prompt), ids, text, [0.0] * len(ids), "stop"))
        return out


def test_evaluate_records_scores_each_task_with_its_scorer_and_budget(data_dir, monkeypatch):
    records = [{**r, "split": "ifeval", "task": "ifeval", "max_new_tokens": 1280}
               for r in benchmarks.load_benchmark("ifeval", data_dir=data_dir)[:4]]
    records += [{"id": "m1", "split": "gsm8k", "task": "math", "question": "Q:1+1\nA:", "gold": "2",
                 "max_new_tokens": 64}, {"id": "m2", "split": "gsm8k", "task": "math", "question": "Q:2+2\nA:",
                                         "gold": "4", "max_new_tokens": 64}]

    monkeypatch.setattr(evaluation, "encode_prompt", lambda tokenizer, question: tokenizer(question)["input_ids"])
    answers = {r["question"]: RESPONSES[r["id"]][0] if r["task"] == "ifeval" else
               {"m1": "\\boxed{2}", "m2": "\\boxed{5}"}[r["id"]] for r in records}
    backend = FixedBackend(ByteTokenizer(), answers)
    rows = evaluation.evaluate_records(backend, ByteTokenizer(), records, max_new_tokens=200)
    assert sorted(backend.budgets) == [(2, 64), (4, 1280)]  # each benchmark's own budget
    by_id = {r["id"]: r for r in rows}
    assert [by_id[i]["correct"] for i in (9001, 9002, 9003, 9004)] == [True, True, True, False]
    assert by_id[9004]["status"] == "not_followed" and by_id[9004]["prompt_loose"] is True
    assert (by_id["m1"]["correct"], by_id["m2"]["correct"], by_id["m1"]["status"]) == (True, False, "ok")
    metrics = evaluation.summarise(rows).set_index("split")
    # float64 ratios of a few counts: approx's 1e-6 is rounding slack, far below one count (1/4)
    assert metrics.loc["ifeval", "accuracy"] == pytest.approx(0.75)
    assert metrics.loc["ifeval", "prompt_level_loose"] == pytest.approx(1.0)
    assert metrics.loc["ifeval", "instruction_level_strict"] == pytest.approx(0.75)
    assert metrics.loc["gsm8k", "accuracy"] == pytest.approx(0.5)
    assert pd.isna(metrics.loc["gsm8k", "prompt_level_loose"])


def test_an_ifeval_prompt_beyond_the_context_counts_as_not_followed(data_dir, monkeypatch):
    """A model whose context is shorter than the IFEval prompts: they are never generated, each counts as
    not followed at prompt and instruction level, and the short math prompt is still generated."""
    from types import SimpleNamespace

    records = [{**r, "split": "ifeval", "task": "ifeval"} for r in benchmarks.load_benchmark("ifeval",
                                                                                           data_dir=data_dir)[3:5]]
    records.append({"id": "m1", "split": "gsm8k", "task": "math", "question": "Q:1+1\nA:", "gold": "2"})

    monkeypatch.setattr(evaluation, "encode_prompt", lambda tokenizer, question: tokenizer(question)["input_ids"])
    backend = FixedBackend(ByteTokenizer(), {"Q:1+1\nA:": "\\boxed{2}"})
    backend.model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=40))  # IFEval prompts: > 100 bytes
    rows = evaluation.evaluate_records(backend, ByteTokenizer(), records, max_new_tokens=8)
    assert backend.budgets == [(1, 8)]  # only the math prompt reached the model
    assert [r["status"] for r in rows] == ["prompt_too_long", "prompt_too_long", "ok"]
    assert rows[1]["instructions_strict"] == [False, False]  # record 9005 has two instructions
    metrics = evaluation.summarise(rows).set_index("split")
    assert metrics.loc["ifeval", "prompt_too_long_count"] == 2 and metrics.loc["ifeval", "accuracy"] == 0
    assert metrics.loc["ifeval", "prompt_level_loose"] == 0 and metrics.loc["ifeval", "instruction_level_loose"] == 0
    assert metrics.loc["gsm8k", "accuracy"] == 1


def test_each_benchmark_generates_with_its_declared_budget_capped_by_the_profile():
    from dcod.config import load_profile
    from dcod.splits import generation_budgets

    from conftest import REPO

    paper = load_profile(REPO / "config" / "profiles" / "paper.yaml")
    budgets = generation_budgets(paper, paper.eval.splits)
    assert budgets == {"validation": 3072, "gsm8k": 2048, "math500": 3072, "aime24": 3072, "amc23": 3072,
                       "olympiadbench": 3072, "math": 3072, "ifeval": 1280}  # validation: eval.max_new_tokens
    paper.eval.max_new_tokens = 1500
    assert generation_budgets(paper, ["gsm8k", "ifeval", "validation", "not_a_benchmark"]) == {
        "gsm8k": 1500, "ifeval": 1280, "validation": 1500, "not_a_benchmark": 1500}


def test_declarations_are_checked():
    base = {"name": "x", "version": 1, "hub_id": "h", "split": "test", "question_field": "q", "gold_field": "a",
            "gold_normaliser": "identity", "metric": "math_verify_accuracy"}
    assert benchmarks.parse_declaration(base).task == "math"
    with pytest.raises(ValueError, match="metric 'bleu' is not one of"):
        benchmarks.parse_declaration({**base, "metric": "bleu"})
    with pytest.raises(ValueError, match="list of gold fields goes with gold_normaliser json_fields"):
        benchmarks.parse_declaration({**base, "gold_field": ["a", "b"]})
    with pytest.raises(ValueError, match="list of gold fields goes with gold_normaliser json_fields"):
        benchmarks.parse_declaration({**base, "gold_normaliser": "json_fields"})


@pytest.mark.realdata
def test_stage_evaluate_generates_each_split_with_its_budget(data_dir, tmp_path, monkeypatch):
    """The evaluation stage hands each benchmark's budget to the backend: GSM8K 2,048 and IFEval 1,280
    under a profile cap of 3,000, in the greedy pass and in the stability pass (GSM8K only: IFEval has no
    boxed answers to agree on); a recording backend stands in for the model."""
    from conftest import REPO, SHARED_DATA

    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"no GSM8K copy at {SHARED_DATA}")
    from dcod import pipeline
    from dcod.config import load_profile

    (data_dir / "gsm8k").symlink_to(SHARED_DATA / "gsm8k")
    monkeypatch.setenv("DCOD_DATA_DIR", str(data_dir))
    profile = load_profile(REPO / "config" / "profiles" / "smol.yaml")
    profile.data.eval = profile.eval.splits = ["gsm8k", "ifeval"]
    profile.data.eval_limit, profile.eval.max_new_tokens = 3, 3000
    profile.eval.stability_samples, profile.eval.stability_problems = 2, 4
    pipeline.stage_world(profile, tmp_path / "world")

    backend = FixedBackend(ByteTokenizer(), {}, default="My answer is yes.")
    monkeypatch.setattr(pipeline, "generation_backend", lambda *args, **kwargs: (backend, ByteTokenizer()))
    monkeypatch.setattr(evaluation, "encode_prompt", lambda tokenizer, question: tokenizer(question)["input_ids"])
    pipeline.stage_evaluate(profile, tmp_path / "world", str(tmp_path / "model"), tmp_path / "eval")
    assert sorted(backend.budgets) == [(3, 1280), (3, 2048), (3, 2048)]  # greedy ifeval, gsm8k; stability gsm8k
    assert set(pd.read_csv(tmp_path / "eval" / "stability.csv")["split"]) == {"gsm8k"}
    metrics = pd.read_csv(tmp_path / "eval" / "metrics.csv").set_index("split")
    assert metrics.loc["ifeval", "n"] == 3 and metrics.loc["gsm8k", "n"] == 3


def test_samples_carry_what_an_audit_of_a_grade_needs(monkeypatch):
    """Each math row names the question, the extracted answer, how it was found and the verdict's status."""
    records = [{"id": i, "split": "gsm8k", "task": "math", "question": f"Q:{i}\nA:", "gold": gold}
               for i, gold in (("boxed", "2"), ("fallback", "7"), ("none", "3"))]
    monkeypatch.setattr(evaluation, "encode_prompt", lambda tokenizer, question: tokenizer(question)["input_ids"])
    answers = {"Q:boxed\nA:": "so \\boxed{2}", "Q:fallback\nA:": "1+6=7", "Q:none\nA:": "no idea"}
    rows = {r["id"]: r for r in evaluation.evaluate_records(FixedBackend(ByteTokenizer(), answers), ByteTokenizer(),
                                                            records, max_new_tokens=16)}
    assert rows["boxed"]["question"] == "Q:boxed\nA:" and rows["boxed"]["prediction"] == "so \\boxed{2}"
    assert (rows["boxed"]["extracted"], rows["boxed"]["extraction"], rows["boxed"]["correct"]) == ("2", "boxed", True)
    assert (rows["fallback"]["extraction"], rows["fallback"]["correct"]) == ("last_expression", True)
    assert rows["none"]["extraction"] == "none" and rows["none"]["status"] == "no_answer"
    assert {"finish_reason", "status", "gold"} <= set(rows["none"])
