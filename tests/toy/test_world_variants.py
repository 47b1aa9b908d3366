"""The next toy world (docs/toy_world.md, "The next world"): notational variants of a decomposed step,
written by the teacher with graded probabilities and by the base student with its own prior; the default
knobs reproduce the current world bit for bit; the teacher-term calibration target."""

import hashlib
import json
import math
import random

import numpy as np
import pytest

from dcod.config import load_profile
from dcod.generation import SamplingParams
from dcod.models import encode_prompt
from dcod.reporting import calibration
from dcod.splits import world_config
from dcod.toy.teacher import ToyTeacher
from dcod.toy.tokenizer import EOS_ID, build_tokenizer
from dcod.toy.world import (CANONICAL, VARIANTS, WorldConfig, all_variants, analyze_completion, build_world, compact,
                            direct_at_branch, is_slot, lay_out, render_completion, render_step, variant_probabilities,
                            variant_renderings, writes_direct_at_branch)

# sha256 of the ci profile's world splits and of its teacher's traces (all 64 training prompts, seed 7: the
# sampled and the top-k token ids, which no float path changes), and the sums of the traces' log-probs (float32
# log-softmax: equal up to the float path), made with the code before the variants existed (commit 4b18ebd,
# whose full hash with the log-probs this code reproduces bit for bit on the AVX-512 path): the default knobs
# must reproduce them, so the current `toy` world, its traces and every published number stay as they are
CI_WORLD_SHA256 = {
    "validation": "66dd9c4ab564dd15ff61cb416d91240521324e9e04fa2c7086e213cf4b123252",
    "id": "ed44f224c2801b92d59651f52eca32c3688577646735272dc376569c8d3cdb8a",
    "long": "e314e702aafa79696327e1d506cfb87801a6fd3bd7763fc65badbe29ecc5c2ee",
    "retention": "9c103f35e85fb7cbdc2513691bd2613988d97ec67d682f1fabc5173ccf65903f",
    "train": "c3a4867ad1f5d87bf5d687995a66db2b8e615d82141b5250a4ca43a64857ddc9",
    "pretrain": "9cab9897299c7edc723de82676669d15b6c2845cf335499e11341fa7dd09c36e",
}
CI_TRACES_SHA256 = "dadc7f8a6622661f3eee23fd1ec354855a5b3e49141d39d84d7513307150a915"
CI_TRACES_LOGPROB_SUMS = (-88.81997753392352, -161155.87817813168)  # sampled tokens, top-k entries
TEACHER_VARIANTS = {"low_first": 0.8, "skip": 0.3, "round": 0.6}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def split_digest(records) -> str:
    return hashlib.sha256("".join(json.dumps(r) + "\n" for r in records).encode()).hexdigest()


def ci_traces(teacher, tok, records):
    return teacher.generate([encode_prompt(tok, r["question"]) for r in records],
                            SamplingParams(max_new_tokens=160, temperature=1.0, n=1, top_k_logprobs=5, seed=7))


def traces_digest(generations) -> str:
    return hashlib.sha256(json.dumps([[g.token_ids, g.topk_ids] for g in generations]).encode()).hexdigest()


def test_default_knobs_reproduce_the_current_world_bit_for_bit(tok):
    profile = load_profile("config/profiles/ci.yaml")
    world = build_world(world_config(profile))
    assert {split: split_digest(records) for split, records in world.items()} == CI_WORLD_SHA256
    teacher = ToyTeacher(tok, p_direct=profile.teacher.p_direct, floor=profile.teacher.floor,
                         variants=profile.teacher.variants, registers=profile.teacher.register_list,
                         space=profile.teacher.p_space)
    assert teacher.register_weights is None and not teacher.layout
    generations = ci_traces(teacher, tok, world["train"])
    assert traces_digest(generations) == CI_TRACES_SHA256
    sums = (sum(sum(g.logprobs) for g in generations), sum(sum(map(sum, g.topk_logprobs)) for g in generations))
    assert sums == pytest.approx(CI_TRACES_LOGPROB_SUMS, rel=1e-4)  # AVX2 vs AVX-512: 2e-6 measured
    # the explicit zero knobs are the same world and the same teacher
    zero = build_world(WorldConfig.from_dict({**profile.world, "pretrain_p_low_first": 0.0, "pretrain_p_skip": 0.0,
                                              "pretrain_p_round": 0.0, "pretrain_p_space": 0.0}))
    assert {split: split_digest(records) for split, records in zero.items()} == CI_WORLD_SHA256


