"""The synthetic chain-arithmetic world (docs/toy_world.md): problems, the two step styles, splits, analysis.

A problem is a start value and k left-to-right operations, shown as ``Q:47+38*6-91\\nA:``; its
solution writes one step per operation, each ``;``-terminated, then ``\\boxed{answer}``:
``47+38=85;85*6=510;510-91=419;\\boxed{419}``. Every step can be written in two styles:

- *direct* ``85*6=510``: one ``=``, the whole result in one go (hard for a small student);
- *decomposed* ``85*6=80*6+5*6=480+30=510``, ``47+38=47+30+8=77+8=85``, ``85-38=85-30-8=55-8=47``:
  place-value parts, each sub-result easy (the student's learnable native style). When there is
  nothing to split (a one-digit-place operand such as ``+40``, or ``*`` on a number with a single
  non-zero part such as 80) the decomposed step *is* the direct one.

The base student's pre-training traces are decomposed-only and, with ``pretrain_slip`` > 0, written
by a careless hand that forgets carries and borrows (``118+2=110``, ``110-8=112``; ``slip_add``,
``slip_sub``): a systematic misconception the teacher's correct traces must teach away.

In the next world (docs/toy_world.md, "Registers and layout") a step may also carry layout spaces around its
operators and ``=`` (``lay_out``); the step analysis reads a step without them (``compact``).

A second skill, string reversal (``Q:rev 3817\\nA:`` -> ``\\boxed{7183}``), measures retention.

Splits are generated evaluation-first, each from its own ``random.Random`` seeded with
``"<seed>:<split>"``, so resizing one split never changes the problems of another evaluation split;
the training splits (``train``, ``pretrain``) are drawn afterwards and exclude every problem already
used, so no question string is in two splits.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MAX_VALUE = 999
STYLES = ("direct", "decomposed")


# --------------------------------------------------------------------------- configuration
@dataclass
class WorldConfig:
    """Every size, range and seed of the world. Ranges are inclusive ``(lo, hi)`` pairs."""

    seed: int = 0
    start_range: tuple[int, int] = (10, 99)
    add_range: tuple[int, int] = (10, 99)  # operand of + and -
    mul_range: tuple[int, int] = (2, 9)  # operand of *
    max_value: int = MAX_VALUE  # every intermediate value stays in [0, max_value]
    train_k: tuple[int, int] = (1, 5)
    n_train: int = 4000
    validation_k: tuple[int, int] = (1, 5)
    n_validation: int = 200
    id_k: tuple[int, int] = (1, 3)
    n_id: int = 300
    long_k: tuple[int, int] = (4, 5)
    n_long: int = 300
    n_retention: int = 200
    reverse_len: tuple[int, int] = (3, 6)
    pretrain_k: tuple[int, int] = (1, 5)
    n_pretrain: int = 6000  # decomposed-only arithmetic traces for the base student
    n_pretrain_reversal: int = 2000  # reversal examples in the same `pretrain` split
    # probability that an addition or subtraction inside a pre-training trace forgets its carry or borrow
    # (``slip_add``/``slip_sub``): the base student's systematic misconception, which the teacher's correct
    # traces must teach away (docs/toy_world.md). 0: correct pre-training traces.
    pretrain_slip: float = 0.0
    # the base student's own prior over the notational variants of a decomposed step (``VARIANTS``): the
    # probability of each flag in a pre-training step (docs/toy_world.md, "The next world"). 0: the
    # canonical rendering only (the current world).
    pretrain_p_low_first: float = 0.0
    pretrain_p_skip: float = 0.0
    pretrain_p_round: float = 0.0
    # ... and its prior over the direct style at a branch point (a step whose decomposed rendering differs):
    # the student knows the notation, its careless hand writes the result (docs/toy_world.md, "The next world")
    pretrain_p_direct: float = 0.0
    # ... and its prior over the layout: each operator and `=` of a step written with a space on either side
    # (`47 + 38 = 85`) with this probability (``lay_out``; docs/toy_world.md, "The next world"). 0: compact
    pretrain_p_space: float = 0.0
    # ... and how a slot is laid out: ``spaced`` (a space on either side with ``pretrain_p_space``, else none) or
    # ``padded`` (exactly one space, before the slot with ``pretrain_p_space``, else after it: every layout of a
    # step has the same length, so no digit moves; ``lay_out``)
    pretrain_layout: str = "spaced"
    extrapolate_k: tuple[int, int] = (6, 7)
    n_extrapolate: int = 0  # off by default: k beyond training measures extrapolation only

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith(("_k", "_range", "_len")):
                v = tuple(int(x) for x in v)
                if len(v) != 2 or v[0] > v[1]:
                    raise ValueError(f"WorldConfig.{f.name} must be an inclusive (lo, hi), got {v}")
                setattr(self, f.name, v)
            elif f.name.startswith("n_") and int(v) < 0:
                raise ValueError(f"WorldConfig.{f.name} must be >= 0, got {v}")
        for name in ("pretrain_slip", "pretrain_p_direct", "pretrain_p_space", *(f"pretrain_p_{v}" for v in VARIANTS)):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.pretrain_layout not in LAYOUTS:
            raise ValueError(f"WorldConfig.pretrain_layout must be one of {', '.join(LAYOUTS)}, "
                             f"got {self.pretrain_layout!r}")
        if self.reverse_len[0] < 1:
            raise ValueError("WorldConfig.reverse_len must start at >= 1")
        # `long` measures compounding errors inside the trained range, not length extrapolation.
        if not (self.train_k[0] <= self.long_k[0] and self.long_k[1] <= self.train_k[1]):
            raise ValueError(f"long_k {self.long_k} must lie inside train_k {self.train_k}")

    def pretrain_variant_probabilities(self) -> dict[str, float]:
        """The base student's prior over the variant flags, ``{flag: probability}``."""
        return {name: float(getattr(self, f"pretrain_p_{name}")) for name in VARIANTS}

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown world config key(s): {', '.join(unknown)}")
        return cls(**d)


