"""The exact programmatic toy teacher: distributions, floor, sampling, scoring, malformed prefixes."""

import math

import pytest
import torch

from dcod.generation import SamplingParams
from dcod.toy.teacher import ToyTeacher
from dcod.toy.tokenizer import EOS_ID, build_tokenizer
from dcod.toy.world import WorldConfig, analyze_completion, build_world, render_step


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def teacher(tok):
    return ToyTeacher(tok)


@pytest.fixture(scope="module")
def records():
    w = build_world(WorldConfig(n_train=200, n_validation=20, n_id=20, n_long=20, n_retention=30,
                                n_pretrain=0, n_pretrain_reversal=0))
    return w["train"] + w["retention"]


def ids(tok, text, bos=False):
    out = tok(text)["input_ids"]
    return out if bos else out[1:]


def prompts_of(tok, recs):
    return [ids(tok, r["question"], bos=True) for r in recs]


def test_floor_and_normalisation(tok, teacher):
    V = len(tok)
    p = teacher.full_distribution({5: 1.0})
    # p = exp(float32 log-softmax): each p_i is off by ~(1 + |log p_i|) eps relative (~16 eps = 2e-6 for
    # the floor, log 1e-6 = -13.8; measured <= 8.3e-7), ~3 eps for p_5 ~ 1; the sum of V = 34 of them by
    # <= V eps = 4e-6. The floor's 1e-5 still tells an exact floor from one renormalised after flooring
    # (1e-6 / (1 + V 1e-6), off by V 1e-6 = 3.4e-5).
    assert p.shape == (V,) and math.isclose(p.sum(), 1.0, rel_tol=1e-5)
    assert math.isclose(p.min(), 1e-6, rel_tol=1e-5) and math.isclose(p[5], 1 - (V - 1) * 1e-6, rel_tol=1e-6)
    with pytest.raises(AssertionError):
        ToyTeacher(tok, floor=1.0 / V)
    with pytest.raises(ValueError):
        ToyTeacher(tok, style_override="sideways")


def test_rows_sum_to_one_and_are_finite(tok, teacher, records):
    for r in records[:40]:
        for comp in (r["completion_direct"], r["completion_decomposed"], "47+3=9x;;\\boxed{12"):
            c = ids(tok, comp) + [EOS_ID]
            lp = teacher.next_token_logprobs(ids(tok, r["question"], bos=True), c)
            assert lp.shape == (len(c) + 1, len(tok)) and lp.dtype == torch.float32
            assert torch.isfinite(lp).all()
            # float32 exp of log-softmax rows, summed over V = 34: <= V eps = 4e-6 (measured <= 4.8e-7)
            assert torch.allclose(lp.exp().sum(-1), torch.ones(len(c) + 1), rtol=0, atol=1e-5)
            lp7 = teacher.next_token_logprobs(ids(tok, r["question"], bos=True), c, temperature=0.7)
            assert torch.isfinite(lp7).all()
            assert torch.allclose(lp7.exp().sum(-1), torch.ones(len(c) + 1), rtol=0, atol=1e-5)


def test_gold_traces_have_high_probability(tok, teacher, records):
    """A pure-style gold trace costs log(1/2) per multi-part step and ~0 elsewhere."""
    r = {"question": "Q:47+38*6-91\nA:"}
    comp = ids(tok, "47+38=47+30+8=77+8=85;85*6=510;510-91=419;\\boxed{419}") + [EOS_ID]
    lps = teacher.score(ids(tok, r["question"], bos=True), comp)
    # not rounding: each forced token gives log(1 - (V-1) floor) = -3.3e-5 to the floor (-1.8e-3 over this
    # trace); 0.01 is far below the log 2 of one more or one fewer style choice
    assert math.isclose(sum(lps), 3 * math.log(0.5), abs_tol=0.01)
    assert sum(lp < -0.01 for lp in lps) == 3  # exactly the three style choices
    full = teacher.next_token_logprobs(ids(tok, r["question"], bos=True), comp)
    # exact: score() and next_token_logprobs() read the same cached float32 rows
    assert torch.equal(full[torch.arange(len(comp)), torch.tensor(comp)], torch.tensor(lps))
    assert full[-1].argmax() == EOS_ID  # after eos: eos, absorbing


def test_style_split_at_divergence_point(tok):
    t = ToyTeacher(tok, p_direct=0.3)
    st = t.state(ids(tok, "Q:47+38\nA:", bos=True))
    for c in ids(tok, "47+38="):
        assert len(st.distribution()) == 1
        st.advance(c)
    d = st.distribution()
    assert d == pytest.approx({tok.convert_tokens_to_ids("8"): 0.3, tok.convert_tokens_to_ids("4"): 0.7})
    # a shared prefix after `=` (105+11=116 vs 105+11=105+10+1=...) splits one character later
    st = t.state(ids(tok, "Q:105+11\nA:", bos=True))
    for c in ids(tok, "105+11=1"):
        st.advance(c)
    assert st.distribution() == pytest.approx({tok.convert_tokens_to_ids("1"): 0.3, tok.convert_tokens_to_ids("0"): 0.7})


