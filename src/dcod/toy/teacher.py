"""The exact programmatic teacher of the toy world (docs/toy_world.md, "Teacher").

Why programmatic: a neural teacher that is reliable on direct multi-digit steps costs tens of CPU
minutes to train; this teacher is exact, costs nothing, and still behaves like a model: it defines
the next-token distribution at *any* completion prefix, so it can score traces, give full
distributions for on-policy KD, and sample, through the same interface as the HF/vLLM backends.

How it reads a prefix (a small incremental state machine, O(1) per token):
- the completion is a sequence of segments terminated by ``;``. The running value starts at the
  problem's start value; after each completed segment it becomes the face value of the number right
  after that segment's last ``=`` (kept when none parses). The teacher takes the prefix's own results
  at face value, as a neural teacher would: after a wrong step it continues correctly *from the wrong
  value*.
- with j < k completed segments, the current segment must be a prefix of one of the renderings
  of step j from the running value, each followed by ``;`` (direct, weight ``p_direct``; decomposed,
  weight ``1 - p_direct``, shared among its notational variants ``dcod.toy.world.VARIANTS`` by the
  ``variants`` probabilities: docs/toy_world.md, "The next world"; merged when identical). The next-token distribution is the weighted next
  characters of the still-consistent renderings, renormalised: probability 1 on forced characters,
  the style split on the first character where the renderings differ. If every consistent
  rendering has weight 0 (e.g. ``p_direct=1`` scoring a decomposed step) the teacher continues the
  rendering it is on: that is the limit of ``p_direct -> 1``.
- registers (``registers``, default none; docs/toy_world.md, "Registers and layout"): a latent drawn once per
  trace, each register with its own variant and space probabilities. The candidates of a step are every
  register's renderings weighted by the register's posterior given the prefix, updated at each ``;`` from the
  weights of the renderings still consistent: the next-token distribution is the exact mixture, and a completion
  has probability sum_r w_r P_r(completion).
- layout (``space`` or a register's ``space``, default 0): before each slot of a rendering (``=``, or an operator
  after a digit: ``dcod.toy.world.is_slot``) a space with that probability, then the slot's character and a
  forced closing space; spaces take no position in the (compact) renderings. ``layout="padded"``: every slot has
  exactly one space, before it with that probability (then the slot's character), else after it (forced after
  the character), so every layout of a step has the same length.
- with j >= k the segment must be a prefix of ``\\boxed{value}`` + eos; the reversal task expects
  ``\\boxed{reversed digits}`` + eos.
- a diverged (malformed) segment gets a defined answer, the one a neural teacher reading the
  prefix at face value would give: it continues the renderings that were consistent up to the
  first wrong character *by position*, as if that character had been right (``50*7=2`` is continued
  with ``50;``, keeping the number's length, and the step's face value 250 is carried on). Past the
  end of every rendering it closes the segment: ``;`` in a step, eos in the answer. After eos the
  distribution is eos with probability 1. (Session 1 put probability 1 on ``;`` right after the
  first wrong character; on-policy KD then taught the student to close a step after one wrong
  digit and collapsed to 0.8% accuracy, an artefact of the toy teacher rather than of GKD.)

Floor: so that every KL and every stored log-prob stays finite, every one of the V vocabulary tokens
(special tokens included) gets probability ``floor``:  p = (1 - V*floor) * p_exact + floor.
The floored distribution is the teacher: it is what ``next_token_logprobs`` returns, what
``generate`` samples from, and what its log-probs are reported under.
"""

from __future__ import annotations

import bisect
from functools import lru_cache

import numpy as np
import torch

from dcod.generation import Generation, SamplingParams, process_logits
from dcod.toy.world import (LAYOUTS, apply_op, boxed, compact, is_slot, parse_prompt, render_step,
                            variant_probabilities, variant_renderings)
from dcod.toy.tokenizer import WORLD_CHARS

_STYLE_P_DIRECT = {"direct": 1.0, "decomposed": 0.0}


