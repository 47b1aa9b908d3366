"""dcod.methods.dcod: one β bisection per step (docs/benchmarks.md, "DCOD at SFT's price on the trained
student"), with the lagged (β, L) exactly what a second, independent bisection gives."""

import pytest
import torch

from dcod import objectives
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams


def scores_and_mask(seed: int, rows: int = 32, width: int = 40):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, width, (rows,), generator=generator)
    mask = torch.arange(width) < lengths[:, None]
    ratios = torch.where(mask, torch.randn(rows, width, generator=generator) * 2, torch.zeros(rows, width))
    return objectives.dcod_scores(ratios, mask, "sequence"), mask


@pytest.mark.parametrize("params", [DCODParams(), DCODParams(beta="ess_floor"), DCODParams(beta=3.0),
                                    DCODParams(clip=None)])
def test_weights_bisect_once_and_lag_matches_an_independent_bisection(monkeypatch, params):
    method = build_method("dcod", params, StepContext(tokenizer=None, traces=[], batch_size=32, seed=0), Cost())
    calls = []
    original = objectives.choose_beta
    monkeypatch.setattr(objectives, "choose_beta", lambda *a, **k: calls.append(1) or original(*a, **k))
    for seed in range(3):
        scores, mask = scores_and_mask(seed)
        calls.clear()
        weights, diagnostics = method.weights(scores, mask)
        assert len(calls) == (1 if params.tempering[0] is None else 0)  # adaptive: one bisection, not two
        beta, beta_max = params.tempering
        expected = objectives.dcod_exact_tempering(scores, mask, params.granularity, beta=beta,
                                                   ess_target=params.ess_target, beta_max=beta_max,
                                                   clip=params.clip)
        assert method.lag == expected  # bit for bit: the same β, the same L
        assert diagnostics["beta"] == expected[0]