def test_a_variant_knob_changes_the_traces(tok):
    """The guard above can fail: the same prompts under a teacher with variants give other traces."""
    world = build_world(world_config(load_profile("config/profiles/ci.yaml")))
    teacher = ToyTeacher(tok, p_direct=0.5, variants=TEACHER_VARIANTS)
    assert traces_digest(ci_traces(teacher, tok, world["train"])) != CI_TRACES_SHA256


STEPS = [(47, "+", 38), (85, "-", 38), (85, "*", 6), (123, "*", 4), (47, "+", 32), (40, "+", 47), (38, "-", 38),
         (90, "-", 15), (999, "-", 99), (15, "*", 9)]


def random_steps(n=400, seed=0):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        value, op = rng.randint(0, 999), rng.choice("+-*")
        operand = rng.randint(2, 9) if op == "*" else rng.randint(10, 99)
        result = value + operand if op == "+" else value - operand if op == "-" else value * operand
        if 0 <= result <= 999:
            out.append((value, op, operand))
    return out


@pytest.mark.parametrize("variant", all_variants())
def test_every_variant_is_a_correct_derivation(variant):
    """Every rendering is well formed, locally correct for the grader (docs/toy_world.md), writes the true
    result, and every equality in its chain holds."""
    for value, op, operand in STEPS + random_steps():
        text = render_step(value, op, operand, "decomposed", variant)
        step = analyze_completion({"task": "arith", "ops": [[op, operand]]}, text + ";\\boxed{0}")[0]
        assert step.well_formed and step.correct, text
        truth = value + operand if op == "+" else value - operand if op == "-" else value * operand
        sides = text.split("=")
        assert int(sides[-1]) == truth, text
        for side in sides:  # every side of the chain has the same value
            assert eval(side) == truth, text  # noqa: S307 (digits and + - * only)


def test_variants_render_the_documented_examples():
    r = variant_renderings(47, "+", 38)
    assert r[CANONICAL] == "47+38=47+30+8=77+8=85"
    assert r[(True, False, False)] == "47+38=47+8+30=55+30=85"
    assert r[(False, True, False)] == "47+38=77+8=85"
    assert r[(False, False, True)] == "47+38=47+40-2=87-2=85"
    assert variant_renderings(85, "-", 38)[(False, False, True)] == "85-38=85-40+2=45+2=47"
    m = variant_renderings(85, "*", 6)
    assert m[(True, False, False)] == "85*6=5*6+80*6=30+480=510" and m[(False, True, False)] == "85*6=480+30=510"
    # a flag that does not apply changes nothing: round on *, round below the next ten, nothing to split
    assert m[(False, False, True)] == m[CANONICAL]
    assert variant_renderings(40, "+", 47)[(False, False, True)] == variant_renderings(40, "+", 47)[CANONICAL]
    assert set(variant_renderings(80, "*", 6).values()) == {"80*6=480"}
    assert set(variant_renderings(47, "+", 40).values()) == {"47+40=87"}


def test_variant_probabilities_are_independent_flags():
    probs = variant_probabilities(TEACHER_VARIANTS)
    assert math.isclose(sum(probs.values()), 1.0)
    assert math.isclose(probs[(True, False, True)], 0.8 * 0.7 * 0.6)
    assert variant_probabilities({})[CANONICAL] == 1.0  # exactly: the current world's weight
    with pytest.raises(ValueError, match="unknown variant"):
        variant_probabilities({"sideways": 0.5})


def completion_ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"] + [EOS_ID]


