"""The teacher's registers (docs/toy_world.md, "The next world"): a latent drawn once per trace, each register with
its own variant probabilities; the teacher's next-token distribution is the mixture over the registers weighted
by their posterior given the prefix, so a whole completion has the probability sum_r w_r P_r(completion)."""

import itertools
import math

import numpy as np
import pytest
import torch

from dcod.config import ConfigError, parse_section
from dcod.config import TeacherConfig
from dcod.generation import SamplingParams
from dcod.models import encode_prompt
from dcod.toy.teacher import ToyTeacher
from dcod.toy.tokenizer import EOS_ID, build_tokenizer
from dcod.toy.world import analyze_completion, is_slot, render_step, variant_renderings

CAREFUL = {"weight": 0.6}  # the canonical rendering only
FREE = {"weight": 0.4, "low_first": 0.5, "skip": 0.3, "round": 0.7}
PROBLEM = "Q:47+38*6\nA:"  # two steps with a choice each: the posterior of the first carries to the second


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def completion_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"] + [EOS_ID]


def one_register(tok, register, **kw):
    return ToyTeacher(tok, variants={k: v for k, v in register.items() if k != "weight"}, **kw)


def every_completion(value_ops):
    """Every correct completion of a problem: each step direct or any of its variant renderings."""
    value, steps = value_ops
    options = []
    for op, x in steps:
        result = value + x if op == "+" else value - x if op == "-" else value * x
        texts = {render_step(value, op, x, "direct")} | set(variant_renderings(value, op, x).values())
        options.append(sorted(texts))
        value = result
    return ["".join(t + ";" for t in combo) + f"\\boxed{{{value}}}" for combo in itertools.product(*options)]


def test_a_completion_has_the_mixture_probability(tok):
    """P(completion) = sum_r w_r P_r(completion), P_r the one-register teacher of register r (up to the floor's
    relative 3.4e-5 per token): the posterior after step 1 weighs step 2."""
    p_direct = 0.25
    teacher = ToyTeacher(tok, p_direct=p_direct, registers=[CAREFUL, FREE])
    parts = [one_register(tok, r, p_direct=p_direct) for r in (CAREFUL, FREE)]
    weights = [0.6, 0.4]
    prompt = encode_prompt(tok, PROBLEM)
    completions = every_completion((47, [("+", 38), ("*", 6)]))
    assert len(completions) > 20
    total = 0.0
    for text in completions:
        ids = completion_ids(tok, text)
        mixture = sum(w * math.exp(sum(t.score(prompt, ids))) for w, t in zip(weights, parts))
        got = math.exp(sum(teacher.score(prompt, ids)))
        assert math.isclose(got, mixture, rel_tol=3e-3), text
        total += got
    assert math.isclose(total, 1.0, rel_tol=3e-3)  # every correct completion: the whole mass (less the floor)
    # not a product of per-step marginals: two canonical steps are likelier than independent steps would make them
    canonical = "47+38=47+30+8=77+8=85;85*6=80*6+5*6=480+30=510;\\boxed{510}"
    lps = teacher.score(prompt, completion_ids(tok, canonical))
    first = lps[:len("47+38=47+30+8=77+8=85;")]
    single = ToyTeacher(tok, p_direct=p_direct, variants={"low_first": 0.2, "skip": 0.12, "round": 0.28})
    assert math.exp(sum(lps)) > 1.2 * math.exp(sum(first)) * math.exp(
        sum(single.score(encode_prompt(tok, "Q:85*6\nA:"), completion_ids(tok, "85*6=80*6+5*6=480+30=510;\\boxed{510}"))))


def test_rows_are_normalised_and_finite(tok):
    teacher = ToyTeacher(tok, p_direct=0.25, direct_confidence=0.75, registers=[CAREFUL, FREE])
    prompt = encode_prompt(tok, PROBLEM)
    for text in ("47+38=47+8+30=55+30=85;85*6=480+30=510;\\boxed{510}", "47+38=85;85*6=510;\\boxed{510}",
                 "47+38=9x;;\\boxed{12", "47+38=47+40-2=8;85*6=5"):
        ids = completion_ids(tok, text)
        lp = teacher.next_token_logprobs(prompt, ids)
        assert torch.isfinite(lp).all()
        assert torch.allclose(lp.exp().sum(-1), torch.ones(len(ids) + 1), rtol=0, atol=1e-5)
        state = teacher.state(prompt)
        for t in ids:
            assert math.isclose(sum(state.distribution().values()), 1.0, rel_tol=1e-12)
            state.advance(t)


