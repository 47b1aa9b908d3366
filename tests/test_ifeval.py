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

HANDMADE = Path(__file__).parent / "data" / "ifeval_handmade.jsonl"

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


def test_instructions_needing_nltk_data_are_refused_before_generation():
    if ifeval._punkt_tab_available():  # checked here, not at collection: the vLLM venv has no nltk
        pytest.skip("nltk's punkt_tab data is installed here")
    golds = [_gold(["punctuation:no_comma"]), _gold(["length_constraints:number_sentences"],
                                                    [{"relation": "less than", "num_sentences": 3}])]
    with pytest.raises(RuntimeError, match="1 ifeval records .*'b'.*nltk.downloader punkt_tab"):
        ifeval.check_golds(golds, ["a", "b"])


class FixedBackend:
    """Answers each prompt with a fixed text; records the budget of every generate call."""

    def __init__(self, tokenizer, answers: dict[str, str]):
        self.tokenizer, self.answers, self.budgets = tokenizer, answers, []

    def generate(self, prompts, params, progress=False):
        self.budgets.append((len(prompts), params.max_new_tokens))
        out = []
        for index, prompt in enumerate(prompts):
            text = self.answers[self.tokenizer.decode(prompt)]
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(Generation(index, list(prompt), ids, text, [0.0] * len(ids), "stop"))
        return out


def test_evaluate_records_scores_each_task_with_its_scorer_and_budget(data_dir, monkeypatch):
    records = [{**r, "split": "ifeval", "task": "ifeval", "max_new_tokens": 1280}
               for r in benchmarks.load_benchmark("ifeval", data_dir=data_dir)[:4]]
    records += [{"id": "m1", "split": "gsm8k", "task": "math", "question": "Q:1+1\nA:", "gold": "2",
                 "max_new_tokens": 64}, {"id": "m2", "split": "gsm8k", "task": "math", "question": "Q:2+2\nA:",
                                         "gold": "4", "max_new_tokens": 64}]

    class Tokenizer:  # IFEval prompts are English: a byte-level stand-in for the toy's digit tokenizer
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(text.encode())}

        def decode(self, ids):
            return bytes(ids).decode()

    monkeypatch.setattr(evaluation, "encode_prompt", lambda tokenizer, question: tokenizer(question)["input_ids"])
    answers = {r["question"]: RESPONSES[r["id"]][0] if r["task"] == "ifeval" else
               {"m1": "\\boxed{2}", "m2": "\\boxed{5}"}[r["id"]] for r in records}
    backend = FixedBackend(Tokenizer(), answers)
    rows = evaluation.evaluate_records(backend, Tokenizer(), records, max_new_tokens=200)
    assert sorted(backend.budgets) == [(2, 64), (4, 1280)]  # each benchmark's own budget
    by_id = {r["id"]: r for r in rows}
    assert [by_id[i]["correct"] for i in (9001, 9002, 9003, 9004)] == [True, True, True, False]
    assert by_id[9004]["status"] == "not_followed" and by_id[9004]["prompt_loose"] is True
    assert (by_id["m1"]["correct"], by_id["m2"]["correct"], by_id["m1"]["status"]) == (True, False, "ok")
    metrics = evaluation.summarise(rows).set_index("split")
    assert metrics.loc["ifeval", "accuracy"] == pytest.approx(0.75)
    assert metrics.loc["ifeval", "prompt_level_loose"] == pytest.approx(1.0)
    assert metrics.loc["ifeval", "instruction_level_strict"] == pytest.approx(0.75)
    assert metrics.loc["gsm8k", "accuracy"] == pytest.approx(0.5)
    assert pd.isna(metrics.loc["gsm8k", "prompt_level_loose"])


def test_an_ifeval_prompt_beyond_the_context_counts_as_not_followed(data_dir):
    record = {**benchmarks.load_benchmark("ifeval", data_dir=data_dir)[4], "split": "ifeval", "task": "ifeval"}
    row = evaluation._unanswered(record)
    assert row == {"prompt_loose": False, "instructions_strict": [False, False], "instructions_loose": [False, False]}
    assert evaluation._unanswered({"task": "math"}) == {}


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