@pytest.mark.parametrize("value,op,operand", [(47, "+", 38), (85, "-", 38), (85, "*", 6), (123, "*", 4)])
def test_teacher_probability_of_each_variant(tok, value, op, operand):
    """The teacher's probability of a whole one-step completion is p_direct for the direct rendering and
    (1 - p_direct) x the product of its flags' probabilities for each decomposed one, summed over the flag
    combinations that render the same text (up to the floor)."""
    p_direct, floor = 0.25, 1e-6
    teacher = ToyTeacher(tok, p_direct=p_direct, floor=floor, variants=TEACHER_VARIANTS)
    prompt = encode_prompt(tok, f"Q:{value}{op}{operand}\nA:")
    result = value + operand if op == "+" else value - operand if op == "-" else value * operand
    expected = {render_step(value, op, operand, "direct"): p_direct}
    for variant, text in variant_renderings(value, op, operand).items():
        expected[text] = expected.get(text, 0.0) + (1 - p_direct) * variant_probabilities(TEACHER_VARIANTS)[variant]
    assert len(expected) > 3 and math.isclose(sum(expected.values()), 1.0)
    for text, probability in expected.items():
        lps = teacher.score(prompt, completion_ids(tok, f"{text};\\boxed{{{result}}}"))
        # each forced token loses V * floor of its mass to the floor (a relative 3.4e-5 per token)
        assert math.isclose(math.exp(sum(lps)), probability, rel_tol=3e-3), text
    # the top-k at the first branch is exact: the floored probabilities of the next characters
    generation = teacher.generate([prompt], SamplingParams(max_new_tokens=60, temperature=1.0, top_k_logprobs=34,
                                                           seed=0))[0]
    branch = len(f"{value}{op}{operand}=")
    nexts = {}
    for text, probability in expected.items():
        nexts[text[branch]] = nexts.get(text[branch], 0.0) + probability
    top = dict(zip(generation.topk_ids[branch], generation.topk_logprobs[branch]))
    V = len(tok)
    for char, probability in nexts.items():
        assert math.isclose(top[tok.get_vocab()[char]], math.log((1 - V * floor) * probability + floor), rel_tol=1e-5)


def test_teacher_samples_every_variant_with_its_probability(tok):
    """Sampled traces are correct, and each variant appears about as often as the teacher's probability says."""
    teacher = ToyTeacher(tok, p_direct=0.25, variants=TEACHER_VARIANTS)
    n = 4000
    generations = teacher.generate([encode_prompt(tok, "Q:85-38\nA:")],
                                   SamplingParams(max_new_tokens=60, temperature=1.0, n=n, seed=3))
    counts = {}
    for g in generations:
        counts[g.text] = counts.get(g.text, 0) + 1
    expected = {render_step(85, "-", 38, "direct"): 0.25}
    for variant, text in variant_renderings(85, "-", 38).items():
        expected[text] = expected.get(text, 0.0) + 0.75 * variant_probabilities(TEACHER_VARIANTS)[variant]
    # every rendering is sampled; anything else is a floor token (probability 1e-6 per token and character)
    assert {f"{text};\\boxed{{47}}" for text in expected} <= set(counts)
    assert sum(c for t, c in counts.items() if t.split(";")[0] not in expected) <= 0.005 * n
    for text, probability in expected.items():
        observed = counts[f"{text};\\boxed{{47}}"] / n
        assert abs(observed - probability) < 4 * math.sqrt(probability * (1 - probability) / n) + 1e-3, text


def test_teacher_doubts_the_digits_of_a_direct_step(tok):
    """direct_confidence q: a direct step at a branch point has probability p_direct x q per result digit, a
    neighbouring digit (a carry too many or too few) shares 1 - q; decomposed steps and steps without a
    branch stay certain; greedy decoding still writes the right digits."""
    q, p_direct = 0.75, 0.25
    teacher = ToyTeacher(tok, p_direct=p_direct, variants=TEACHER_VARIANTS, direct_confidence=q)
    # 63+29 without round: no variant starts with the direct result's 9, so the direct step's probability factorises
    no_round = ToyTeacher(tok, p_direct=p_direct, variants={"low_first": 0.8, "skip": 0.3}, direct_confidence=q)
    lps = no_round.score(encode_prompt(tok, "Q:63+29\nA:"), completion_ids(tok, "63+29=92;\\boxed{92}"))
    assert math.isclose(math.exp(sum(lps)), p_direct * q ** 2, rel_tol=3e-3)
    prompt = encode_prompt(tok, "Q:85*6\nA:")
    state = teacher.state(prompt)
    for t in tok("85*6=5", add_special_tokens=False)["input_ids"]:
        state.advance(t)
    vocab = tok.get_vocab()
    dist = state.distribution()  # after "85*6=5": the direct "1" (doubted) or low_first's "*"
    # the renderings still consistent keep their weights: direct, and low_first without skip (round: no effect on *)
    w_direct = p_direct / (p_direct + (1 - p_direct) * 0.8 * 0.7)
    assert math.isclose(dist[vocab["1"]], w_direct * q) and math.isclose(dist[vocab["0"]], w_direct * (1 - q) / 2)
    assert math.isclose(dist[vocab["2"]], w_direct * (1 - q) / 2) and math.isclose(dist[vocab["*"]], 1 - w_direct)
    decomposed = teacher.score(prompt, completion_ids(tok, "85*6=80*6+5*6=480+30=510;\\boxed{510}"))
    plain = ToyTeacher(tok, p_direct=p_direct, variants=TEACHER_VARIANTS).score(
        prompt, completion_ids(tok, "85*6=80*6+5*6=480+30=510;\\boxed{510}"))
    assert decomposed == plain
    no_branch = encode_prompt(tok, "Q:47+40\nA:")
    assert math.exp(sum(teacher.score(no_branch, completion_ids(tok, "47+40=87;\\boxed{87}")))) > 0.999
    greedy = ToyTeacher(tok, style_override="direct", direct_confidence=q).generate(
        [prompt], SamplingParams(max_new_tokens=40, temperature=0.0))[0]
    assert greedy.text == "85*6=510;\\boxed{510}"
    with pytest.raises(ValueError, match="direct_confidence"):
        ToyTeacher(tok, direct_confidence=0.5)


