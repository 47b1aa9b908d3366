"""Toy world: generator, renderings, splits, analysis, and the character tokenizer."""

import functools
import json
import random
import re

import pytest
from transformers import AutoTokenizer

from dcod.toy.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, VOCAB_SIZE, build_tokenizer, save_tokenizer
from dcod.toy.world import (
    WorldConfig,
    analyze_completion,
    build_world,
    format_prompt,
    parse_prompt,
    render_completion,
    render_step,
    slip_add,
    slip_sub,
    slipped,
    solve,
    step_values,
    write_world,
)

SMALL = dict(n_train=300, n_validation=50, n_id=60, n_long=60, n_retention=40, n_pretrain=300,
             n_pretrain_reversal=100, n_extrapolate=30)


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig())  # the real default sizes (~0.7 s)


@pytest.fixture(scope="module")
def small_world():
    return build_world(WorldConfig(**SMALL))


# ----------------------------------------------------------------------------- renderings
@pytest.mark.parametrize("value,op,x,direct,decomposed", [
    (47, "+", 38, "47+38=85", "47+38=47+30+8=77+8=85"),
    (85, "-", 38, "85-38=47", "85-38=85-30-8=55-8=47"),
    (85, "*", 6, "85*6=510", "85*6=80*6+5*6=480+30=510"),
    (123, "*", 4, "123*4=492", "123*4=100*4+20*4+3*4=400+80+12=492"),
    (47, "+", 40, "47+40=87", "47+40=87"),  # no units: nothing to split
    (80, "*", 7, "80*7=560", "80*7=560"),  # a single non-zero part
    (300, "*", 3, "300*3=900", "300*3=900"),
    (7, "*", 9, "7*9=63", "7*9=63"),
    (105, "*", 9, "105*9=945", "105*9=100*9+5*9=900+45=945"),
])
def test_render_step_examples(value, op, x, direct, decomposed):
    assert render_step(value, op, x, "direct") == direct
    assert render_step(value, op, x, "decomposed") == decomposed


def test_prompt_and_completion_format():
    p = {"task": "arith", "start": 47, "ops": [["+", 38], ["*", 6], ["-", 91]]}
    assert format_prompt(p["start"], p["ops"]) == "Q:47+38*6-91\nA:"
    assert render_completion(p, "direct") == "47+38=85;85*6=510;510-91=419;\\boxed{419}"
    assert solve(p) == "419"
    assert parse_prompt("Q:47+38*6-91\nA:") == p
    assert parse_prompt("Q:rev 3817\nA:") == {"task": "reverse", "digits": "3817"}
    assert solve({"task": "reverse", "digits": "3817"}) == "7183"
    with pytest.raises(ValueError, match="Q:hello"):
        parse_prompt("Q:hello\nA:")


@functools.lru_cache(maxsize=None)
def _eval(expr: str) -> int:
    assert re.fullmatch(r"\d+(?:[+\-*]\d+)*", expr), expr
    return eval(expr)  # safe: digits and + - * only (checked above)


def _check_chain(step: str, start_value: int, op: str, x: int) -> int:
    """Every `=`-separated expression of a rendered step evaluates to the same number."""
    parts = step.split("=")
    assert parts[0] == f"{start_value}{op}{x}", step
    values = {_eval(p) for p in parts}
    assert len(values) == 1, f"inconsistent chain {step}"
    return values.pop()


def test_every_gold_trace_is_right_in_both_styles(world):
    for split, records in world.items():
        for r in records:
            if r["task"] == "reverse":
                assert r["completion_direct"] == r["completion_decomposed"] == "\\boxed{" + r["gold"] + "}"
                assert r["gold"] == parse_prompt(r["question"])["digits"][::-1]
                continue
            for style in ("completion_direct", "completion_decomposed"):
                *steps, answer = r[style].split(";")
                assert len(steps) == r["k"] == len(r["ops"])
                value = r["start"]
                for step, (op, x) in zip(steps, r["ops"]):
                    n_eq = step.count("=")
                    if style == "completion_direct":
                        assert n_eq == 1
                    value = _check_chain(step, value, op, x)
                assert answer == "\\boxed{" + r["gold"] + "}" and str(value) == r["gold"]
            assert parse_prompt(r["question"]) == {"task": "arith", "start": r["start"], "ops": r["ops"]}


