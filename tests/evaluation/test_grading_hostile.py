"""Hostile predictions: the grader must grade each one, or mark it timeout/no_answer/error, and never crash.

``hostile_predictions`` is shared with bench/grading_hostile.py, which runs the same families at 10,000.
The families are hostile but tractable for math-verify; ``_known_slow`` inputs make it run for seconds
to forever and exercise the hard per-item timeout.
"""

from __future__ import annotations

import random
import time

from dcod.grading import STATUSES, grade

GOLDS = ["5", "\\frac{1}{2}", "(1,2)", "x^2+1", "025", "\\sqrt{2}", "(0,1]", "\\{1,2\\}"]


def _huge_text(rng: random.Random) -> str:
    size = rng.choice([50_000, 300_000, 2_000_000])
    filler = rng.choice(["blah ", "1+", "\\frac{", "{", "$", "answer: ", "\\boxed{", " final answer is "])
    ending = rng.choice(["\\boxed{5}", "", "The answer is 5", "\\boxed{"])
    return filler * (size // len(filler)) + ending


def _nested(rng: random.Random) -> str:
    """Shallow balanced nesting, or nesting that never closes at any depth (deep *balanced* nesting
    makes math-verify's parser run for minutes: it is in _known_slow)."""
    opener, closer = rng.choice([("{", "}"), ("(", ")"), ("\\sqrt{", "}"), ("\\frac{", "}{2}"), ("\\boxed{", "}")])
    if rng.random() < 0.5:
        depth = rng.choice([2, 3, 4])
        return "\\boxed{" + opener * depth + "1" + closer * depth + "}"
    return "\\boxed{" + opener * rng.choice([10, 1_000, 10_000]) + "5"


def _pathological_latex(rng: random.Random) -> str:
    return "\\boxed{" + rng.choice([
        "^^^^", "2^^^^3", "10^10^10", "10^{100000}", "1e100000", "\\infty^\\infty", "\\mathbb{R}^{10^{10}}",
        "1" * rng.choice([100, 5_000, 19_000]), "1," * 50, "+" * 100, "x" * 30, "\\frac{}{}", "\\frac", "\\sqrt",
        "\\left(", "\\right)", "_^_^", "\\\\\\\\", "0.\\overline{9}",
        "\\begin{pmatrix}" + "1&" * 400 + "1\\end{pmatrix}",
        "\\text{" + "a" * 5_000 + "}", "}{", "\\boxed{}", "", " ", "\\", "\\{\\}", "\\frac{1}{0}", "0^0", "\\sqrt{-1}",
    ]) + "}"


def _control_characters(rng: random.Random) -> str:
    noise = "".join(chr(rng.randrange(0, 32)) for _ in range(rng.randrange(1, 200)))
    return rng.choice(["", "\\boxed{5}", "\\boxed{5" + noise + "}"]) + noise + rng.choice(["", "\x00", "\x7f\x1b[31m"])


def _bad_encoding(rng: random.Random):
    kind = rng.randrange(4)
    if kind == 0:  # invalid UTF-8 bytes
        return b"\xff\xfe\\boxed{5}\xc3\x28" + bytes(rng.randrange(256) for _ in range(100))
    if kind == 1:
        return "\\boxed{\ud800" + "5}" + "\udfff"  # lone surrogates
    if kind == 2:
        return rng.choice([None, 5, 2.5, ["\\boxed{5}"], {"a": 1}])
    return "".join(chr(rng.choice([rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)]))
                   for _ in range(rng.randrange(1, 300)))


def _regex_traps(rng: random.Random) -> str:
    return rng.choice([
        "$" * 20_000, "\\[" * 100, "\\(" * 100, "answer: $" * 100, "final answer is $" * 1_000,
        "\\boxed{1}" * 2_000, "<think>" * 1_000 + "\\boxed{5}", "</think>" * 1_000 + "\\boxed{5}",
        "<think>\\boxed{5}", "\\boxed{5}</think>", " [ " * 5_000, "1/2/" * 5_000, "-" * 20_000 + "5",
        "\\frac{1}{2}" * 2_000,
    ])


def _known_slow(rng: random.Random) -> str:
    """Inputs on which math-verify 0.9.0 runs for seconds to forever: they exercise the hard timeout."""
    return rng.choice([
        "\\boxed{10^{10^{10}}}", "\\boxed{9^{9^{9^{9}}}}", "\\boxed{(10^{100})!}", "\\boxed{1000000!}",
        "\\boxed{\\int_0^\\infty e^{-x^{x^{x}}} dx}", "\\boxed{" + "+" * 3_000 + "}", "\\[" * 5_000, "\\(" * 5_000,
        "\\boxed{" + "{" * 1_000 + "1" + "}" * 1_000 + "}", "\\boxed{" + "\\frac{" * 1_000 + "1}{2}" * 1_000 + "}",
    ])


FAMILIES = (_huge_text, _nested, _pathological_latex, _control_characters, _bad_encoding, _regex_traps)


def hostile_predictions(n: int, seed: int = 0, slow_fraction: float = 0.006) -> list[tuple[str, str, object]]:
    """n (family, gold, prediction) triples, reproducible by seed: the families in turn, with a
    `slow_fraction` of known-slow inputs spread evenly (each of those costs a full timeout)."""
    rng = random.Random(seed)
    slow_every = round(1 / slow_fraction) if slow_fraction > 0 else n + 1
    triples = []
    for index in range(n):
        family = _known_slow if index % slow_every == slow_every - 1 else FAMILIES[index % len(FAMILIES)]
        triples.append((family.__name__.lstrip("_"), rng.choice(GOLDS), family(rng)))
    return triples


def test_hostile_predictions_never_crash_the_grader():
    triples = hostile_predictions(500, seed=1)
    timeout, workers = 3.0, 2
    started = time.monotonic()
    results = grade([gold for _, gold, _ in triples], [prediction for _, _, prediction in triples],
                    timeout=timeout, workers=workers)
    elapsed = time.monotonic() - started
    assert len(results) == len(triples)
    assert all(result.status in STATUSES for result in results)
    slow = [result.status for (family, _, _), result in zip(triples, results) if family == "known_slow"]
    assert slow and set(slow) <= {"timeout", "error"}, slow  # killed, counted, wrong
    other_timeouts = sum(result.status == "timeout" for (family, _, _), result in zip(triples, results)
                         if family != "known_slow")
    assert other_timeouts <= 10, other_timeouts  # the rest is hostile but tractable
    assert any(result.correct for result in results)  # and still graded
    # Every item ends within its limit, so the run is bounded whatever the inputs.
    assert elapsed < 10 + len(triples) * timeout / workers, elapsed