def test_forced_styles_keep_their_meaning(tok):
    """teacher_direct writes only direct steps; teacher_decomposed (and the oracle's p_direct 0) only the
    variants, with the teacher's probabilities."""
    prompt = encode_prompt(tok, "Q:47+38\nA:")
    params = SamplingParams(max_new_tokens=60, temperature=1.0, n=200, seed=1)
    direct = ToyTeacher(tok, style_override="direct", variants=TEACHER_VARIANTS).generate([prompt], params)
    assert {g.text for g in direct} == {"47+38=85;\\boxed{85}"}
    decomposed = ToyTeacher(tok, style_override="decomposed", variants=TEACHER_VARIANTS).generate([prompt], params)
    texts = {g.text.split(";")[0] for g in decomposed}
    assert "47+38=85" not in texts and texts <= set(variant_renderings(47, "+", 38).values()) and len(texts) >= 5


def test_pretraining_prior_of_the_student():
    """The base student's pre-training traces use its own prior over the variants; the problems, and every
    other split, are those of the world without the prior; the slip still applies."""
    base = dict(n_train=50, n_validation=10, n_id=10, n_long=10, n_retention=10, n_pretrain=3000,
                n_pretrain_reversal=10, train_k=(1, 4), long_k=(3, 4), pretrain_k=(1, 4), pretrain_slip=0.5)
    plain = build_world(WorldConfig(**base))
    prior = {"pretrain_p_low_first": 0.2, "pretrain_p_skip": 0.1, "pretrain_p_round": 0.3, "pretrain_p_direct": 0.4}
    world = build_world(WorldConfig(**base, **prior))
    for split in ("validation", "id", "long", "retention", "train"):
        assert world[split] == plain[split]
    assert [r["question"] for r in world["pretrain"]] == [r["question"] for r in plain["pretrain"]]
    arith = [r for r in world["pretrain"] if r["task"] == "arith"]
    flags = np.array([v for r in arith for v in r["variants"]], dtype=float)
    for i, name in enumerate(VARIANTS):
        assert abs(flags[:, i].mean() - prior[f"pretrain_p_{name}"]) < 0.02, name
    styles = [style for r in arith for style in r["styles"]]
    assert abs(styles.count("direct") / len(styles) - 0.4) < 0.02
    for r in arith[:300]:
        correct = render_completion(r, r["styles"], variants=r["variants"])
        assert r["slipped"] == (r["completion_decomposed"] != correct)
        if not r["slipped"]:
            steps = analyze_completion(r, r["completion_decomposed"])
            assert all(s.correct for s in steps) and r["completion_decomposed"].endswith(f"{{{r['gold']}}}")
    assert 0.2 < np.mean([r["slipped"] for r in arith]) < 0.8
    with pytest.raises(ValueError, match="pretrain_p_round"):
        WorldConfig(pretrain_p_round=1.5)