def test_values_in_range(world):
    cfg = WorldConfig()
    for split, records in world.items():
        for r in records:
            if r["task"] == "reverse":
                digits = parse_prompt(r["question"])["digits"]
                assert cfg.reverse_len[0] <= len(digits) <= cfg.reverse_len[1]
                assert set(digits) <= set("123456789")
                continue
            assert 10 <= r["start"] <= 99
            for op, x in r["ops"]:
                assert (10 <= x <= 99) if op in "+-" else (2 <= x <= 9)
            assert all(0 <= v <= 999 for v in step_values(r["start"], r["ops"]))


# ----------------------------------------------------------------------------- the base student's slip
@pytest.mark.parametrize("x,y,added", [(118, 2, 110), (480, 30, 410), (77, 8, 75), (98, 20, 118), (47, 30, 77),
                                       (5, 5, 10), (995, 5, 990), (999, 999, 1988)])
def test_slip_add_forgets_the_lowest_carry_into_an_existing_digit(x, y, added):
    assert slip_add(x, y) == added


@pytest.mark.parametrize("x,y,subtracted", [(110, 8, 112), (85, 38, 57), (120, 70, 150), (85, 30, 55), (7, 9, -2),
                                            (100, 1, 109)])
def test_slip_sub_forgets_the_lowest_borrow(x, y, subtracted):
    assert slip_sub(x, y) == subtracted


def test_slipped_rendering_carries_its_wrong_results_on():
    p = {"task": "arith", "start": 98, "ops": [["+", 22], ["-", 18]]}
    assert render_completion(p, "decomposed", slipped(1.0, random.Random(0))) == (
        "98+22=98+20+2=118+2=110;110-18=110-10-8=100-8=102;\\boxed{102}")  # exact: 120, 102, 92 -> 102
    q = {"task": "arith", "start": 85, "ops": [["*", 6]]}
    assert render_completion(q, "decomposed", slipped(1.0, random.Random(0))) == "85*6=80*6+5*6=480+30=410;\\boxed{410}"
    # probability 0 is the correct rendering
    assert render_completion(p, "decomposed", slipped(0.0, random.Random(0))) == render_completion(p, "decomposed")


def test_pretrain_slip_changes_only_the_pretraining_completions(small_world):
    slip = build_world(WorldConfig(**SMALL, pretrain_slip=1.0))
    for split in small_world:
        if split != "pretrain":
            assert slip[split] == small_world[split], split
    arith = [(a, b) for a, b in zip(small_world["pretrain"], slip["pretrain"]) if a["task"] == "arith"]
    assert all(a["question"] == b["question"] and a["gold"] == b["gold"] for a, b in arith)
    changed = [b for a, b in arith if a["completion_decomposed"] != b["completion_decomposed"]]
    assert all(b["slipped"] for b in changed) and not any(b["slipped"] for a, b in arith if b not in changed)
    assert 0.4 < len(changed) / len(arith) < 0.9  # most chains hold a carry or a borrow
    # a slipped trace is a consistent wrong computation: its last step's result is the boxed answer
    for b in changed:
        steps = b["completion_decomposed"].split(";")
        assert steps[-1] == "\\boxed{" + steps[-2].rsplit("=", 1)[1] + "}"
    # half the probability slips about half as often, from its own random stream (same problems)
    half = build_world(WorldConfig(**SMALL, pretrain_slip=0.5))
    assert [r["question"] for r in half["pretrain"]] == [r["question"] for r in slip["pretrain"]]
    half_changed = sum(r.get("slipped", False) for r in half["pretrain"])
    assert 0.2 * len(arith) < half_changed < len(changed)


def test_split_sizes_k_ranges_and_disjointness(world):
    cfg = WorldConfig()
    sizes = {s: len(v) for s, v in world.items()}
    assert sizes == {"validation": 200, "id": 300, "long": 300, "retention": 200, "train": 4000,
                     "pretrain": 8000}
    k_ranges = {"train": cfg.train_k, "validation": cfg.validation_k, "id": cfg.id_k, "long": cfg.long_k}
    for split, (lo, hi) in k_ranges.items():
        ks = {r["k"] for r in world[split]}
        assert ks <= set(range(lo, hi + 1)) and len(ks) == hi - lo + 1, (split, ks)
    # `long` stays inside the trained range of step counts (compounding, not extrapolation)
    assert cfg.train_k[0] <= min(r["k"] for r in world["long"])
    assert max(r["k"] for r in world["long"]) <= cfg.train_k[1]
    seen = {}
    for split, records in world.items():
        qs = [r["question"] for r in records]
        assert len(qs) == len(set(qs)), f"duplicates inside {split}"
        for q in qs:
            assert q not in seen, f"{q!r} in {seen.get(q)} and {split}"
            seen[q] = split
    ids = [r["id"] for records in world.values() for r in records]
    assert len(ids) == len(set(ids))
    tasks = [r["task"] for r in world["pretrain"]]
    assert tasks.count("arith") == 6000 and tasks.count("reverse") == 2000
    assert {r["task"] for r in world["retention"]} == {"reverse"}


