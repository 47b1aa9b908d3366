"""DCOD (docs/method.md): log-ratios, scores, adaptive β, normalised/truncated weights, SFT equivalences."""

import math

import pytest
import torch

from dcod.objectives import (
    choose_beta,
    dcod_log_ratios,
    dcod_scores,
    dcod_weights,
    ess_fraction,
    nll_loss,
    target_logprobs,
)

from conftest import EPS32

# Float comparisons here (conftest.py, "float tolerances"): torch.equal where both sides are the same
# computation; assert_close's float32 defaults (rtol 1.3e-6, atol 1e-5) where an O(1) result computed in
# float64 and rounded to float32 once, or an elementwise float32 formula, meets a hand-computed value: that
# is a few ulps, far inside the defaults and far from any modelling error (O(1e-2) or more); pytest.approx's
# default (rel 1e-6) for float64 diagnostics. Means of float32 weights are taken in float64 so that only
# the one rounding of each weight (eps/2 relative) is left.

B, T, V = 4, 6, 9


def make_batch(seed: int):
    """Random logits (a leaf), targets, a right-padded mask with a prompt, and teacher log-probs."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=generator).requires_grad_(True)
    targets = torch.randint(0, V, (B, T), generator=generator)
    positions = torch.arange(T)
    starts, ends = torch.tensor([1, 0, 2, 1]), torch.tensor([6, 4, 5, 3])
    mask = (positions >= starts[:, None]) & (positions < ends[:, None])
    teacher_logprobs = torch.where(mask, -torch.rand(B, T, generator=generator) * 2, torch.zeros(B, T))
    return logits, targets, mask, teacher_logprobs


def sft_loss(logits, targets, mask, weights=None):
    loss = nll_loss(logits, targets)
    weights = torch.ones_like(loss) if weights is None else weights
    return (weights * loss * mask).sum() / mask.sum()


# ----------------------------------------------------------------------------- reduces to SFT


@pytest.mark.parametrize(
    "granularity,discount,beta",
    [("prefix", 0.9, 0.0), ("sequence", 1.0, 0.0), ("prefix", 0.0, None), ("prefix", 0.0, 7.0)],
    ids=["prefix-beta0", "sequence-beta0", "lambda0-adaptive", "lambda0-beta7"],
)
def test_beta_zero_or_lambda_zero_is_exactly_sft(granularity, discount, beta):
    logits, targets, mask, teacher = make_batch(0)
    ratios = dcod_log_ratios(target_logprobs(logits, targets), teacher, mask, "teacher")
    scores = dcod_scores(ratios, mask, granularity, discount)
    weights, diagnostics = dcod_weights(scores, mask, granularity, beta=beta, ess_target=0.5, beta_max=50.0)
    assert torch.equal(weights, mask.float())
    loss, sft = sft_loss(logits, targets, mask, weights), sft_loss(logits, targets, mask)
    assert torch.equal(loss, sft)
    assert torch.equal(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(sft, logits)[0])
    assert diagnostics["ess_fraction"] == 1.0 and diagnostics["clip_fraction"] == 0.0


@pytest.mark.parametrize("granularity", ["prefix", "sequence"])
@pytest.mark.parametrize("beta", [None, 5.0])
def test_teacher_equal_to_student_gives_zero_ratios_and_unit_weights(granularity, beta):
    logits, targets, mask, _ = make_batch(1)
    student = target_logprobs(logits, targets)
    ratios = dcod_log_ratios(student, student.detach(), mask, "teacher")
    assert torch.equal(ratios, torch.zeros(B, T))
    weights, _ = dcod_weights(dcod_scores(ratios, mask, granularity, 1.0), mask, granularity, beta=beta)
    assert torch.equal(weights, mask.float())


def test_log_ratio_references():
    student = torch.tensor([[-1.0, -2.0, -0.5]])
    reference = torch.tensor([[-9.0, -1.5, -1.0]])
    mask = torch.tensor([[False, True, True]])
    expected = torch.tensor([[0.0, -0.5, 0.5]])
    torch.testing.assert_close(dcod_log_ratios(student, reference, mask, "teacher"), expected)
    torch.testing.assert_close(dcod_log_ratios(student, reference, mask, "initial_student"), expected)
    torch.testing.assert_close(dcod_log_ratios(student, None, mask, "none"), torch.tensor([[0.0, -2.0, -0.5]]))
    padded = torch.tensor([[-math.inf, -1.5, -1.0]])  # junk on a masked position must not leak
    torch.testing.assert_close(dcod_log_ratios(student, padded, mask, "teacher"), expected)
    with pytest.raises(ValueError, match="reference_logprobs"):
        dcod_log_ratios(student, None, mask, "teacher")
    with pytest.raises(ValueError, match="unknown reference"):
        dcod_log_ratios(student, reference, mask, "student")


# ----------------------------------------------------------------------------- hand-computed examples

# Two rows, T = 4. Row 0 has a prompt token at position 0, row 1 is padded after two tokens.
HAND_MASK = torch.tensor([[False, True, True, True], [True, True, False, False]])


def test_prefix_scores_and_weights_by_hand():
    # Row 0 supervised r = (2, -1, 7), row 1 r = (-2, 9); masked entries hold junk that must not count.
    ratios = torch.tensor([[5.0, 2.0, -1.0, 7.0], [-2.0, 9.0, 3.0, 3.0]])
    # λ = 0.5, s_j = Σ_{i<j} λ^(j-i) r_i:
    #   row 0: s = (0, 0.5·2, 0.25·2 + 0.5·(-1)) = (0, 1, 0);  row 1: s = (0, 0.5·(-2)) = (0, -1).
    scores = dcod_scores(ratios, HAND_MASK, "prefix", discount=0.5)
    torch.testing.assert_close(scores, torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0]]))
    # β = ln 2 → w = 2^s = (1, 2, 1 | 1, 0.5); sum 5.5 over 5 tokens, mean 1.1 →
    # normalised w = (10, 20, 10 | 10, 5) / 11.  ESS/N = 55² / (5 · 725) = 3025 / 3625.
    weights, diagnostics = dcod_weights(scores, HAND_MASK, "prefix", beta=math.log(2.0))
    expected = torch.tensor([[0.0, 10.0, 20.0, 10.0], [10.0, 5.0, 0.0, 0.0]]) / 11
    torch.testing.assert_close(weights, expected)
    assert diagnostics["ess_fraction"] == pytest.approx(3025 / 3625)
    assert diagnostics["max_weight"] == pytest.approx(20 / 11)
    assert diagnostics["mean_score"] == pytest.approx(0.0)
    assert diagnostics["clip_fraction"] == 0.0
    # Truncation at C = 1.5 catches 20/11 only (1 of 5 units): (10/11, 3/2, 10/11, 10/11, 5/11) sums
    # to 103/22, mean 103/110, so the final weights are (100, 165, 100 | 100, 50) / 103.
    weights, diagnostics = dcod_weights(scores, HAND_MASK, "prefix", beta=math.log(2.0), clip=1.5)
    expected = torch.tensor([[0.0, 100.0, 165.0, 100.0], [100.0, 50.0, 0.0, 0.0]]) / 103
    torch.testing.assert_close(weights, expected)
    assert diagnostics["clip_fraction"] == pytest.approx(1 / 5)


def test_sequence_scores_and_weights_by_hand():
    ratios = torch.tensor([[5.0, 1.0, 2.0, 3.0], [-1.0, -3.0, 8.0, 8.0]])
    # Row means: row 0 (1+2+3)/3 = 2, row 1 (-1-3)/2 = -2, on every supervised token of the row.
    scores = dcod_scores(ratios, HAND_MASK, "sequence")
    torch.testing.assert_close(scores, torch.tensor([[0.0, 2.0, 2.0, 2.0], [-2.0, -2.0, 0.0, 0.0]]))
    # β = ln2 / 2 → row weights 2^(s/2) = (2, 0.5). Token mean (3·2 + 2·0.5)/5 = 7/5 →
    # row 0: 2·5/7 = 10/7, row 1: 0.5·5/7 = 5/14 (check: 3·10/7 + 2·5/14 = 5).
    # Units are the 2 rows: ESS/N = (10/7 + 5/14)² / (2 ((10/7)² + (5/14)²)) = 625/850.
    weights, diagnostics = dcod_weights(scores, HAND_MASK, "sequence", beta=math.log(2.0) / 2)
    expected = torch.tensor([[0.0, 10 / 7, 10 / 7, 10 / 7], [5 / 14, 5 / 14, 0.0, 0.0]])
    torch.testing.assert_close(weights, expected)
    assert diagnostics["ess_fraction"] == pytest.approx(625 / 850)
    assert diagnostics["mean_score"] == pytest.approx(0.0)
    # Entropy of (4/5, 1/5) over log 2.
    entropy = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2)) / math.log(2)
    assert diagnostics["weight_entropy"] == pytest.approx(entropy)


def test_prefix_scan_matches_the_closed_form_on_long_rows():
    generator = torch.Generator().manual_seed(2)
    ratios = torch.randn(3, 40, generator=generator, dtype=torch.float64)
    mask = torch.rand(3, 40, generator=generator) > 0.2
    for discount in (0.3, 0.9, 1.0):
        scores = dcod_scores(ratios, mask, "prefix", discount).double()
        for row in range(3):
            supervised = ratios[row][mask[row]]
            j = torch.arange(len(supervised), dtype=torch.float64)
            powers = torch.where(j[:, None] > j[None, :], discount ** (j[:, None] - j[None, :]), 0.0)
            # the scan runs in float32: n steps (and the inputs' rounding), each off by <= eps x the
            # carry, itself <= sum|r| for discount <= 1 -> (n + 1) eps sum|r| ~ 1e-4 here (measured: 1.3e-6,
            # the same on every kernel path: elementwise ops). A wrong exponent (j-1-i) is off by O(|s|).
            atol = (len(supervised) + 1) * EPS32 * float(supervised.abs().sum())
            torch.testing.assert_close(scores[row][mask[row]], powers @ supervised, atol=atol, rtol=0)
            assert (scores[row][~mask[row]] == 0).all()


# ----------------------------------------------------------------------------- global normalisation


def test_weights_over_the_global_batch_make_micro_batches_add_up():
    logits, targets, mask, teacher = make_batch(3)
    n_global = mask.sum()
    ratios = dcod_log_ratios(target_logprobs(logits, targets), teacher, mask, "teacher")
    scores = dcod_scores(ratios, mask, "prefix", 0.9)
    weights, diagnostics = dcod_weights(scores, mask, "prefix", beta=None, ess_target=0.5, beta_max=50.0)
    assert diagnostics["beta"] > 0 and weights[mask].double().mean().item() == pytest.approx(1.0)

    full = (weights * nll_loss(logits, targets) * mask).sum() / n_global
    (full_grad,) = torch.autograd.grad(full, logits)
    accumulated = torch.zeros_like(logits)
    for rows in (slice(0, 2), slice(2, 4)):  # two micro-batches, weights from the global call
        micro_logits = logits.detach()[rows].clone().requires_grad_(True)
        micro = (weights[rows] * nll_loss(micro_logits, targets[rows]) * mask[rows]).sum() / n_global
        micro.backward()
        accumulated[rows] += micro_logits.grad
    # each logit's gradient is w (softmax - onehot) / N of its own row, no sum across rows: only the
    # kernels' layout of 2 vs 4 rows differs, a few ulps of entries <= 1/N, well inside the defaults
    torch.testing.assert_close(accumulated, full_grad)
    # Normalising per micro-batch instead would give different weights: the test is not vacuous.
    local, _ = dcod_weights(scores[:2], mask[:2], "prefix", beta=diagnostics["beta"])
    assert not torch.allclose(local, weights[:2])


# ----------------------------------------------------------------------------- adaptive β


def test_ess_fraction_values():
    assert ess_fraction(torch.ones(7)) == pytest.approx(1.0)
    assert ess_fraction(torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    assert ess_fraction(torch.tensor([1.0, 3.0])) == pytest.approx(16 / 20)


def tempered_ess(scores: torch.Tensor, beta: float) -> float:
    return ess_fraction(torch.exp(beta * (scores.double() - scores.max())))


@pytest.mark.parametrize("target", [0.2, 0.5, 0.9])
def test_choose_beta_is_the_largest_beta_meeting_the_target(target):
    scores = torch.randn(200, generator=torch.Generator().manual_seed(4))
    beta = choose_beta(scores, ess_target=target, beta_max=100.0)
    assert 0 < beta < 100
    assert tempered_ess(scores, beta) >= target
    assert tempered_ess(scores, beta + 1e-6) < target
    grid = [tempered_ess(scores, b) for b in torch.linspace(0, 20, 50).tolist()]
    assert all(a >= b for a, b in zip(grid, grid[1:]))  # ESS falls as β grows


def test_choose_beta_boundaries():
    scores = torch.randn(50, generator=torch.Generator().manual_seed(5))
    assert choose_beta(torch.full((10,), 3.0), 0.5, 100.0) == 0.0  # all equal: β is moot
    assert choose_beta(scores, 0.5, beta_max=0.01) == 0.01  # β_max already meets the target
    assert choose_beta(scores, 0.5, beta_max=0.0) == 0.0
    # Only uniform weights have ESS 1; below ~1e-8, 1 − ESS ∝ β² Var(s) rounds to 0 in float64.
    assert choose_beta(scores, 1.0, beta_max=10.0) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="ess_target"):
        choose_beta(scores, 0.0, 10.0)


def test_adaptive_weights_meet_the_ess_target_over_units():
    # Sequence granularity: the units are the rows, so the ESS is over rows, not tokens.
    generator = torch.Generator().manual_seed(6)
    mask = torch.rand(16, 30, generator=generator) > 0.3
    ratios = torch.randn(16, 30, generator=generator)
    scores = dcod_scores(ratios, mask, "sequence")
    weights, diagnostics = dcod_weights(scores, mask, "sequence", beta=None, ess_target=0.6, beta_max=500.0)
    row_weights = weights.max(-1).values
    # the diagnostic is of the float64 weights, row_weights their float32 rounding (eps/2 each): ~1e-7
    assert diagnostics["ess_fraction"] == pytest.approx(ess_fraction(row_weights))
    assert diagnostics["ess_fraction"] >= 0.6 - 1e-9 and diagnostics["beta"] < 500
    assert weights[mask].double().mean().item() == pytest.approx(1.0)
    assert ((weights == row_weights[:, None]) | ~mask).all() and (weights[~mask] == 0).all()


# ----------------------------------------------------------------------------- truncation, detachment


def test_truncation_caps_before_the_final_renormalisation():
    generator = torch.Generator().manual_seed(7)
    mask = torch.rand(8, 20, generator=generator) > 0.25
    scores = torch.where(mask, 3 * torch.randn(8, 20, generator=generator), torch.zeros(8, 20))
    untruncated, _ = dcod_weights(scores, mask, "prefix", beta=1.0)
    clip = 2.0
    weights, diagnostics = dcod_weights(scores, mask, "prefix", beta=1.0, clip=clip)
    capped = untruncated[mask].clamp(max=clip)
    assert capped.max() <= clip
    torch.testing.assert_close(weights[mask], capped / capped.mean())
    assert weights[mask].double().mean().item() == pytest.approx(1.0)
    assert diagnostics["clip_fraction"] == pytest.approx((untruncated[mask] > clip).float().mean().item())
    assert 0 < diagnostics["clip_fraction"] < 1


def test_no_gradient_flows_through_the_weights():
    logits, targets, mask, teacher = make_batch(8)
    student = target_logprobs(logits, targets)
    scores = dcod_scores(student, mask, "prefix", 1.0)  # deliberately NOT detached: "reference none"
    assert scores.requires_grad
    weights, _ = dcod_weights(scores, mask, "prefix", beta=2.0)
    assert not weights.requires_grad
    loss = (weights * nll_loss(logits, targets) * mask).sum() / mask.sum()
    (grad,) = torch.autograd.grad(loss, logits)
    # ∂ nll_t / ∂ z_t = softmax(z_t) − onehot(y_t): the weighted loss's gradient is w_t/N times that.
    nll_grad = logits.detach().softmax(-1) - torch.nn.functional.one_hot(targets, V)
    expected = (weights * mask / mask.sum()).unsqueeze(-1) * nll_grad
    torch.testing.assert_close(grad, expected)


def test_bad_inputs_are_clear_errors():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="granularity"):
        dcod_scores(torch.zeros(2, 3), mask, "word")
    with pytest.raises(ValueError, match="non-finite"):
        dcod_weights(torch.tensor([[0.0, math.nan, 1.0], [0.0, 0.0, 0.0]]), mask, "prefix", beta=1.0)
    weights, diagnostics = dcod_weights(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), "sequence")
    assert (weights == 0).all() and diagnostics["beta"] == 0.0
