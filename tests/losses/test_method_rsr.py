"""RSR trace selection (dcod.methods.rsr, docs/method.md "rsr"): the score, the selection, the limit where it
is SFT, and a reference re-derived from the authors' released code."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dcod.config import load_experiment
from dcod.methods import Cost, Needs, StepContext, build_method, resolve
from dcod.methods.rsr import RSRParams, select_traces, trace_score
from dcod.student_pass import load_trace_scores, token_ranks

from method_checks import assert_refused
from tiny_training import traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def test_the_score_by_hand():
    nll, rank = [1.0, 2.0, 1.0, 0.0], [1, 3, 200, 1]  # the 200 is clipped at 100
    assert trace_score(nll, rank, "rsr", 100) == pytest.approx((1 + 3 + 100 + 1) / 4.0)
    assert trace_score(nll, rank, "nll") == pytest.approx(1.0)
    assert trace_score(nll, rank, "rank", 100) == pytest.approx(105 / 4)
    assert trace_score(nll, rank, "rank", 2) == pytest.approx((1 + 2 + 2 + 1) / 4)
    # a trace the student predicts perfectly (NLL 0): the authors' floor 1e-12, not a division by zero
    assert trace_score([0.0, 0.0], [1, 1], "rsr") == pytest.approx(2 / 1e-12)
    with pytest.raises(ValueError, match="unknown RSR score"):
        trace_score(nll, rank, "entropy")


def _authors_rsr(logits: torch.Tensor, targets: torch.Tensor, r: int) -> float:
    """Re-derived (read, not copied) from github.com/UmeanNever/RankSurprisalRatio, rsr_cal.py:
    ``infer_dataset`` takes nll = logsumexp(logits) − logit[target] and rank = 1 + the number of the top-r
    logit values strictly above the target's, clamped at r; ``compute_sample_metrics`` returns
    sum(min(rank, r)) / max(sum(nll), 1e-12)."""
    log_z = torch.logsumexp(logits, -1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    nll = log_z - target
    top = torch.topk(logits, k=min(r, logits.shape[-1]), dim=-1).values
    rank = torch.clamp(1 + (top > target[:, None]).sum(-1), max=r)
    return float(rank.clamp(max=r).sum()) / max(float(nll.sum()), 1e-12)


@pytest.mark.parametrize("r", [1, 5, 100])
def test_the_score_matches_the_authors_rsr_cal(r):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        logits = torch.randn(30, 50, generator=generator, dtype=torch.float64) * 3
        targets = torch.randint(0, 50, (30,), generator=generator)
        nll = torch.logsumexp(logits, -1) - logits.gather(1, targets[:, None]).squeeze(1)
        ranks = token_ranks(logits, targets)
        assert ranks.min() >= 1 and ranks.max() <= 50  # unclipped as stored: clipped at selection
        assert trace_score(nll.numpy(), ranks.numpy(), "rsr", r) == pytest.approx(_authors_rsr(logits, targets, r),
                                                                                  rel=1e-12)


def test_token_ranks_by_hand():
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0]])
    got = token_ranks(logits.expand(4, 4), torch.tensor([0, 1, 2, 3]))
    assert got.tolist() == [4, 1, 3, 1]  # ties share the best rank


def test_selection_by_hand():
    scores = [5.0, 1.0, 3.0, 3.0, 0.5, 9.0]
    groups = ["a", "a", "b", "b", "c", "c"]
    assert select_traces(scores, groups, per_prompt=1) == [1, 2, 4]  # the best of each prompt; tie: the earlier
    assert select_traces(scores, groups, per_prompt=2) == [0, 1, 2, 3, 4, 5]
    assert select_traces(scores, groups, per_prompt=0, keep_fraction=0.5) == [1, 2, 4]  # 0.5, 1, 3(first)
    assert select_traces(scores, groups, per_prompt=1, keep_fraction=0.5) == [1, 4]  # ceil(0.5 * 3) = 2
    assert select_traces(scores, groups, per_prompt=0, keep_fraction=0.01) == [4]  # at least one
    assert select_traces(scores, groups, per_prompt=0, keep_fraction=1.0) == list(range(6))


def _scores_for(traces, values):  # noqa: F811
    """Trace scores whose RSR is ``values[i]`` for trace i (one rank-1 token per NLL unit)."""
    rows = []
    for trace, value in zip(traces, values):
        n = len(trace["completion_ids"])
        rows.append({"nll": np.full(n, 1.0), "rank": np.full(n, value)})
    return rows


def _method(toy_tokenizer, traces, params, trace_scores=None):  # noqa: F811
    ctx = StepContext(tokenizer=toy_tokenizer, traces=traces, batch_size=8, seed=3, total_steps=10)
    if trace_scores is not None:
        ctx.trace_scores = trace_scores
    return build_method("rsr" if trace_scores is not None else "sft", params, ctx, Cost())


def test_keep_fraction_one_is_sft_batch_for_batch(toy_tokenizer, traces):  # noqa: F811
    scores = _scores_for(traces, np.random.default_rng(0).integers(1, 50, len(traces)))
    rsr = _method(toy_tokenizer, traces, RSRParams(per_prompt=0, keep_fraction=1.0), scores)
    sft = _method(toy_tokenizer, traces, None)
    for step in range(12):
        assert rsr.examples(step, None) == sft.examples(step, None)
    assert type(rsr).token_losses is type(sft).token_losses  # SFT's NLL on the kept traces


def test_it_trains_only_on_the_best_scored_traces(toy_tokenizer, traces):  # noqa: F811
    values = list(range(len(traces), 0, -1))  # the last traces score best (lowest RSR)
    method = _method(toy_tokenizer, traces, RSRParams(per_prompt=0, keep_fraction=0.25), _scores_for(traces, values))
    kept = sorted(np.argsort(values, kind="stable")[: int(np.ceil(0.25 * len(traces)))].tolist())
    assert method.kept == kept
    seen = {id(e) for step in range(20) for e in method.examples(step, None)}
    assert seen == {id(traces[i]) for i in kept}  # every kept trace, and nothing else, within a few epochs
    summary = method.run_summary()
    assert summary["rsr_kept"] == len(kept) and summary["rsr_traces"] == len(traces)


def test_the_experiment_config_and_its_needs():
    cls, params = resolve(load_experiment(EXPERIMENTS / "rsr" / "config.yaml"))
    assert cls.name == "rsr" and params == RSRParams(keep_fraction=0.5)
    assert (params.score, params.rank_clip, params.per_prompt) == ("rsr", 100, 1)  # the paper's
    assert cls.needs(params) == Needs(trace_scores=True)  # one scoring pass, then offline traces only
    assert load_experiment(EXPERIMENTS / "rsr" / "config.yaml").table == "prior"
    for bad, key in (({"keep_fraction": 0.0}, "params.keep_fraction"), ({"score": "ppl"}, "params.score"),
                     ({"rank_clip": 0}, "params.rank_clip")):
        assert_refused("rsr", bad, key)


def test_scores_of_another_traces_file_are_refused(tmp_path, traces):  # noqa: F811
    path = tmp_path / "scores.parquet"
    rows = [{"nll": [1.0] * len(t["completion_ids"]), "rank": [1] * len(t["completion_ids"])} for t in traces]
    pd.DataFrame(rows).to_parquet(path)
    assert len(load_trace_scores(path, traces)) == len(traces)
    with pytest.raises(ValueError, match=rf"{path}: 47 scored traces for a traces file of 48"):
        pd.DataFrame(rows[1:]).to_parquet(path)
        load_trace_scores(path, traces)
    rows[4] = {"nll": [1.0], "rank": [1]}
    pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(ValueError, match=rf"{path}: row 5: 1 scored tokens for a trace of"):
        load_trace_scores(path, traces)