class _Row:
    """One processed next-token distribution: log-probs, sampling CDF, argmax, top-k (cached)."""

    __slots__ = ("logp", "logp_list", "cdf", "total", "argmax", "topk")

    def __init__(self, logp: np.ndarray, k: int):
        self.logp = logp  # float32 [V]
        self.logp_list = logp.tolist()
        self.cdf = np.cumsum(np.exp(logp.astype(np.float64))).tolist()
        self.total = self.cdf[-1]
        self.argmax = int(np.argmax(logp))  # first maximum: ties go to the lowest token id
        self.topk = None
        if k:
            order = np.lexsort((np.arange(len(logp)), -logp))[:k]  # by log-prob, then lowest id
            self.topk = (order.tolist(), logp[order].tolist())


class TeacherState:
    """Incremental reading of one completion: ``advance(token_id)``, ``distribution()``."""

    __slots__ = ("t", "ops", "k", "answer", "value", "j", "cands", "pos", "diverged", "seg", "done", "post", "lay")

    def __init__(self, teacher: ToyTeacher, problem: dict):
        self.t = teacher
        if problem["task"] == "reverse":
            self.ops, self.k, self.answer, self.value = (), 0, problem["digits"][::-1], None
        else:
            self.ops, self.answer, self.value = problem["ops"], None, problem["start"]
            self.k = len(self.ops)
        self.j = 0
        self.done = False
        self.post = teacher.register_weights  # the posterior over the registers (None: one register)
        self._new_segment()

    def _new_segment(self):
        in_step = self.j < self.k
        if in_step:
            op, x = self.ops[self.j]
            self.cands = self.t._step_candidates(self.value, op, x)
            if self.post is not None:  # each register's renderings, weighted by its posterior
                self.cands = [(ids, self.post[r] * w, result, r) for ids, w, result, r in self.cands]
        else:
            ans = self.answer if self.answer is not None else self.value
            self.cands = self.t._answer_candidates(ans)
        self.pos = 0
        self.diverged = False
        self.seg = []
        self.lay = 0  # layout: 0 between characters, 1 after a space before a slot, 2 before the space after it

    def advance(self, tok: int) -> None:
        """Feed one completion token (any id: unknown or special tokens just diverge the segment)."""
        if self.done:
            return
        t = self.t
        if tok == t.eos_id:
            self.done = True
            return
        self.seg.append(tok)
        if t.layout and self.j < self.k:
            self._advance_laid_out(tok)
        else:
            if not self.diverged:
                pos = self.pos
                alive = [c for c in self.cands if c[0][pos] == tok]
                if alive:
                    self.cands = alive
                else:  # keep the renderings consistent so far and go on by position
                    self.diverged = True
            self.pos += 1
        if tok == t.semi_id:  # `;` always closes the segment, well formed or not
            if self.post is not None and self.j < self.k:
                self._update_posterior()
            if self.diverged:
                text = t._text(self.seg)
                self.value = _face_value(compact(text) if t.layout else text, self.value)
            else:
                self.value = self.cands[0][2]
            self.j += 1
            self._new_segment()

    def _advance_laid_out(self, tok: int) -> None:
        """``advance`` in a step of a teacher with a layout: a space before a slot keeps the renderings with a slot
        there (weighted by their register's space probability), the slot's character then its closing space are
        forced; a character at a slot without a space weighs its renderings by 1 - that probability. Spaces take no
        position in the (compact) renderings, also after a wrong character."""
        t, pos = self.t, self.pos
        if self.diverged:
            self.pos += tok != t.space_id
            return
        if self.lay == 2:  # the space after a spaced slot
            if tok == t.space_id:
                self.lay = 0
                return
            self.diverged, self.lay = True, 0
            self.pos += 1
            return
        if tok == t.space_id and self.lay == 0:
            alive = [t._weighted(c, t._space_p(c)) for c in self.cands if pos in t._slots(c[0])]
            if alive:
                self.cands, self.lay = alive, 1
            else:
                self.diverged = True
            return
        alive = [c for c in self.cands if c[0][pos] == tok]
        if not alive:
            self.diverged, self.lay = True, 0
        elif self.lay == 1:  # the slot's character after its space (padded: the slot's one space)
            self.cands, self.lay = alive, 0 if t.padded else 2
        else:
            at_slot = pos in t._slots(alive[0][0])  # the renderings alive agree up to pos, so on its slots too
            self.cands = [t._weighted(c, 1.0 - t._space_p(c)) for c in alive] if at_slot else alive
            self.lay = 2 if at_slot and t.padded else 0  # padded: the slot's one space comes after it
        self.pos += 1

    def _laid_out_nexts(self) -> list:
        """(token, weight) of each rendering's next character, a slot's split into a space and its character."""
        t, pos, out = self.t, self.pos, []
        for c in self.cands:
            ids, w = c[0], c[1]
            if self.lay == 0 and pos in t._slots(ids):
                space = t._space_p(c)
                out += [(t.space_id, w * space), (ids[pos], w * (1.0 - space))]
            elif t._uncertain:
                out += t._with_digit_doubt([c], pos, [(ids[pos], w)])
            else:
                out.append((ids[pos], w))
        return out

    def _update_posterior(self):
        """P(register | prefix) after a closed step: proportional to the summed weights of the renderings still
        consistent (the step as written; after a wrong character, those consistent up to it). Kept as it was
        when none has weight (a style the teacher never writes, e.g. a direct step under p_direct 0)."""
        mass = [0.0] * len(self.post)
        for _, w, _, r in self.cands:
            mass[r] += w
        total = sum(mass)
        if total > 0:
            self.post = tuple(m / total for m in mass)

    def key(self) -> tuple:
        """The exact (un-floored) next-token distribution as sorted ``((token_id, prob), ...)``."""
        t = self.t
        if self.done:
            return t._onehot[t.eos_id]
        cands, pos = self.cands, self.pos
        if t.layout and self.j < self.k and not self.diverged:
            if self.lay == 2:
                return t._onehot[t.space_id]
            nexts = self._laid_out_nexts()
        elif self.diverged:  # positions past a rendering's end close the segment
            close = t.semi_id if self.j < self.k else t.eos_id
            nexts = [(c[0][pos] if pos < len(c[0]) else close, c[1]) for c in cands]
        else:
            nexts = [(c[0][pos], c[1]) for c in cands]
        if t._uncertain and self.j < self.k and not (t.layout and not self.diverged):
            nexts = t._with_digit_doubt(cands, pos, nexts)
        if len(nexts) == 1:
            return t._onehot[nexts[0][0]]
        agg: dict[int, float] = {}
        for tok, w in nexts:
            agg[tok] = agg.get(tok, 0.0) + w
        total = sum(agg.values())
        if total <= 0:  # only zero-weight renderings left: continue them (p_direct -> 1 limit)
            agg = {tok: 1.0 for tok in agg}
            total = float(len(agg))
        else:
            agg = {tok: w for tok, w in agg.items() if w > 0}
        if len(agg) == 1:
            return t._onehot[next(iter(agg))]
        return tuple(sorted((tok, w / total) for tok, w in agg.items()))

    def distribution(self) -> dict[int, float]:
        """Sparse exact part of the next-token distribution, ``{token_id: prob}`` (before the floor)."""
        return dict(self.key())