def test_toy_next_profile_loads_with_its_knobs(tmp_path):
    from dcod.backends import load_teacher

    profile = load_profile("config/profiles/toy_next.yaml")
    registers = profile.teacher.register_list
    assert registers and any(r["space"] for r in registers) and any(r["low_first"] for r in registers)
    assert any(world_config(profile).pretrain_variant_probabilities().values())
    assert world_config(profile).pretrain_p_space > 0 and world_config(profile).pretrain_layout == "padded"
    build_tokenizer().save_pretrained(tmp_path / "tokenizer")
    teacher, _ = load_teacher(profile, tmp_path)  # the traces stage's path from the profile to the teacher
    assert teacher.padded and teacher.layout


@pytest.mark.parametrize("variant", all_variants())
def test_every_layout_is_a_correct_derivation(variant):
    """Spacing every slot of a rendering (or some: the same analysis) changes no step: the analysis reads the step
    as written compact; a space inside a number is still an error."""
    rng = random.Random(1)
    for value, op, operand in STEPS + random_steps(100):
        for style in ("decomposed", "direct"):
            text = render_step(value, op, operand, style, variant)
            record = {"task": "arith", "ops": [[op, operand]]}
            for probability in (1.0, 0.5):
                laid_out = lay_out(text + ";\\boxed{0}", probability, rng)
                assert laid_out.endswith(";\\boxed{0}") and laid_out.replace(" ", "") == text + ";\\boxed{0}"
                step = analyze_completion(record, laid_out)[0]
                assert step.well_formed and step.correct and step.text == text, laid_out
                assert compact(laid_out.split(";")[0]) == text
            if style == "direct" and direct_at_branch(text):
                assert direct_at_branch(lay_out(text, 1.0, rng)) and writes_direct_at_branch(lay_out(text + ";", 1.0, rng))
    assert lay_out("47+38=85;\\boxed{85}", 1.0, rng) == "47 + 38 = 85;\\boxed{85}"
    assert lay_out("5-8=-3;", 1.0, rng) == "5 - 8 = -3;"  # a minus sign is no slot
    broken = analyze_completion({"task": "arith", "ops": [["+", 38]]}, "47 + 3 8 = 85;\\boxed{85}")[0]
    assert not broken.well_formed


def test_pretraining_layout_prior_of_the_student():
    """pretrain_p_space spaces the slots of the base student's pre-training traces with its own probability and
    stream: without the spaces every trace is the one of the world without the layout; other splits unchanged."""
    base = dict(n_train=20, n_validation=10, n_id=10, n_long=10, n_retention=10, n_pretrain=1500,
                n_pretrain_reversal=10, train_k=(1, 4), long_k=(3, 4), pretrain_k=(1, 4), pretrain_slip=0.5,
                pretrain_p_low_first=0.5, pretrain_p_direct=0.25)
    plain = build_world(WorldConfig(**base))
    world = build_world(WorldConfig(**base, pretrain_p_space=0.3))
    for split in ("validation", "id", "long", "retention", "train"):
        assert world[split] == plain[split]
    slots = spaced = 0
    for rec, ref in zip(world["pretrain"], plain["pretrain"]):
        assert rec["completion_decomposed"].replace(" ", "") == ref["completion_decomposed"].replace(" ", "")
        if rec["task"] == "arith":
            steps = ref["completion_decomposed"].split("\\boxed")[0]
            slots += sum(is_slot(steps, i) for i in range(len(steps)))
            spaced += rec["completion_decomposed"].count(" ") // 2
    assert abs(spaced / slots - 0.3) < 0.02
    with pytest.raises(ValueError, match="pretrain_p_space"):
        WorldConfig(pretrain_p_space=-0.1)