def test_samples_are_correct_and_follow_the_mixture(tok):
    """Every sampled trace is a correct derivation; the joint frequency of the two steps' renderings follows the
    mixture (the registers correlate the steps of one trace)."""
    teacher = ToyTeacher(tok, p_direct=0.25, registers=[CAREFUL, FREE])
    prompt = encode_prompt(tok, PROBLEM)
    n = 3000
    generations = teacher.generate([prompt], SamplingParams(max_new_tokens=80, temperature=1.0, n=n, seed=5))
    record = {"task": "arith", "ops": [["+", 38], ["*", 6]]}
    counts = {}
    for g in generations:
        counts[g.text] = counts.get(g.text, 0) + 1
    floor_tokens = sum(c for text, c in counts.items() if text not in every_completion((47, [("+", 38), ("*", 6)])))
    assert floor_tokens <= 0.005 * n  # a floor token (1e-6 per token and character) or nothing else
    for text, c in counts.items():
        if text in every_completion((47, [("+", 38), ("*", 6)])):
            assert all(s.correct for s in analyze_completion(record, text)) and text.endswith("{510}")
    canonical = "47+38=47+30+8=77+8=85;85*6=80*6+5*6=480+30=510;\\boxed{510}"
    expected = math.exp(sum(teacher.score(prompt, completion_ids(tok, canonical))))
    observed = counts.get(canonical, 0) / n
    assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_identical_registers_are_one_register(tok):
    """Two registers with the same probabilities are the one-register teacher (same distributions up to float
    rounding): the posterior machinery adds nothing of its own."""
    flags = {"low_first": 0.5, "skip": 0.3, "round": 0.7}
    twin = ToyTeacher(tok, p_direct=0.25, registers=[{"weight": 1.0, **flags}, {"weight": 3.0, **flags}])
    single = ToyTeacher(tok, p_direct=0.25, variants=flags)
    prompt = encode_prompt(tok, PROBLEM)
    for text in every_completion((47, [("+", 38), ("*", 6)]))[:15] + ["47+38=9x;;\\boxed{12"]:
        ids = completion_ids(tok, text)
        assert np.allclose(twin.score(prompt, ids), single.score(prompt, ids), rtol=0, atol=1e-5), text


def test_forced_styles_hold_in_every_register(tok):
    prompt = encode_prompt(tok, PROBLEM)
    params = SamplingParams(max_new_tokens=80, temperature=1.0, n=100, seed=2)
    direct = ToyTeacher(tok, style_override="direct", registers=[CAREFUL, FREE]).generate([prompt], params)
    assert {g.text for g in direct} == {"47+38=85;85*6=510;\\boxed{510}"}
    decomposed = ToyTeacher(tok, style_override="decomposed", registers=[CAREFUL, FREE]).generate([prompt], params)
    assert all(s.style == "decomposed" for g in decomposed
               for s in analyze_completion({"task": "arith", "ops": [["+", 38], ["*", 6]]}, g.text))


def test_register_arguments_are_checked(tok):
    with pytest.raises(ValueError, match="two or more"):
        ToyTeacher(tok, registers=[CAREFUL])
    with pytest.raises(ValueError, match=r"registers\[1\]: weight"):
        ToyTeacher(tok, registers=[CAREFUL, {"weight": 0.0}])
    with pytest.raises(ValueError, match="unknown variant"):
        ToyTeacher(tok, registers=[CAREFUL, {"weight": 1.0, "sideways": 0.5}])
    with pytest.raises(ValueError, match=r"registers\[1\]: probability round"):
        ToyTeacher(tok, registers=[CAREFUL, {"weight": 1.0, "round": 1.5}])