def _registers(registers: list[dict] | None) -> tuple[tuple[float, ...] | None, list[dict], tuple[float, ...]]:
    """(prior weights, normalised; variant probabilities; space probability) of each register of a list, each a
    ``{"weight": w, "space": probability, <flag>: probability, ...}`` (absent flags and space 0); None: (None, [],
    ())."""
    if registers is None:
        return None, [], ()
    if len(registers) < 2:
        raise ValueError(f"registers: give two or more (one register is the plain variant knobs), got {registers}")
    weights, variant_ps, spaces = [], [], []
    for i, register in enumerate(registers):
        flags = {name: p for name, p in register.items() if name not in ("weight", "space")}
        weight = register.get("weight")
        if weight is None or not weight > 0:
            raise ValueError(f"registers[{i}]: weight must be > 0, got {weight}")
        for name, p in {**flags, "space": register.get("space", 0.0)}.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"registers[{i}]: probability {name} must be in [0, 1], got {p}")
        weights.append(float(weight))
        variant_ps.append(variant_probabilities(flags))  # ValueError naming an unknown flag
        spaces.append(float(register.get("space", 0.0)))
    total = sum(weights)
    return tuple(w / total for w in weights), variant_ps, tuple(spaces)


def _face_value(text: str, previous):
    """Integer right after the last ``=`` of a step (optional minus sign), else ``previous``."""
    i = text.rfind("=")
    if i < 0:
        return previous
    s = text[i + 1:]
    n = 1 if s[:1] == "-" else 0
    while n < len(s) and s[n].isdigit():
        n += 1
    digits = s[:n]
    return int(digits) if digits not in ("", "-") else previous