def test_greedy_is_always_correct(tok, teacher, records):
    gens = teacher.generate(prompts_of(tok, records), SamplingParams(max_new_tokens=300, temperature=0))
    for g, r in zip(gens, records):
        assert g.finish_reason == "stop" and g.token_ids[-1] == EOS_ID
        assert g.text.endswith("\\boxed{" + r["gold"] + "}")
        assert all(s.correct for s in analyze_completion(r, g.text))


@pytest.mark.parametrize("style", ["direct", "decomposed"])
def test_style_override(tok, records, style):
    t = ToyTeacher(tok, style_override=style)
    assert t.p_direct == (1.0 if style == "direct" else 0.0)
    arith = [r for r in records if r["task"] == "arith"][:60]
    greedy = t.generate(prompts_of(tok, arith), SamplingParams(max_new_tokens=300, temperature=0))
    sampled = t.generate(prompts_of(tok, arith), SamplingParams(max_new_tokens=300, seed=3))
    for g, s, r in zip(greedy, sampled, arith):
        assert g.text == r[f"completion_{style}"]
        assert all(lp > -0.001 for lp in g.logprobs)  # every token is forced
        if s.text == g.text:
            assert s.logprobs == g.logprobs
    assert sum(s.text == g.text for s, g in zip(sampled, greedy)) >= 58  # only floor accidents differ
    # scoring the excluded style: its first character has floor probability, then it is continued
    other = "47+38=47+30+8=77+8=85;" if style == "direct" else "47+38=85;"
    lps = t.score(ids(tok, "Q:47+38\nA:", bos=True), ids(tok, other + "\\boxed{85}") + [EOS_ID])
    # the floor's float32 log-prob: half an ulp at 13.8 (4.8e-7) plus the log-softmax's few eps (measured
    # <= 7.6e-7); 1e-5 still tells an exact floor from a renormalised one (off by V 1e-6 = 3.4e-5)
    assert min(lps) == pytest.approx(math.log(1e-6), rel=0, abs=1e-5)
    assert sum(lp < -0.001 for lp in lps) == 1


def test_sampled_style_fraction_is_half(tok, teacher, records):
    arith = [r for r in records if r["task"] == "arith"]
    gens = teacher.generate(prompts_of(tok, arith), SamplingParams(max_new_tokens=300, temperature=1.0, seed=7))
    n = n_direct = 0
    for g, r in zip(gens, arith):
        value = r["start"]
        for step, (op, x) in zip(analyze_completion(r, g.text), r["ops"]):
            multi = render_step(value, op, x, "direct") != render_step(value, op, x, "decomposed")
            if multi and step.well_formed:
                n += 1
                n_direct += step.style == "direct"
            value = int(step.text.split("=")[-1]) if step.well_formed else value
    assert n > 300
    assert abs(n_direct / n - 0.5) < 4 * math.sqrt(0.25 / n), (n_direct, n)  # statistical: 4 binomial sigmas


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_generate_logprobs_match_scoring(tok, teacher, records, temperature):
    prompts = prompts_of(tok, records[:50] + records[-10:])
    gens = teacher.generate(prompts, SamplingParams(max_new_tokens=300, temperature=temperature, n=2,
                                                    seed=11, top_k_logprobs=4))
    assert [g.prompt_index for g in gens] == [i for i in range(len(prompts)) for _ in range(2)]
    for g in gens:
        full = teacher.next_token_logprobs(g.prompt_ids, g.token_ids, temperature=temperature)
        gathered = full[torch.arange(len(g.token_ids)), torch.tensor(g.token_ids)]
        assert torch.equal(gathered, torch.tensor(g.logprobs, dtype=torch.float32))
        assert len(g.topk_ids) == len(g.token_ids) and all(len(row) == 4 for row in g.topk_ids)
        for t, (tk, tl) in enumerate(zip(g.topk_ids, g.topk_logprobs)):
            assert tl == sorted(tl, reverse=True)
            assert torch.equal(full[t, tk], torch.tensor(tl, dtype=torch.float32))
        assert g.text == tok.decode(g.token_ids, skip_special_tokens=True)


def test_top_p_drops_the_floor(tok, teacher, records):
    gens = teacher.generate(prompts_of(tok, records[:40]), SamplingParams(max_new_tokens=300, top_p=0.99, seed=2))
    for g, r in zip(gens, records[:40]):
        assert g.text.endswith("\\boxed{" + r["gold"] + "}")
        assert all(lp > math.log(0.49) for lp in g.logprobs)