def test_profile_registers(tmp_path):
    ok = parse_section(TeacherConfig, {"registers": [{"weight": 1.0}, {"weight": 1.0, "p_skip": 0.5}]}, "t.yaml",
                       "teacher")
    assert ok.register_list == [{"weight": 1.0, "space": 0.0, "low_first": 0.0, "skip": 0.0, "round": 0.0},
                                {"weight": 1.0, "space": 0.0, "low_first": 0.0, "skip": 0.5, "round": 0.0}]
    assert parse_section(TeacherConfig, {}, "t.yaml", "teacher").register_list is None
    with pytest.raises(ConfigError, match="teacher.registers"):
        parse_section(TeacherConfig, {"registers": [{"weight": 1.0}]}, "t.yaml", "teacher")
    for beside in ({"p_skip": 0.5}, {"p_space": 0.5}):
        with pytest.raises(ConfigError, match="teacher.registers"):
            parse_section(TeacherConfig, {**beside, "registers": [{"weight": 1.0}, {"weight": 1.0}]}, "t.yaml",
                          "teacher")
    with pytest.raises(ValueError, match="space: each register"):
        ToyTeacher(build_tokenizer(), registers=[CAREFUL, FREE], space=0.5)


# ----------------------------------------------------------------------------- layout (spaces around operators)
FREE_SPACED = {"weight": 0.5, "space": 0.5, "low_first": 0.5, "skip": 0.5, "round": 0.5}


def layout_versions(text, layout="spaced"):
    """Every layout of one step, with the number of slots spaced "on" (spaced: a space on either side of the slot,
    else none; padded: the slot's one space before it, else after it) and the number of slots."""
    slots = [i for i in range(len(text)) if is_slot(text, i)]
    on_off = {"spaced": (" {} ", "{}"), "padded": (" {}", "{} ")}[layout]
    out = []
    for mask in itertools.product((False, True), repeat=len(slots)):
        chars = list(text)
        for i, on in zip(slots, mask):
            chars[i] = on_off[0 if on else 1].format(text[i])
        out.append(("".join(chars), sum(mask), len(slots)))
    return out


@pytest.mark.parametrize("layout", ["spaced", "padded"])
def test_layout_probability_of_a_step(tok, layout):
    """One register, space probability s: each layout of a rendering has the rendering's probability times
    s^(slots on) (1 - s)^(slots off); every layout is graded correct. Padded: every layout of a step has the same
    length, and a compact step (no pad) is off the teacher's support (floor only)."""
    s, p_direct = 0.3, 0.25
    flags = {"low_first": 0.3, "skip": 0.4, "round": 0.2}
    teacher = ToyTeacher(tok, p_direct=p_direct, variants=flags, space=s, layout=layout)
    plain = ToyTeacher(tok, p_direct=p_direct, variants=flags)
    prompt = encode_prompt(tok, "Q:47+38\nA:")
    record = {"task": "arith", "ops": [["+", 38]]}
    total = 0.0
    for text in {render_step(47, "+", 38, "direct"), *variant_renderings(47, "+", 38).values()}:
        base = math.exp(sum(plain.score(prompt, completion_ids(tok, f"{text};\\boxed{{85}}"))))
        versions = layout_versions(text, layout)
        for laid_out, on, slots in versions:
            completion = f"{laid_out};\\boxed{{85}}"
            got = math.exp(sum(teacher.score(prompt, completion_ids(tok, completion))))
            assert math.isclose(got, base * s ** on * (1 - s) ** (slots - on), rel_tol=3e-3), completion
            steps = analyze_completion(record, completion)
            assert len(steps) == 1 and steps[0].correct and steps[0].text == text
            total += got
        if layout == "padded":
            assert len({len(laid_out) for laid_out, _, _ in versions}) == 1
            assert sum(teacher.score(prompt, completion_ids(tok, f"{text};\\boxed{{85}}"))) < math.log(1e-4), text
    assert math.isclose(total, 1.0, rel_tol=3e-3)