def test_padded_layout_keeps_every_digit_in_place():
    """pretrain_layout "padded": one space at every slot, before it with pretrain_p_space, else after it; the step
    keeps its length whatever the draws, reads as written compact, and other splits do not change."""
    rng = random.Random(2)
    for value, op, operand in STEPS + random_steps(50):
        text = render_step(value, op, operand, "decomposed")
        slots = sum(is_slot(text, i) for i in range(len(text)))
        versions = {lay_out(text + ";", 0.5, rng, "padded") for _ in range(20)}
        assert {len(v) for v in versions} == {len(text) + 1 + slots}
        for laid_out in versions:
            step = analyze_completion({"task": "arith", "ops": [[op, operand]]}, laid_out)[0]
            assert step.correct and step.text == text, laid_out
    assert lay_out("47+38=85;\\boxed{85}", 1.0, rng, "padded") == "47 +38 =85;\\boxed{85}"
    assert lay_out("47+38=85;\\boxed{85}", 0.0, rng, "padded") == "47+ 38= 85;\\boxed{85}"
    base = dict(n_train=20, n_validation=10, n_id=10, n_long=10, n_retention=10, n_pretrain=50,
                n_pretrain_reversal=10, train_k=(1, 4), long_k=(3, 4), pretrain_k=(1, 4), pretrain_slip=0.5)
    plain, padded = build_world(WorldConfig(**base)), build_world(WorldConfig(**base, pretrain_layout="padded"))
    for split in ("validation", "id", "long", "retention", "train"):
        assert padded[split] == plain[split]
    for rec, ref in zip(padded["pretrain"], plain["pretrain"]):
        assert rec["completion_decomposed"].replace(" ", "") == ref["completion_decomposed"]
        if rec["task"] == "arith":  # p_space 0: every slot's space after it, none before
            steps = ref["completion_decomposed"].split("\\boxed")[0]
            assert rec["completion_decomposed"].count(" ") == sum(is_slot(steps, i) for i in range(len(steps))) > 0
            assert " =" not in rec["completion_decomposed"]
    with pytest.raises(ValueError, match="pretrain_layout"):
        WorldConfig(pretrain_layout="wide")


# ----------------------------------------------------------------------------- the teacher-term target
def test_teacher_term_target_passes_with_spread_and_no_collinearity():
    rng = np.random.default_rng(0)
    student = rng.normal(-0.3, 0.10, 500)
    teacher = 0.5 * (student - student.mean()) + rng.normal(0.0, 0.08, 500) - 0.1  # r ~ 0.53, ratio ~ 0.94
    target = calibration.teacher_term_target(teacher, student)
    assert target.status == calibration.PASS, target.evidence
    assert target.name == calibration.TEACHER_TERM
    assert 0.8 < target.numbers["teacher_term_spread_ratio"] < 1.1 and 0.4 < target.numbers["teacher_term_corr"] < 0.7


def test_teacher_term_target_fails_without_spread():
    """The current world: the teacher's per-trace mean barely varies (the student's varies 5x more)."""
    student = np.array([-0.10, -0.30, -0.20, -0.50, -0.15, -0.40])
    teacher = np.array([-0.02, -0.05, -0.03, -0.01, -0.04, -0.02])
    target = calibration.teacher_term_target(teacher, student)
    assert target.status == calibration.FAIL and target.numbers["teacher_term_spread_ratio"] < 0.5
    constant = calibration.teacher_term_target(np.full(6, -0.02), student)
    assert constant.status == calibration.FAIL and math.isnan(constant.numbers["teacher_term_corr"])


def test_teacher_term_target_fails_when_collinear():
    """Enough spread, but the teacher's mean is nearly an affine function of the student's: the ratio only
    rescales the student term."""
    student = np.array([-0.10, -0.30, -0.20, -0.50, -0.15, -0.40])
    teacher = 0.8 * student + np.array([0.001, -0.002, 0.0, 0.002, -0.001, 0.0])
    target = calibration.teacher_term_target(teacher, student)
    assert target.numbers["teacher_term_spread_ratio"] >= 0.5
    assert target.status == calibration.FAIL and abs(target.numbers["teacher_term_corr"]) >= 0.9
    anti = calibration.teacher_term_target(-teacher, student)  # |r|: a mirror image is just as collinear
    assert anti.status == calibration.FAIL


def test_teacher_term_target_edges():
    assert calibration.teacher_term_target(np.array([-0.1, -0.2]), np.array([-0.1, -0.3])).status == \
        calibration.NOT_MEASURED
    assert calibration.teacher_term_target(np.array([-0.1, -0.2, -0.3]), np.full(3, -0.2)).status == \
        calibration.NOT_MEASURED
    with pytest.raises(ValueError, match="one teacher and one student mean per trace"):
        calibration.teacher_term_target(np.zeros(3), np.zeros(4))


def test_teacher_term_not_measured_names_the_missing_files(tmp_path):
    target = calibration.teacher_term_from_files(tmp_path / "traces" / "train.parquet", tmp_path / "base_student")
    assert target.status == calibration.NOT_MEASURED and "train.parquet" in target.evidence