def test_determinism_under_seed(tok, teacher, records):
    prompts = prompts_of(tok, records[:30])
    a = teacher.generate(prompts, SamplingParams(max_new_tokens=300, seed=5, n=2))
    b = teacher.generate(prompts, SamplingParams(max_new_tokens=300, seed=5, n=2))
    c = teacher.generate(prompts, SamplingParams(max_new_tokens=300, seed=6, n=2))
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.logprobs for g in a] == [g.logprobs for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]


def test_length_limit(tok, teacher):
    (g,) = teacher.generate([ids(tok, "Q:47+38*6\nA:", bos=True)], SamplingParams(max_new_tokens=5, temperature=0))
    assert g.finish_reason == "length" and len(g.token_ids) == 5 and g.text == "47+38"


def test_malformed_prefixes(tok, teacher):
    semi, prompt = tok.convert_tokens_to_ids(";"), ids(tok, "Q:47+38*2\nA:", bos=True)

    def dist_after(text, p=prompt):
        st = teacher.state(p)
        for c in ids(tok, text):
            st.advance(c)
        return st.distribution()

    def tid(c):
        return tok.convert_tokens_to_ids(c)

    # renderings: direct `47+38=85;`, decomposed `47+38=47+30+8=77+8=85;`. A wrong character is
    # continued by position, as if it had been right: each rendering's next character, style-weighted
    assert dist_after("47+38=9") == pytest.approx({tid("5"): 0.5, tid("7"): 0.5})
    assert dist_after("47+38=9x") == pytest.approx({semi: 0.5, tid("+"): 0.5})  # unknown character
    assert dist_after("47+38=95") == pytest.approx({semi: 0.5, tid("+"): 0.5})
    assert dist_after("\\boxed{1") == pytest.approx({semi: 0.5, tid("+"): 0.5})  # answering too early
    assert dist_after("47+38=8599999999999999999999") == {semi: 1.0}  # past every rendering: close
    # a pure-style teacher continues its one rendering: `85` after a wrong first digit, then `;`
    direct = ToyTeacher(tok, style_override="direct")
    st = direct.state(prompt)
    for c in ids(tok, "47+38=9"):
        st.advance(c)
    assert st.distribution() == {tid("5"): 1.0}
    # the wrong step's face value becomes the running value, and the teacher continues from it
    st = teacher.state(prompt)
    for c in ids(tok, "47+38=90;"):
        st.advance(c)
    greedy_from_wrong = []
    for _ in range(40):
        nxt = max(st.distribution().items(), key=lambda kv: (kv[1], -kv[0]))[0]
        greedy_from_wrong.append(nxt)
        if nxt == EOS_ID:
            break
        st.advance(nxt)
    text = tok.decode(greedy_from_wrong, skip_special_tokens=True)
    assert text.startswith("90*2=") and text.endswith("\\boxed{180}")
    # a step without a parsable result keeps the previous value
    d = dist_after("junk;47*2=")  # `junk` is four <unk>; the value stays 47
    assert d == pytest.approx({tok.convert_tokens_to_ids("9"): 0.5, tok.convert_tokens_to_ids("4"): 0.5})
    assert dist_after("47+38=85;85*2=170;\\boxed{171") == {tid("}"): 1.0}  # wrong digit: finish the box
    assert dist_after("47+38=85;85*2=170;\\boxed{171}") == {EOS_ID: 1.0}
    assert dist_after("47+38=85;85*2=170;\\boxed{170}") == {EOS_ID: 1.0}
    # an extra step after the last one: the answer then boxes that step's result
    d = dist_after("47+38=85;85*2=170;170+1=171;\\boxed{17")
    assert d == {tok.convert_tokens_to_ids("1"): 1.0}
    rev = ids(tok, "Q:rev 3817\nA:", bos=True)
    assert dist_after("\\boxed{71", rev) == {tok.convert_tokens_to_ids("8"): 1.0}
    assert dist_after("\\boxed{72", rev) == {tid("8"): 1.0}  # `7183`: continued by position
    assert dist_after("\\boxed{7299}", rev) == {EOS_ID: 1.0}
    lp = teacher.next_token_logprobs(prompt, ids(tok, "47+38=9;;;x\\boxed{}") + [EOS_ID, 5, 6])
    assert torch.isfinite(lp).all()


def test_unparseable_prompt(tok, teacher):
    with pytest.raises(ValueError, match="Q:box"):
        teacher.next_token_logprobs(ids(tok, "Q:box", bos=True), [])
    with pytest.raises(ValueError, match="Q:rev"):
        teacher.generate([ids(tok, "Q:rev \nA:", bos=True)], SamplingParams())
