"""RSR trace selection (Yang et al. 2026, "Which Reasoning Trajectories Teach Students to Reason Better?",
arXiv:2601.14249): keep the teacher traces that suit the student best, then SFT on the kept ones.

The paper's score is the Rank-Surprisal Ratio of a trace under the student it will train,

    RSR = Σ_t min(rank_t, r) / Σ_t NLL_t        (lower: better suited; r = 100)

rank_t = 1 + the number of vocabulary tokens the student ranks strictly above the trace's token t, NLL_t its
surprisal −log q(y_t | prefix); the sums run over the completion's tokens (the same as the ratio of the two
token means). This is the authors' released ``rsr_cal.py`` (github.com/UmeanNever/RankSurprisalRatio):
``infer_dataset`` counts the logits above the target's within the top-r and clamps the rank at r,
``compute_sample_metrics`` divides the summed clipped ranks by the summed NLLs (floored at 1e-12). A low
RSR is a trace whose tokens the student already ranks high (aligned) while it still finds them improbable
(informative). The paper selects, for each problem, the candidate trajectory with the lowest RSR.

Our readings, each a knob (docs/method.md, "``rsr``"):
- ``score``: ``rsr`` (the paper's), or the likelihood baselines it compares with: ``nll`` (mean NLL,
  lowest kept: the traces the student already fits best) and ``rank`` (mean clipped rank); lowest kept.
- ``per_prompt``: keep the best N traces of each prompt (the paper: 1); 0 keeps them all.
- ``keep_fraction``: then keep the best fraction of what is left, over the whole traces file. With one
  teacher trace per prompt (the toy and paper profiles) the per-prompt choice keeps everything, so a
  global cut is what selects; the paper has no such cut (it chooses among several teachers), so 1 is its
  setting and the experiment's value is ours.
- the scores come from the seed's base student, once, before training (the paper scores with the student
  before distillation); they are the ``trace_scores`` pass (``Needs.trace_scores``, dcod.student_pass).
Ties keep the earlier trace. At ``per_prompt`` 0 (or ≥ the traces per prompt) and ``keep_fraction`` 1 every
trace is kept in file order and the run is SFT's, batch for batch.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from dcod.config import Float, Section
from dcod.data import EpochSampler, example_lengths
from dcod.methods.base import Method, Needs, register

RSR_EPS = 1e-12  # the authors' floor on the summed NLL


class RSRParams(Section):
    score: Literal["rsr", "nll", "rank"] = "rsr"
    rank_clip: int = Field(100, ge=1)  # r: the authors' rank_clip_r default
    per_prompt: int = Field(1, ge=0)  # the best N traces of each prompt (0: no per-prompt cut)
    keep_fraction: Float = Field(1.0, gt=0, le=1)  # then the best fraction over the whole file


def trace_score(nll, rank, score: str = "rsr", rank_clip: int = 100) -> float:
    """One trace's selection score from its per-token NLLs and ranks under the student (lower: kept first)."""
    nll, rank = np.asarray(nll, dtype=np.float64), np.minimum(np.asarray(rank, dtype=np.float64), rank_clip)
    if score == "rsr":
        return float(rank.sum() / max(nll.sum(), RSR_EPS))
    if score == "nll":
        return float(nll.mean())
    if score == "rank":
        return float(rank.mean())
    raise ValueError(f"unknown RSR score {score!r}: expected rsr, nll or rank")


def select_traces(scores, groups, per_prompt: int = 1, keep_fraction: float = 1.0) -> list[int]:
    """Indices of the kept traces, in file order: the ``per_prompt`` lowest scores of each group (0: all),
    then the lowest ``ceil(keep_fraction · n)`` of those (at least one). Ties keep the earlier index."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="stable")  # ascending; equal scores stay in file order
    kept, taken = [], {}
    for index in order.tolist():
        group = groups[index]
        if per_prompt and taken.get(group, 0) >= per_prompt:
            continue
        taken[group] = taken.get(group, 0) + 1
        kept.append(index)
    kept = kept[: max(1, math.ceil(keep_fraction * len(kept) - 1e-9))]  # already in ascending score order
    return sorted(kept)


@register
class RSR(Method):
    name = "rsr"
    Params = RSRParams

    @classmethod
    def needs(cls, params):
        return Needs(trace_scores=True)

    def __init__(self, params, ctx, cost):
        super().__init__(params, ctx, cost)
        scores = [trace_score(s["nll"], s["rank"], params.score, params.rank_clip) for s in ctx.trace_scores]
        groups = [trace.get("question", index) for index, trace in enumerate(ctx.traces)]
        self.kept = select_traces(scores, groups, params.per_prompt, params.keep_fraction)
        self.kept_scores = [scores[i] for i in self.kept]
        self.sampler = EpochSampler(len(self.kept), ctx.batch_size, ctx.seed,
                                    lengths=example_lengths([ctx.traces[i] for i in self.kept]))

    def examples(self, step, model):
        return [self.ctx.traces[self.kept[i]] for i in self.sampler.indices(step)]

    def run_summary(self):
        return {"rsr_kept": len(self.kept), "rsr_traces": len(self.ctx.traces),
                "rsr_kept_score_max": max(self.kept_scores)}