# --------------------------------------------------------------------------- rendering
def apply_op(value: int, op: str, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"unknown op {op!r}")


def place_parts(a: int) -> list[int]:
    """Non-zero place-value parts of a non-negative integer: 123 -> [100, 20, 3], 80 -> [80]."""
    s = str(a)
    return [int(d) * 10 ** (len(s) - 1 - i) for i, d in enumerate(s) if d != "0"]


# Notational variants of a decomposed step (docs/toy_world.md, "The next world"), each a flag of the
# rendering; every combination is a correct derivation of the same result:
# - low_first: the parts in the other order: ``47+38=47+8+30=55+30=85``, ``85*6=5*6+80*6=30+480=510``;
# - skip: the expansion omitted (an optional intermediate step): ``47+38=77+8=85``, ``85*6=480+30=510``;
# - round: an operand of + or - ending in 5-9 rounded up to the next ten, then corrected:
#   ``47+38=47+40-2=87-2=85``, ``85-38=85-40+2=45+2=47`` (when the value is at least that ten).
# A flag that does not apply to a step (round on ``*``, anything where there is nothing to split) changes
# nothing. CANONICAL (no flag) is the only rendering of the current world.
VARIANTS = ("low_first", "skip", "round")
Variant = tuple[bool, bool, bool]
CANONICAL: Variant = (False, False, False)


def render_step(value: int, op: str, operand: int, style: str, variant: Variant = CANONICAL) -> str:
    """One step, without its ``;``. ``style`` is ``direct`` or ``decomposed``; ``variant`` the decomposed
    step's flags, in ``VARIANTS`` order."""
    return _render_step(value, op, operand, style, apply_op, variant)[0]