def test_padded_careful_register_is_deterministic(tok):
    """A padded register with space probability 0 writes every slot's space after it: no layout entropy, so the
    careful register keeps its confidence while the free one (0.5) pays log 2 per slot."""
    careful = {"weight": 0.5}
    free = {"weight": 0.5, "space": 0.5}
    teacher = ToyTeacher(tok, p_direct=0.0, registers=[careful, free], layout="padded")
    prompt = encode_prompt(tok, "Q:47+38\nA:")
    after = "47+ 38= 47+ 30+ 8= 77+ 8= 85;\\boxed{85}"  # the careful register's one layout (and one of the free's)
    mixed = "47 +38= 47+ 30 +8= 77+ 8 =85;\\boxed{85}"  # only the free register writes a space before a slot
    slots = sum(is_slot("47+38=47+30+8=77+8=85", i) for i in range(21))  # 7
    p_after = math.exp(sum(teacher.score(prompt, completion_ids(tok, after))))
    p_mixed = math.exp(sum(teacher.score(prompt, completion_ids(tok, mixed))))
    assert math.isclose(p_after, 0.5 + 0.5 * 0.5 ** slots, rel_tol=3e-3)
    assert math.isclose(p_mixed, 0.5 * 0.5 ** slots, rel_tol=3e-3)


def test_layout_is_evidence_about_the_register(tok):
    """A spaced first step makes the spacing register likelier for the second: the mixture over the registers,
    layout included (P(completion) = sum_r w_r P_r)."""
    teacher = ToyTeacher(tok, p_direct=0.25, registers=[CAREFUL, FREE_SPACED])
    parts = [ToyTeacher(tok, p_direct=0.25), ToyTeacher(tok, p_direct=0.25, space=0.5,
                                                        variants={"low_first": 0.5, "skip": 0.5, "round": 0.5})]
    prompt = encode_prompt(tok, PROBLEM)
    for text in ("47 + 38 = 85;85 * 6 = 480 + 30 = 510;\\boxed{510}", "47+38=85;85*6=510;\\boxed{510}",
                 "47+38 = 47+30+8=77+8=85;85*6=80*6+5*6=480+30=510;\\boxed{510}"):
        ids = completion_ids(tok, text)
        mixture = sum(0.6 / 1.1 * math.exp(sum(parts[0].score(prompt, ids))) if i == 0 else
                      0.5 / 1.1 * math.exp(sum(parts[1].score(prompt, ids))) for i in range(2))
        assert math.isclose(math.exp(sum(teacher.score(prompt, ids))), mixture, rel_tol=3e-3), text
    state = teacher.state(prompt)
    for t in tok("47 + 38 = 85;", add_special_tokens=False)["input_ids"]:
        state.advance(t)
    assert state.post[1] > 0.99  # the careful register never spaces


def test_layout_samples_are_correct_and_rows_normalised(tok):
    teacher = ToyTeacher(tok, p_direct=0.25, direct_confidence=0.75, registers=[CAREFUL, FREE_SPACED])
    prompt = encode_prompt(tok, PROBLEM)
    generations = teacher.generate([prompt], SamplingParams(max_new_tokens=120, temperature=1.0, n=400, seed=4))
    record = {"task": "arith", "ops": [["+", 38], ["*", 6]]}
    spaced = [g.text for g in generations if " " in g.text]
    assert len(spaced) > 100
    correct = [g.text for g in generations if g.text.endswith("{510}")
               and all(s.correct for s in analyze_completion(record, g.text))]
    assert len(correct) > 0.7 * len(generations)  # the rest: a doubted digit of a direct step, or a floor token
    for text in spaced[:30] + ["47 +38=85;85 * 6 =5", "47 + 38 = 8 5;\\boxed{85}", "47  + 38;;"]:
        ids = completion_ids(tok, text)
        lp = teacher.next_token_logprobs(prompt, ids)
        assert torch.isfinite(lp).all()
        assert torch.allclose(lp.exp().sum(-1), torch.ones(len(ids) + 1), rtol=0, atol=1e-5)


def test_a_wrong_spaced_step_is_read_at_face_value(tok):
    """After a wrong result written with spaces the teacher carries on from its face value, as from a compact one."""
    teacher = ToyTeacher(tok, p_direct=0.25, space=0.5)
    prompt = encode_prompt(tok, PROBLEM)
    for text in ("47 + 38 = 95;", "47+38=95;"):
        state = teacher.state(prompt)
        for t in tok(text, add_special_tokens=False)["input_ids"]:
            state.advance(t)
        assert state.value == 95 and state.j == 1