class ToyTeacher:
    """Exact teacher; same interface as a model backend (see the module docstring)."""

    def __init__(self, tokenizer, p_direct: float = 0.5, floor: float = 1e-6,
                 style_override: str | None = None, variants: dict[str, float] | None = None,
                 direct_confidence: float = 1.0, registers: list[dict] | None = None, space: float = 0.0,
                 layout: str = "spaced"):
        for name, p in (variants or {}).items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"variant probability {name} must be in [0, 1], got {p}")
        # the teacher's probability of each notational variant of a decomposed step, ``{flag: probability}``
        # (dcod.toy.world.VARIANTS; none or all 0: the canonical rendering only)
        self.variant_p = variant_probabilities(variants or {})
        # the teacher's registers (docs/toy_world.md, "The next world"): a latent drawn once per trace, each with
        # its own variant probabilities; None: one register, ``variants`` (the current world's teacher)
        self.register_weights, self.register_variant_p, register_space = _registers(registers)
        # the probability of a space on either side of each slot of a step (dcod.toy.world.is_slot), per register
        if not 0.0 <= space <= 1.0:
            raise ValueError(f"space must be a probability in [0, 1], got {space}")
        if registers is not None and space:
            raise ValueError("space: each register has its own space probability; leave the teacher's at 0")
        self.space_p = register_space if registers is not None else (float(space),)
        # how a slot is laid out (dcod.toy.world.LAYOUTS): ``spaced``, a space on either side with the probability;
        # ``padded``, exactly one space, before the slot with the probability, else after it
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.padded = layout == "padded"
        self.layout = any(self.space_p) or self.padded  # off: no layout code runs, the current world's teacher
        self._slot_cache: dict[tuple, frozenset] = {}
        # the teacher's own confidence in each result digit of a direct step at a branch point (mental
        # arithmetic): the rest goes to the neighbouring digits, a carry too many or too few. 1: exact
        if not 0.5 < direct_confidence <= 1.0:
            raise ValueError(f"direct_confidence must be in (0.5, 1] (the right digit stays the argmax), "
                             f"got {direct_confidence}")
        self.direct_confidence = float(direct_confidence)
        self._uncertain: dict[tuple, frozenset] = {}  # rendering ids -> positions of its uncertain digits
        if style_override is not None:
            if style_override not in _STYLE_P_DIRECT:
                raise ValueError(
                    f"style_override must be 'direct', 'decomposed' or None, got {style_override!r}")
            p_direct = _STYLE_P_DIRECT[style_override]
        if not 0.0 <= p_direct <= 1.0:
            raise ValueError(f"p_direct must be in [0, 1], got {p_direct}")
        self.tokenizer = tokenizer
        self.p_direct = float(p_direct)
        self.style_override = style_override
        self.vocab_size = V = len(tokenizer)
        self.floor = float(floor)
        assert floor >= 0 and V * floor < 1, f"need 0 <= V*floor < 1, got V={V}, floor={floor}"
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        missing = [c for c in WORLD_CHARS if c not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks the toy-world characters {missing!r}")
        self.char_id = {c: vocab[c] for c in WORLD_CHARS}
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.pad_id = tokenizer.pad_token_id
        self.semi_id = self.char_id[";"]
        self.space_id = self.char_id[" "]
        id_tok = {i: tok for tok, i in vocab.items()}
        # decoding for `text` (special tokens skipped) and for prefix parsing (specials kept visible)
        self._decode_chars = ["" if i in special else id_tok.get(i, "") for i in range(V)]
        self._parse_chars = [id_tok.get(i, "\0") for i in range(V)]
        self._onehot = [((i, 1.0),) for i in range(V)]
        self._rows: dict[tuple, _Row] = {}
        self._step_candidates = lru_cache(maxsize=200_000)(self._step_candidates_uncached)
        self._answer_candidates = lru_cache(maxsize=20_000)(self._answer_candidates_uncached)

    # ------------------------------------------------------------------ building blocks
    def _ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.char_id[c] for c in text)

    def _text(self, ids) -> str:
        return "".join(self._parse_chars[i] if 0 <= i < self.vocab_size else "\0" for i in ids)

    def _step_candidates_uncached(self, value: int, op: str, x: int) -> list:
        result = apply_op(value, op, x)
        direct = render_step(value, op, x, "direct") + ";"
        decomposed = render_step(value, op, x, "decomposed") + ";"
        if direct == decomposed:
            if self.register_weights is None:
                return [(self._ids(direct), 1.0, result)]
            return [(self._ids(direct), 1.0, result, r) for r in range(len(self.register_weights))]
        cands = [(self._ids(direct), self.p_direct, result)]
        if self.direct_confidence < 1.0:
            start = len(direct) - 1 - len(str(result))  # the result digits, before the `;` (a minus sign of a
            # result after a wrong prefix is no digit)
            self._uncertain[cands[0][0]] = frozenset(i for i in range(start, len(direct) - 1) if direct[i].isdigit())
        renderings = variant_renderings(value, op, x)
        if self.register_weights is None:
            # (0, 0): one decomposed candidate of weight exactly 1 - p_direct, the current world's teacher
            return cands + [(self._ids(text), w, result) for text, w in self._decomposed(renderings, self.variant_p)]
        # registers: every register's renderings, tagged with it (its posterior weighs them in TeacherState)
        cands = [(*cands[0], r) for r in range(len(self.register_weights))]
        for r, variant_p in enumerate(self.register_variant_p):
            cands += [(self._ids(text), w, result, r) for text, w in self._decomposed(renderings, variant_p)]
        return cands

    def _slots(self, ids: tuple) -> frozenset:
        """Positions of a rendering's layout slots."""
        slots = self._slot_cache.get(ids)
        if slots is None:
            text = self._text(ids)
            slots = self._slot_cache[ids] = frozenset(i for i in range(len(text)) if is_slot(text, i))
        return slots

    def _space_p(self, cand: tuple) -> float:
        return self.space_p[cand[3] if self.register_weights is not None else 0]

    @staticmethod
    def _weighted(cand: tuple, factor: float) -> tuple:
        return (cand[0], cand[1] * factor, *cand[2:])

    def _decomposed(self, renderings: dict, variant_p: dict) -> list[tuple[str, float]]:
        """(text + ``;``, weight) of each distinct decomposed rendering, in variant order, zero weights left out."""
        weights: dict[str, float] = {}
        for variant, text in renderings.items():
            if variant_p[variant] > 0:
                weights[text + ";"] = weights.get(text + ";", 0.0) + (1.0 - self.p_direct) * variant_p[variant]
        return list(weights.items())

    def _with_digit_doubt(self, cands, pos: int, nexts: list) -> list:
        """``nexts`` with each uncertain digit of a direct rendering (``direct_confidence`` < 1) sharing
        1 - confidence of its weight among its neighbouring digits (no leading zero)."""
        q, out = self.direct_confidence, []
        for c, (tok, w) in zip(cands, nexts):
            positions = self._uncertain.get(c[0])
            if positions is None or pos not in positions:
                out.append((tok, w))
                continue
            digit = int(self._parse_chars[tok])
            neighbours = [d for d in (digit - 1, digit + 1) if 0 <= d <= 9 and not (d == 0 and pos == min(positions))]
            out.append((tok, w * q))
            out += [(self.char_id[str(d)], w * (1.0 - q) / len(neighbours)) for d in neighbours]
        return out

    def _answer_candidates_uncached(self, answer) -> list:
        return [(self._ids(boxed(answer)) + (self.eos_id,), 1.0, None)]

    def parse(self, prompt_ids) -> dict:
        """Problem of a prompt given as token ids (leading pads and one ``<bos>`` skipped)."""
        ids = list(prompt_ids)
        i = 0
        while i < len(ids) and ids[i] == self.pad_id:
            i += 1
        if i < len(ids) and ids[i] == self.bos_id:
            i += 1
        text = "".join(self._parse_chars[t] if 0 <= t < self.vocab_size else "\0" for t in ids[i:])
        return parse_prompt(text)  # ValueError naming the prompt text

    def state(self, prompt_ids) -> TeacherState:
        """A fresh state at the start of the completion of ``prompt_ids``."""
        return TeacherState(self, self.parse(prompt_ids))

    def _row(self, key: tuple, temperature: float = 1.0, top_p: float = 1.0, k: int = 0) -> _Row:
        ck = (key, temperature, top_p, k)
        row = self._rows.get(ck)
        if row is None:
            p = np.full(self.vocab_size, self.floor, dtype=np.float64)
            scale = 1.0 - self.vocab_size * self.floor
            for tok, q in key:
                p[tok] += scale * q
            logp = process_logits(torch.from_numpy(np.log(p)), temperature, top_p).numpy()
            row = self._rows[ck] = _Row(logp, k)
        return row

    def full_distribution(self, key_or_sparse, temperature: float = 1.0) -> np.ndarray:
        """Floored (and tempered) probabilities over the whole vocabulary, float32 ``[V]``."""
        key = key_or_sparse if isinstance(key_or_sparse, tuple) else tuple(sorted(key_or_sparse.items()))
        return np.exp(self._row(key, temperature).logp)

    # ------------------------------------------------------------------ model interface
    def next_token_logprobs(self, prompt_ids, completion_ids, temperature: float = 1.0) -> torch.Tensor:
        """``[T+1, V]`` float32: row t = log p(. | prompt, completion[:t]); the last row follows the
        whole completion. ``temperature`` gives the tempered distribution ∝ p^(1/τ) (floor included)."""
        st = self.state(prompt_ids)
        rows = []
        for tok in completion_ids:
            rows.append(self._row(st.key(), temperature).logp)
            st.advance(int(tok))
        rows.append(self._row(st.key(), temperature).logp)
        return torch.from_numpy(np.stack(rows))

    def score(self, prompt_ids, completion_ids, temperature: float = 1.0) -> list[float]:
        """Log-prob of each completion token given its prefix (``next_token_logprobs`` gathered)."""
        st = self.state(prompt_ids)
        out = []
        for tok in completion_ids:
            tok = int(tok)
            out.append(self._row(st.key(), temperature).logp_list[tok])
            st.advance(tok)
        return out

    def generate(self, prompts: list[list[int]], params: SamplingParams, progress: bool = False) -> list[Generation]:
        """``params.n`` samples per prompt, in prompt order, from ``numpy.random.Generator(seed)``.

        Greedy (temperature 0) takes the argmax, ties to the lowest token id (so with p_direct=0.5
        the greedy style of a step depends on the digits: use ``style_override`` for a pure style).
        """
        rng = np.random.default_rng(params.seed)
        temp, top_p, k = float(params.temperature), float(params.top_p), params.top_k_logprobs
        greedy, eos, V = params.greedy, self.eos_id, self.vocab_size
        rows, decode = self._rows, self._decode_chars
        uniforms, ui = rng.random(4096), 0
        out = []
        for pi, prompt in enumerate(prompts):
            prompt = [int(t) for t in prompt]
            problem = self.parse(prompt)
            for _ in range(params.n):
                st = TeacherState(self, problem)
                ids, lps = [], []
                tk_ids, tk_lps = ([], []) if k else (None, None)
                finish = "length"
                for _ in range(params.max_new_tokens):
                    key = st.key()
                    row = rows.get((key, temp, top_p, k)) or self._row(key, temp, top_p, k)
                    if greedy:
                        tok = row.argmax
                    else:
                        if ui == len(uniforms):
                            uniforms, ui = rng.random(4096), 0
                        tok = min(bisect.bisect_right(row.cdf, uniforms[ui] * row.total), V - 1)
                        ui += 1
                    ids.append(tok)
                    lps.append(row.logp_list[tok])
                    if k:
                        tk_ids.append(list(row.topk[0]))
                        tk_lps.append(list(row.topk[1]))
                    if tok == eos:
                        finish = "stop"
                        break
                    st.advance(tok)
                out.append(Generation(
                    prompt_index=pi, prompt_ids=list(prompt), token_ids=ids,
                    text="".join(decode[t] for t in ids), logprobs=lps, finish_reason=finish,
                    topk_ids=tk_ids, topk_logprobs=tk_lps))
        return out