def _rounds(value: int, op: str, operand: int) -> bool:
    """Whether the ``round`` variant applies: + or -, units 5-9, and no negative intermediate value."""
    tens, units = operand - operand % 10, operand % 10
    return op in "+-" and tens > 0 and units >= 5 and value >= tens + 10


def _render_step(value: int, op: str, operand: int, style: str, combine,
                 variant: Variant = CANONICAL) -> tuple[str, int]:
    """(step text, the result it writes). ``combine(x, op, y)`` does every addition and subtraction of
    the decomposed rendering and of its result (``apply_op``: correct arithmetic; ``slipped``: a
    careless writer); products of place-value parts are always exact. ``variant``: see ``VARIANTS``."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    low_first, skip, round_up = variant
    head = f"{value}{op}{operand}="
    if style == "direct" or (op == "*" and len(place_parts(value) if value > 0 else []) < 2):
        # nothing to split (negative values only arise from a wrong prefix)
        result = combine(value, op, operand) if op in "+-" else value * operand
        return f"{head}{result}", result
    if op in "+-":
        tens, units = operand - operand % 10, operand % 10
        if units == 0 or tens == 0:
            result = combine(value, op, operand)
            return f"{head}{result}", result
        inverse = "-" if op == "+" else "+"
        parts = ([(op, tens + 10), (inverse, 10 - units)] if round_up and _rounds(value, op, operand)
                 else [(op, tens), (op, units)])
        (op1, first), (op2, second) = parts[::-1] if low_first else parts
        mid = combine(value, op1, first)
        result = combine(mid, op2, second)
        expansion = "" if skip else f"{value}{op1}{first}{op2}{second}="
        return f"{head}{expansion}{mid}{op2}{second}={result}", result
    parts = place_parts(value)[::-1] if low_first else place_parts(value)
    products = [p * operand for p in parts]
    result = products[0]
    for term in products[1:]:
        result = combine(result, "+", term)
    expansion = "" if skip else "+".join(f"{p}*{operand}" for p in parts) + "="
    return f"{head}{expansion}{'+'.join(map(str, products))}={result}", result


def all_variants() -> list[Variant]:
    """Every flag combination, CANONICAL first."""
    return [tuple(bool(int(b)) for b in f"{i:03b}") for i in range(2 ** len(VARIANTS))]


def variant_renderings(value: int, op: str, operand: int) -> dict[Variant, str]:
    """Every variant's decomposed rendering of one step (several are equal where a flag does not apply; all
    equal the direct step when there is nothing to split)."""
    return {v: render_step(value, op, operand, "decomposed", v) for v in all_variants()}


def variant_probabilities(probabilities: dict[str, float]) -> dict[Variant, float]:
    """A writer's probability of each variant, the flags drawn independently (``{flag: probability}``, absent
    flags 0). The canonical variant's weight is exactly 1.0 when every probability is 0."""
    unknown = sorted(set(probabilities) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {VARIANTS}")
    ps = [float(probabilities.get(name, 0.0)) for name in VARIANTS]
    out = {}
    for v in all_variants():
        weight = 1.0
        for flag, p in zip(v, ps):
            weight *= p if flag else 1.0 - p
        out[v] = weight
    return out


def draw_variants(n_steps: int, probabilities: dict[str, float], rng: random.Random) -> list[Variant]:
    """One variant per step, drawn with the writer's probabilities (one uniform per flag and step)."""
    ps = [float(probabilities.get(name, 0.0)) for name in VARIANTS]
    return [tuple(rng.random() < p for p in ps) for _ in range(n_steps)]


# Layout (docs/toy_world.md, "The next world"): a writer may put a space on either side of each binary operator and
# `=` of a step (`47 + 38 = 47+30+8 = 77 + 8 = 85`), a free choice that changes no value. A slot is a `=`, or an
# operator right after a digit (a minus sign after `=` is no slot). The step analysis reads a step with its layout
# spaces removed (``_SPACED``).
_SPACED = re.compile(r" ?([=+*-]) ?")


def is_slot(text: str, i: int) -> bool:
    """Whether ``text[i]`` is a layout slot: ``=``, or ``+ - *`` right after a digit."""
    return text[i] == "=" or (text[i] in "+-*" and i > 0 and text[i - 1].isdigit())


# ``spaced``: a slot is written ` = ` with the probability, else `=`; ``padded``: ` =` with the probability, else `= `
# (one space at every slot, so every layout of a step has the same length and every digit keeps its position)
LAYOUTS = ("spaced", "padded")


def lay_out(completion: str, probability: float, rng: random.Random, layout: str = "spaced") -> str:
    """A completion with each slot of its steps (before the ``\\boxed`` answer) laid out by ``layout`` (``LAYOUTS``),
    one uniform per slot, in order."""
    steps, box, answer = completion.partition("\\boxed")
    out = []
    for i, ch in enumerate(steps):
        if not is_slot(steps, i):
            out.append(ch)
        elif layout == "padded":
            out.append(f" {ch}" if rng.random() < probability else f"{ch} ")
        else:
            out.append(f" {ch} " if rng.random() < probability else ch)
    return "".join(out) + box + answer


def compact(step_text: str) -> str:
    """A step without its layout spaces (one optional space on either side of each operator and ``=``)."""
    return _SPACED.sub(r"\1", step_text) if " " in step_text else step_text


def slip_add(x: int, y: int) -> int:
    """``x + y`` forgetting the lowest carry into a digit the larger operand already has (a carry that
    starts a new leading digit is written): 118+2 -> 110, 480+30 -> 410, 98+20 -> 118 (no slip)."""
    if x < 0 or y < 0:
        return x + y
    for j in range(len(str(max(x, y))) - 1):  # below the first carry no carry comes in
        if x // 10**j % 10 + y // 10**j % 10 >= 10:
            return x + y - 10 ** (j + 1)
    return x + y


def slip_sub(x: int, y: int) -> int:
    """``x - y`` forgetting the lowest borrow (the digit is written, the next one never decremented):
    110-8 -> 112, 85-38 -> 57."""
    if x < y or y < 0:
        return x - y
    for j in range(len(str(x)) - 1):
        if x // 10**j % 10 < y // 10**j % 10:
            return x - y + 10 ** (j + 1)
    return x - y


def slipped(probability: float, rng: random.Random):
    """A ``combine`` for ``_render_step`` that slips (``slip_add``/``slip_sub``) with ``probability`` on
    every addition or subtraction where a slip changes the result."""
    def combine(x: int, op: str, y: int) -> int:
        exact = apply_op(x, op, y)
        wrong = slip_add(x, y) if op == "+" else slip_sub(x, y) if op == "-" else exact
        return wrong if wrong != exact and rng.random() < probability else exact
    return combine


def format_prompt(start: int, ops) -> str:
    return "Q:" + str(start) + "".join(f"{op}{x}" for op, x in ops) + "\nA:"


def format_reverse_prompt(digits: str) -> str:
    return f"Q:rev {digits}\nA:"


def boxed(answer) -> str:
    return "\\boxed{" + str(answer) + "}"


def step_values(start: int, ops) -> list[int]:
    """Running values: ``[start, after op 1, ..., after op k]``."""
    values = [start]
    for op, x in ops:
        values.append(apply_op(values[-1], op, x))
    return values


def solve(problem: dict) -> str:
    """Gold answer (as the string inside ``\\boxed{}``) of a record or ``parse_prompt`` result."""
    if problem["task"] == "reverse":
        digits = problem.get("digits") or parse_prompt(problem["question"])["digits"]
        return digits[::-1]
    return str(step_values(problem["start"], problem["ops"])[-1])


def render_completion(problem: dict, styles, combine=apply_op, variants=None) -> str:
    """Full completion text (no eos). ``styles``: one style for every step, or one per step. ``combine``:
    the arithmetic of each step (``slipped(...)``: a careless writer's, whose wrong results carry on).
    ``variants``: one variant per step (``VARIANTS``); None: the canonical rendering."""
    if problem["task"] == "reverse":
        return boxed(solve(problem))
    ops = problem["ops"]
    if isinstance(styles, str):
        styles = [styles] * len(ops)
    if len(styles) != len(ops):
        raise ValueError(f"{len(styles)} styles for {len(ops)} steps")
    variants = [CANONICAL] * len(ops) if variants is None else list(variants)
    if len(variants) != len(ops):
        raise ValueError(f"{len(variants)} variants for {len(ops)} steps")
    value, steps = problem["start"], []
    for (op, x), style, variant in zip(ops, styles, variants):
        text, value = _render_step(value, op, x, style, combine, variant)
        steps.append(text + ";")
    return "".join(steps) + boxed(value)


_ARITH_PROMPT = re.compile(r"Q:(\d+)((?:[+\-*]\d+)*)\nA:")
_REV_PROMPT = re.compile(r"Q:rev (\d+)\nA:")
_OP_TERM = re.compile(r"([+\-*])(\d+)")


def parse_prompt(text: str) -> dict:
    """``{task, start, ops}`` or ``{task: 'reverse', digits}``; ValueError naming the text."""
    m = _ARITH_PROMPT.fullmatch(text)
    if m:
        ops = [[op, int(x)] for op, x in _OP_TERM.findall(m.group(2))]
        return {"task": "arith", "start": int(m.group(1)), "ops": ops}
    m = _REV_PROMPT.fullmatch(text)
    if m:
        return {"task": "reverse", "digits": m.group(1)}
    raise ValueError(f"not a toy-world prompt: {text!r}")


# --------------------------------------------------------------------------- sampling problems
def _feasible_ops(value: int, cfg: WorldConfig) -> list[tuple[str, int, int]]:
    """(op, lo, hi) for every op that keeps the result in [0, max_value] with some operand."""
    a_lo, a_hi = cfg.add_range
    m_lo, m_hi = cfg.mul_range
    out = []
    if value + a_lo <= cfg.max_value:
        out.append(("+", a_lo, min(a_hi, cfg.max_value - value)))
    if value - a_lo >= 0:
        out.append(("-", a_lo, min(a_hi, value)))
    if value * m_lo <= cfg.max_value:
        out.append(("*", m_lo, min(m_hi, cfg.max_value // value) if value else m_hi))
    return out


def _sample_arith(rng: random.Random, cfg: WorldConfig, k_range: tuple[int, int]) -> dict:
    k = rng.randint(*k_range)
    value = start = rng.randint(*cfg.start_range)
    ops = []
    for _ in range(k):
        feasible = _feasible_ops(value, cfg)
        if not feasible:
            raise ValueError(f"no feasible operation from value {value}: check WorldConfig ranges")
        op, lo, hi = rng.choice(feasible)
        x = rng.randint(lo, hi)
        ops.append([op, x])
        value = apply_op(value, op, x)
    return {"task": "arith", "start": start, "ops": ops}


def _sample_reverse(rng: random.Random, cfg: WorldConfig) -> dict:
    n = rng.randint(*cfg.reverse_len)
    return {"task": "reverse", "digits": "".join(rng.choice("123456789") for _ in range(n))}


def _record(split: str, i: int, p: dict) -> dict:
    if p["task"] == "reverse":
        gold = p["digits"][::-1]
        return {"id": f"{split}-{i:05d}", "task": "reverse", "question": format_reverse_prompt(p["digits"]),
                "gold": gold, "k": 0, "start": None, "ops": [],
                "completion_direct": boxed(gold), "completion_decomposed": boxed(gold)}
    return {"id": f"{split}-{i:05d}", "task": "arith", "question": format_prompt(p["start"], p["ops"]),
            "gold": solve(p), "k": len(p["ops"]), "start": p["start"], "ops": p["ops"],
            "completion_direct": render_completion(p, "direct"),
            "completion_decomposed": render_completion(p, "decomposed")}


def _draw(split: str, n: int, sampler, used: set[str], rng: random.Random) -> list[dict]:
    """``n`` distinct problems whose question is not in ``used`` (``used`` is updated)."""
    out: list[dict] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"split {split!r}: cannot find {n} distinct unused problems; "
                             "the problem space is too small for the requested sizes")
        rec = _record(split, len(out), sampler(rng))
        if rec["question"] not in used:
            used.add(rec["question"])
            out.append(rec)
    return out


def build_world(cfg: WorldConfig | None = None) -> dict[str, list[dict]]:
    """All splits as ``{split: [record, ...]}``; deterministic given ``cfg``."""
    cfg = cfg or WorldConfig()
    used: set[str] = set()

    def rng(split):
        return random.Random(f"{cfg.seed}:{split}")

    def arith(k_range):
        return lambda r: _sample_arith(r, cfg, k_range)

    def reverse(r):
        return _sample_reverse(r, cfg)

    # evaluation splits first, so their problems are fixed whatever the training sizes are
    eval_splits = [("validation", cfg.n_validation, arith(cfg.validation_k)),
                   ("id", cfg.n_id, arith(cfg.id_k)),
                   ("long", cfg.n_long, arith(cfg.long_k)),
                   ("retention", cfg.n_retention, reverse)]
    if cfg.n_extrapolate:
        eval_splits.append(("extrapolate", cfg.n_extrapolate, arith(cfg.extrapolate_k)))
    world = {name: _draw(name, n, sampler, used, rng(name)) for name, n, sampler in eval_splits}
    world["train"] = _draw("train", cfg.n_train, arith(cfg.train_k), used, rng("train"))
    r = rng("pretrain")
    pre = _draw("pretrain", cfg.n_pretrain, arith(cfg.pretrain_k), used, r)
    prior = cfg.pretrain_variant_probabilities()
    if any(prior.values()) or cfg.pretrain_p_direct:
        # the student's own prior over the notational variants and the direct style; their own streams, so
        # the problems drawn above do not depend on them (off: no draw at all, the current world bit for bit)
        variant_rng = random.Random(f"{cfg.seed}:pretrain_variants")
        style_rng = random.Random(f"{cfg.seed}:pretrain_styles")
        for rec in pre:
            rec["variants"] = draw_variants(len(rec["ops"]), prior, variant_rng)
            rec["styles"] = [
                "direct" if style_rng.random() < cfg.pretrain_p_direct else "decomposed" for _ in rec["ops"]]
            rec["completion_decomposed"] = render_completion(rec, rec["styles"], variants=rec["variants"])
    if cfg.pretrain_slip:
        # its own stream, so the problems drawn above do not depend on the slip probability
        combine = slipped(cfg.pretrain_slip, random.Random(f"{cfg.seed}:pretrain_slip"))
        for rec in pre:
            styles, variants = rec.get("styles", "decomposed"), rec.get("variants")
            rec["completion_decomposed"] = render_completion(rec, styles, combine, variants)
            rec["slipped"] = rec["completion_decomposed"] != render_completion(rec, styles, variants=variants)
    if cfg.pretrain_p_space or cfg.pretrain_layout != "spaced":
        # its own stream again: the layout changes no problem, variant, style or slip drawn above
        layout_rng = random.Random(f"{cfg.seed}:pretrain_layout")
        for rec in pre:
            rec["completion_decomposed"] = lay_out(rec["completion_decomposed"], cfg.pretrain_p_space, layout_rng,
                                                   cfg.pretrain_layout)
    pre_rev = _draw("pretrain", cfg.n_pretrain_reversal, reverse, used, r)
    for i, rec in enumerate(pre_rev, start=len(pre)):
        rec["id"] = f"pretrain-{i:05d}"
    world["pretrain"] = pre + pre_rev
    return world


def write_world(cfg: WorldConfig | None, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``<split>.jsonl`` per split atomically (temp file + ``os.replace``); returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, records in build_world(cfg).items():
        path = out / f"{split}.jsonl"
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{split}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec) + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths[split] = path
    return paths


def config_dict(cfg: WorldConfig) -> dict:
    """JSON-friendly dict of the config (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


# --------------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class StepRecord:
    """One step of a generated completion.

    ``style``: ``direct`` (exactly one ``=``), ``decomposed`` (more) or ``none`` (no ``=``).
    ``well_formed``: ``a<op>b=...=r`` with integers, the middle terms sums/products of integers.
    ``correct``: *locally* correct: well formed, its ``<op>b`` is the problem's operation at this
    position, and ``r`` equals its own stated ``a <op> b`` (a wrong ``a`` copied from a wrong earlier
    step does not make this step wrong: the error is charged to the step that made it).
    ``terminated``: the step ended with ``;`` (False for a trailing fragment, e.g. a truncation).
    """

    index: int
    text: str
    style: str
    well_formed: bool
    correct: bool
    terminated: bool = True

    @property
    def malformed(self) -> bool:
        return not self.well_formed


_NUM = r"-?\d+"
_HEAD = re.compile(rf"({_NUM})([+\-*])(\d+)")
_EXPR = re.compile(rf"{_NUM}(?:[+\-*]{_NUM})*")


def _analyze_step(index: int, text: str, problem_ops, terminated: bool) -> StepRecord:
    parts = text.split("=")
    n_eq = len(parts) - 1
    style = "none" if n_eq == 0 else "direct" if n_eq == 1 else "decomposed"
    head = _HEAD.fullmatch(parts[0]) if n_eq else None
    well_formed = (
        terminated and head is not None and re.fullmatch(_NUM, parts[-1]) is not None
        and all(_EXPR.fullmatch(p) for p in parts[1:-1])
    )
    correct = False
    if well_formed and index < len(problem_ops):
        a, op, b = int(head.group(1)), head.group(2), int(head.group(3))
        exp_op, exp_b = problem_ops[index]
        correct = op == exp_op and b == exp_b and int(parts[-1]) == apply_op(a, op, b)
    return StepRecord(index, text, style, bool(well_formed), correct, terminated)


def direct_at_branch(step_text: str) -> bool:
    """A step written in the direct style (one ``=``) where the decomposed rendering of the same
    ``a<op>b`` differs, i.e. where the writer had a style choice (a branch point). ``85+4=89`` is no
    choice (both styles write it so); ``85*6=510`` is."""
    parts = compact(step_text).split("=")
    head = _HEAD.fullmatch(parts[0]) if len(parts) == 2 else None
    if head is None:
        return False
    value, op, operand = int(head.group(1)), head.group(2), int(head.group(3))
    return render_step(value, op, operand, "direct") != render_step(value, op, operand, "decomposed")


def writes_direct_at_branch(completion_text: str) -> bool:
    """Whether a completion writes any step in the direct style at a branch point (its ``;``-separated
    segments before the ``\\boxed{`` answer)."""
    return any(direct_at_branch(segment) for segment in completion_text.split(";")
               if not compact(segment).startswith("\\boxed"))


def analyze_completion(record: dict, completion_text: str) -> list[StepRecord]:
    """Parse a generated completion into steps (no grading of the final answer here).

    Steps are the ``;``-separated segments before the ``\\boxed{`` answer; a non-empty trailing
    fragment that is not an answer (a truncated step) is returned as a malformed, unterminated step.
    Reversal records have no steps.
    """
    if record["task"] == "reverse":
        return []
    ops = record["ops"]
    segments = [compact(segment) for segment in completion_text.split(";")]  # layout spaces are no error
    steps = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg.startswith("\\boxed") or (last and seg == ""):
            break
        steps.append(_analyze_step(len(steps), seg, ops, terminated=not last))
    return steps