def test_determinism_and_seed(small_world):
    assert build_world(WorldConfig(**SMALL)) == small_world
    other = build_world(WorldConfig(**SMALL, seed=1))
    for split in small_world:
        assert [r["question"] for r in other[split]] != [r["question"] for r in small_world[split]]


def test_eval_splits_do_not_depend_on_training_sizes(small_world):
    bigger = build_world(WorldConfig(**{**SMALL, "n_train": 500, "n_pretrain": 100}))
    for split in ("validation", "id", "long", "retention", "extrapolate"):
        assert bigger[split] == small_world[split]
    assert {r["k"] for r in small_world["extrapolate"]} == {6, 7}


def test_config_validation():
    with pytest.raises(ValueError, match="long_k"):
        WorldConfig(long_k=(6, 7))
    with pytest.raises(ValueError, match="bogus"):
        WorldConfig.from_dict({"bogus": 1})
    cfg = WorldConfig.from_dict({"train_k": [1, 6], "long_k": [5, 6]})
    assert cfg.train_k == (1, 6) and cfg.long_k == (5, 6)
    with pytest.raises(ValueError, match="cannot find"):
        build_world(WorldConfig(n_retention=500, reverse_len=(1, 1)))  # only 9 distinct strings
    with pytest.raises(ValueError, match="pretrain_slip must be a probability"):
        WorldConfig(pretrain_slip=1.5)


def test_write_world(tmp_path, small_world):
    paths = write_world(WorldConfig(**SMALL), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{s}.jsonl" for s in small_world)
    for split, path in paths.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows == small_world[split]


# ----------------------------------------------------------------------------- analysis
def test_analyze_completion():
    rec = {"task": "arith", "start": 47, "ops": [["+", 38], ["*", 6], ["-", 91]]}
    good = analyze_completion(rec, "47+38=47+30+8=77+8=85;85*6=510;510-91=419;\\boxed{419}")
    assert [(s.style, s.well_formed, s.correct) for s in good] == [
        ("decomposed", True, True), ("direct", True, True), ("direct", True, True)]
    # wrong result in step 1; step 2 is locally correct from the wrong value; step 3 wrong operand
    bad = analyze_completion(rec, "47+38=86;86*6=516;516-92=424;\\boxed{424}")
    assert [s.correct for s in bad] == [False, True, False]
    assert all(s.well_formed and not s.malformed for s in bad)
    # malformed: no `=`, garbage, truncated trailing fragment; extra step beyond k is not correct
    mal = analyze_completion(rec, "47+38;85*6=5x0;510-91=419;419+1=420;419-")
    assert [(s.style, s.well_formed, s.correct, s.terminated) for s in mal] == [
        ("none", False, False, True), ("direct", False, False, True), ("direct", True, True, True),
        ("direct", True, False, True), ("none", False, False, False)]
    assert analyze_completion(rec, "") == []
    assert analyze_completion({"task": "reverse"}, "\\boxed{123}") == []
    # a decomposed step whose final result is wrong is a decomposed error
    (s,) = analyze_completion({"task": "arith", "start": 85, "ops": [["*", 6]]}, "85*6=80*6+5*6=480+30=500;")
    assert s.style == "decomposed" and s.well_formed and not s.correct


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip_and_reload(tmp_path, small_world):
    tok = build_tokenizer()
    assert len(tok) == VOCAB_SIZE
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
    save_tokenizer(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = []
    for records in small_world.values():
        for r in records[:30]:
            texts += [r["question"], r["completion_direct"], r["completion_decomposed"]]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids[0] == BOS_ID and len(ids) == len(text) + 1 and UNK_ID not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert tok.decode(ids + [EOS_ID], skip_special_tokens=True) == text
        assert reloaded(text)["input_ids"] == ids
        assert reloaded.decode(ids, skip_special_tokens=True) == text
    assert tok("Q:a@1")["input_ids"] == [BOS_ID, tok.convert_tokens_to_ids("Q"), tok.convert_tokens_to_ids(":"),
                                        UNK_ID, UNK_ID, tok.convert_tokens_to_ids("1")]
    assert tok("Q: 1 2")["input_ids"][3] == tok.convert_tokens_to_ids(" ")  # spaces are tokens
    # stable ids: digits in order right after the specials and the few punctuation marks
    assert [tok.convert_tokens_to_ids(str(d)) for d in range(10)] == list(range(9, 19))
