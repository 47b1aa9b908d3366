"""Token losses of dcod.objectives against references: trl's GKD JSD, F.kl_div, explicit formulas."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dcod.objectives import (
    dft_loss,
    generalized_jsd,
    iw_sft_sequence_log_weights,
    iw_sft_weights,
    kd_topk_loss,
    nll_loss,
    skew_kl_topk_loss,
    target_logprobs,
)

B, T, V = 3, 5, 11


def random_logits(seed: int, scale: float = 3.0, requires_grad: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(B, T, V, generator=generator)
    return logits.requires_grad_(requires_grad)


def random_targets(seed: int) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def explicit_kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per token, the textbook sum."""
    return (p_log.exp() * (p_log - q_log)).sum(-1)


@pytest.fixture(scope="module")
def trl_jsd():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trl.experimental announces itself with a warning
        gkd = pytest.importorskip("trl.experimental.gkd")
    return gkd.GKDTrainer.generalized_jsd_loss


# ----------------------------------------------------------------------------- shapes, basics


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, t, y: nll_loss(s, y),
        lambda s, t, y: dft_loss(s, y),
        lambda s, t, y: generalized_jsd(s, t, beta=0.5),
        lambda s, t, y: kd_topk_loss(s, t.topk(4, -1).indices, t.log_softmax(-1).topk(4, -1).values),
        lambda s, t, y: skew_kl_topk_loss(s, t.topk(4, -1).indices, t.log_softmax(-1).topk(4, -1).values),
        lambda s, t, y: skew_kl_topk_loss(
            s, t.topk(4, -1).indices, t.log_softmax(-1).topk(4, -1).values, direction="reverse"
        ),
    ],
    ids=["nll", "dft", "gjsd", "kd_topk", "skew_kl", "skew_rkl"],
)
def test_losses_are_per_token_and_only_train_the_student(loss):
    student, teacher = random_logits(0, requires_grad=True), random_logits(1, requires_grad=True)
    out = loss(student, teacher, random_targets(2))
    assert out.shape == (B, T) and out.dtype == torch.float32
    out.sum().backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_target_logprobs_matches_log_softmax_and_nll_is_its_negative():
    logits, targets = random_logits(3), random_targets(4)
    expected = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(target_logprobs(logits, targets), expected)
    cross_entropy = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    torch.testing.assert_close(nll_loss(logits, targets), cross_entropy)
    bf16 = target_logprobs(logits.bfloat16(), targets)
    assert bf16.dtype == torch.float32  # log-softmax always in float32


def test_dft_matches_stopgrad_prob_times_nll_and_its_gradient():
    logits, targets = random_logits(5, requires_grad=True), random_targets(6)
    loss = dft_loss(logits, targets)
    (grad,) = torch.autograd.grad(loss.sum(), logits)

    reference_logits = logits.detach().clone().requires_grad_(True)
    log_p = reference_logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    reference = -log_p.exp().detach() * log_p
    (reference_grad,) = torch.autograd.grad(reference.sum(), reference_logits)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad)
    # Closed form: ∂ℓ/∂z = p_y (softmax(z) − onehot(y)) — NLL's gradient scaled by the detached p_y.
    p_y = log_p.exp().detach().unsqueeze(-1)
    closed = p_y * (logits.detach().softmax(-1) - F.one_hot(targets, V))
    torch.testing.assert_close(grad, closed)


# ----------------------------------------------------------------------------- generalised JSD


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_matches_trl(trl_jsd, beta, temperature):
    student, teacher = random_logits(7), random_logits(8)
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(9)) > 0.3
    labels = torch.where(mask, random_targets(10), torch.full((B, T), -100))
    expected = trl_jsd(student, teacher, labels=labels, beta=beta, temperature=temperature)
    ours = generalized_jsd(student, teacher, beta=beta, temperature=temperature)
    # trl's "batchmean" with labels: sum over unmasked tokens / number of unmasked tokens.
    torch.testing.assert_close((ours * mask).sum() / mask.sum(), expected)


def test_generalized_jsd_endpoints_are_forward_and_reverse_kl():
    student, teacher = random_logits(11), random_logits(12)
    s_log, t_log = student.log_softmax(-1), teacher.log_softmax(-1)
    forward = F.kl_div(s_log, t_log, reduction="none", log_target=True).sum(-1)  # KL(p_T ‖ p_S)
    reverse = F.kl_div(t_log, s_log, reduction="none", log_target=True).sum(-1)  # KL(p_S ‖ p_T)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=0.0), forward)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=1.0), reverse)
    torch.testing.assert_close(forward, explicit_kl(t_log, s_log))
    torch.testing.assert_close(reverse, explicit_kl(s_log, t_log))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_identical_inputs_give_zero_and_accepts_logprobs(beta):
    logits = random_logits(13)
    torch.testing.assert_close(generalized_jsd(logits, logits, beta=beta), torch.zeros(B, T), atol=1e-6, rtol=0)
    student = random_logits(14)  # a teacher given as log-probs is the same teacher
    torch.testing.assert_close(
        generalized_jsd(student, logits.log_softmax(-1), beta=beta), generalized_jsd(student, logits, beta=beta)
    )
    assert (generalized_jsd(student, logits, beta=beta) >= -1e-6).all()


def test_generalized_jsd_rejects_beta_outside_unit_interval():
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(random_logits(0), random_logits(1), beta=1.5)


# ----------------------------------------------------------------------------- top-k KD


@pytest.mark.parametrize("rest", [-math.inf, -1e4])
def test_kd_topk_with_one_hot_teacher_is_nll(rest):
    logits, targets = random_logits(15, requires_grad=True), random_targets(16)
    others = (targets.unsqueeze(-1) + torch.arange(1, 4)) % V  # three distinct non-target ids
    topk_ids = torch.cat([targets.unsqueeze(-1), others], dim=-1)
    topk_logprobs = torch.full((B, T, 4), rest)
    topk_logprobs[..., 0] = 0.0
    loss = kd_topk_loss(logits, topk_ids, topk_logprobs)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    (nll_grad,) = torch.autograd.grad(nll_loss(logits, targets).sum(), logits)
    torch.testing.assert_close(loss, nll_loss(logits, targets))
    torch.testing.assert_close(grad, nll_grad)


def test_kd_topk_with_full_vocabulary_is_exact_forward_kl():
    student, teacher = random_logits(17, requires_grad=True), random_logits(18)
    t_log = teacher.log_softmax(-1)
    order = torch.argsort(torch.rand(B, T, V, generator=torch.Generator().manual_seed(19)), dim=-1)
    loss = kd_topk_loss(student, order, t_log.gather(-1, order))
    torch.testing.assert_close(loss, explicit_kl(t_log, student.log_softmax(-1)), atol=1e-5, rtol=1e-5)
    loss.sum().backward()
    assert torch.isfinite(student.grad).all()


def test_kd_topk_matches_an_explicit_bucket_computation_and_is_non_negative():
    student, teacher = random_logits(20).double(), random_logits(21, scale=1.0)
    t_log = teacher.log_softmax(-1)
    topk_logprobs, topk_ids = t_log.topk(3, dim=-1)
    s_log = student.log_softmax(-1)
    s_topk = s_log.gather(-1, topk_ids)
    q_tail = 1 - topk_logprobs.exp().sum(-1)
    p_tail = 1 - s_topk.exp().sum(-1)  # float64: plain subtraction is accurate enough here
    expected = (topk_logprobs.exp() * (topk_logprobs - s_topk)).sum(-1) + q_tail * (q_tail.log() - p_tail.log())
    loss = kd_topk_loss(student, topk_ids, topk_logprobs)
    torch.testing.assert_close(loss, expected.float(), atol=1e-5, rtol=1e-5)
    assert (loss >= 0).all()


def test_kd_topk_no_nan_when_a_tail_is_empty():
    # Teacher puts all its mass on the top-k (tail 0) and the student almost all of it (tail ~e^-60).
    student = torch.full((B, T, V), -30.0)
    student[..., :3] = 30.0
    student.requires_grad_(True)
    topk_ids = torch.arange(3).expand(B, T, 3)
    topk_logprobs = torch.log(torch.tensor([0.5, 0.3, 0.2])).expand(B, T, 3)
    loss = kd_topk_loss(student, topk_ids, topk_logprobs)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(student.grad).all()
    # KL of (0.5, 0.3, 0.2, 0) to a uniform top-3: Σ q log(3q).
    expected = sum(q * math.log(3 * q) for q in (0.5, 0.3, 0.2))
    torch.testing.assert_close(loss, torch.full((B, T), expected), atol=1e-5, rtol=0)
    # The reverse: the teacher keeps tail mass the student lacks → large, finite, positive.
    tail_teacher = torch.log(torch.tensor([0.4, 0.3, 0.2])).expand(B, T, 3)
    loss = kd_topk_loss(student.detach(), topk_ids, tail_teacher)
    assert torch.isfinite(loss).all() and (loss > 1.0).all()



# ----------------------------------------------------------------------------- DistiLLM skew KL


def explicit_skew_kl(p_log: torch.Tensor, q_log: torch.Tensor, alpha: float) -> torch.Tensor:
    """KL(p ‖ α p + (1 − α) q) per token, the mixture formed in probability space (no log-add)."""
    mixture = alpha * p_log.exp() + (1 - alpha) * q_log.exp()
    return (p_log.exp() * (p_log - mixture.log())).sum(-1)


def full_vocab_topk(teacher: torch.Tensor, seed: int):
    """K = V: every id, in a random order per position (so the loss cannot rely on sortedness)."""
    t_log = teacher.log_softmax(-1)
    order = torch.argsort(torch.rand(B, T, V, generator=torch.Generator().manual_seed(seed)), dim=-1)
    return order, t_log.gather(-1, order)


@pytest.mark.parametrize("k", [3, V])
def test_skew_kl_at_alpha_zero_is_kd_topk(k):
    student, teacher = random_logits(30, requires_grad=True), random_logits(31)
    topk_logprobs, topk_ids = teacher.log_softmax(-1).topk(k, dim=-1)
    skew = skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=0.0)
    kd = kd_topk_loss(student, topk_ids, topk_logprobs)
    (skew_grad,) = torch.autograd.grad(skew.sum(), student)
    (kd_grad,) = torch.autograd.grad(kd.sum(), student)
    # Same float64 path; logaddexp(−inf, x) = x is exact, so only float32 output rounding could differ.
    torch.testing.assert_close(skew, kd)
    torch.testing.assert_close(skew_grad, kd_grad)
    # And α > 0 is a different loss (guards against alpha being ignored).
    assert not torch.allclose(skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=0.1), kd)


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_skew_kl_with_full_vocabulary_matches_explicit_formula_and_kl_div(alpha):
    student, teacher = random_logits(32).double(), random_logits(33)
    topk_ids, topk_logprobs = full_vocab_topk(teacher, 34)
    p_log, q_log = teacher.log_softmax(-1).double(), student.log_softmax(-1)
    loss = skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=alpha)
    expected = explicit_skew_kl(p_log, q_log, alpha)
    mixture_log = (alpha * p_log.exp() + (1 - alpha) * q_log.exp()).log()
    via_kl_div = F.kl_div(mixture_log, p_log, reduction="none", log_target=True).sum(-1)  # KL(p ‖ m)
    # Tolerance: the loss takes the student's log-softmax in float32 (relative error ~1e-7 per
    # log-prob, |log q| ≲ 30 for scale-3 logits) and returns float32; 1e-5 covers both with margin.
    torch.testing.assert_close(loss, expected.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, via_kl_div.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_skew_reverse_kl_with_full_vocabulary_matches_explicit_formula(alpha):
    student, teacher = random_logits(35).double(), random_logits(36)
    topk_ids, topk_logprobs = full_vocab_topk(teacher, 37)
    p_log, q_log = teacher.log_softmax(-1).double(), student.log_softmax(-1)
    loss = skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=alpha, direction="reverse")
    # SRKL: KL(q ‖ α q + (1 − α) p), the explicit formula with the roles of p and q swapped.
    expected = explicit_skew_kl(q_log, p_log, alpha)
    torch.testing.assert_close(loss, expected.float(), atol=1e-5, rtol=1e-5)  # as in the forward test
    forward = skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=alpha)
    assert not torch.allclose(loss, forward)  # the direction is honoured


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_skew_kl_matches_an_explicit_bucket_computation_with_a_tail(direction):
    student, teacher = random_logits(38).double(), random_logits(39, scale=1.0)
    topk_logprobs, topk_ids = teacher.log_softmax(-1).topk(3, dim=-1)
    s_topk = student.log_softmax(-1).gather(-1, topk_ids)
    # The K+1 buckets by hand, in float64 probability space: the top-3 and 1 − their sum.
    p = torch.cat([topk_logprobs.exp(), 1 - topk_logprobs.exp().sum(-1, keepdim=True)], -1).double()
    q = torch.cat([s_topk.exp(), 1 - s_topk.exp().sum(-1, keepdim=True)], -1)
    first, second = (p, q) if direction == "forward" else (q, p)
    alpha = 0.1
    expected = (first * (first.log() - (alpha * first + (1 - alpha) * second).log())).sum(-1)
    loss = skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=alpha, direction=direction)
    torch.testing.assert_close(loss, expected.float(), atol=1e-5, rtol=1e-5)  # as in the K = V tests


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("k", [4, V])
def test_skew_kl_is_zero_for_identical_distributions_and_non_negative(direction, k):
    logits = random_logits(40)
    topk_logprobs, topk_ids = logits.log_softmax(-1).topk(k, dim=-1)
    same = skew_kl_topk_loss(logits, topk_ids, topk_logprobs, direction=direction)
    # The student's float32 log-softmax vs the same teacher values: equal up to rounding. Each bucket's
    # term is p * (log p - log m) with |log p| up to ~30, so a few float32 eps times 30 (~1e-5) bounds it
    # (measured 4.9e-7 on the AVX-512, AVX2 and scalar kernel paths); distinct inputs give > 1e-3 below.
    torch.testing.assert_close(same, torch.zeros(B, T), atol=1e-5, rtol=0)
    for seed in range(5):
        other = random_logits(41 + seed)
        loss = skew_kl_topk_loss(other, topk_ids, topk_logprobs, direction=direction)
        assert (loss >= 0).all() and (loss > 1e-3).any()


@pytest.mark.parametrize("gap", [1e4, math.inf], ids=["underflow", "minus_inf_logit"])
def test_skew_kl_is_bounded_with_finite_gradients_when_the_student_misses_a_topk_token(gap):
    teacher = random_logits(50, scale=1.0)
    topk_logprobs, topk_ids = teacher.log_softmax(-1).topk(4, dim=-1)
    student = random_logits(51).scatter(-1, topk_ids[..., :1], -gap)  # p_θ(top-1 teacher token) = 0
    student.requires_grad_(True)
    alpha = 0.1
    forward = skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=alpha)
    reverse = skew_kl_topk_loss(student, topk_ids, topk_logprobs, alpha=alpha, direction="reverse")
    (grad,) = torch.autograd.grad((forward + reverse).sum(), student)
    assert torch.isfinite(forward).all() and torch.isfinite(reverse).all() and torch.isfinite(grad).all()
    # m ≥ α p bounds the forward skew KL by log(1/α); plain forward KL is unbounded here.
    assert (forward <= -math.log(alpha) + 1e-6).all()
    if math.isfinite(gap):
        assert (kd_topk_loss(student.detach(), topk_ids, topk_logprobs) > -math.log(alpha)).all()


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_skew_kl_is_finite_when_teacher_and_student_both_underflow_on_a_bucket(direction):
    # -1e4 is what collate stores for missing top-k entries; with the student's probability of that
    # id also e^-1e4, a mixture formed in probability space is 0 and 0 · log(0/0) gives NaN, which a
    # 0 in the loss mask would not remove (NaN · 0 = NaN). In log space the bucket simply drops out.
    topk_ids = torch.tensor([0, 1, 2]).expand(B, T, 3)
    topk_logprobs = torch.tensor([math.log(0.6), math.log(0.3), -1e4]).expand(B, T, 3)
    student = random_logits(52)
    student[..., 2] = student[..., 3:].min() - 1e4
    student.requires_grad_(True)
    loss = skew_kl_topk_loss(student, topk_ids, topk_logprobs, direction=direction)
    (grad,) = torch.autograd.grad(loss.sum(), student)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    # The negligible bucket moves no mass between the others (tails are unchanged): same loss as K = 2.
    without = skew_kl_topk_loss(student.detach(), topk_ids[..., :2], topk_logprobs[..., :2], direction=direction)
    torch.testing.assert_close(loss, without)


def test_skew_kl_rejects_bad_alpha_and_direction():
    logits = random_logits(0)
    topk_logprobs, topk_ids = logits.log_softmax(-1).topk(3, dim=-1)
    for alpha in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            skew_kl_topk_loss(logits, topk_ids, topk_logprobs, alpha=alpha)
    with pytest.raises(ValueError, match="direction"):
        skew_kl_topk_loss(logits, topk_ids, topk_logprobs, direction="sideways")


# ----------------------------------------------------------------------------- iw-SFT


def two_sequences():
    """Row 0: three supervised tokens; row 1: two supervised tokens, then one padding position."""
    student = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -3.0, -7.0]])
    reference = torch.tensor([[-1.5, -1.0, -0.25], [-1.2, -2.0, -0.1]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return student, reference, mask


def test_iw_sft_hand_derived_weights_on_two_sequences():
    student, reference, mask = two_sequences()
    # r = student − reference on supervised tokens; log w = mean of r over the row.
    log_w0 = ((-1.0 + 1.5) + (-2.0 + 1.0) + (-0.5 + 0.25)) / 3  # = −0.25
    log_w1 = ((-0.2 + 1.2) + (-3.0 + 2.0)) / 2  # = 0 (the padded −7 − (−0.1) must not count)
    log_weights = iw_sft_sequence_log_weights(student, reference, mask)
    torch.testing.assert_close(log_weights, torch.tensor([log_w0, log_w1]))
    weights = iw_sft_weights(log_weights, mask)
    expected = torch.tensor([[math.exp(log_w0)] * 3, [math.exp(log_w1)] * 2 + [0.0]])
    torch.testing.assert_close(weights, expected)
    # Without length normalisation: the exact sequence ratio, exp(Σ r); with a scale c: exp(c · mean r).
    summed = iw_sft_sequence_log_weights(student, reference, mask, length_normalize=False)
    torch.testing.assert_close(summed, torch.tensor([3 * log_w0, 2 * log_w1]))
    scaled = iw_sft_sequence_log_weights(student, reference, mask, log_ratio_scale=2.0)
    torch.testing.assert_close(scaled, torch.tensor([2 * log_w0, 2 * log_w1]))
    # Self-normalised (our option): w ∝ exp(log w), mean 1 over the 5 supervised tokens.
    normalized = iw_sft_weights(log_weights, mask, normalize=True)
    total = 3 * math.exp(log_w0) + 2 * math.exp(log_w1)
    torch.testing.assert_close(normalized[0, 0], torch.tensor(5 * math.exp(log_w0) / total))
    torch.testing.assert_close(normalized[1, 0], torch.tensor(5 * math.exp(log_w1) / total))
    torch.testing.assert_close(normalized[mask].mean(), torch.tensor(1.0))


def test_iw_sft_clipping_bounds_are_respected():
    mask = torch.ones(4, 3, dtype=torch.bool)
    log_weights = torch.tensor([-50.0, math.log(0.7), math.log(3.0), 50.0])
    default = iw_sft_weights(log_weights, mask)  # the authors' [0, 16]
    torch.testing.assert_close(default[:, 0], torch.tensor([math.exp(-50.0), 0.7, 3.0, 16.0]))
    clipped = iw_sft_weights(log_weights, mask, clip_min=0.5, clip_max=2.0)
    torch.testing.assert_close(clipped[:, 0], torch.tensor([0.5, 0.7, 2.0, 2.0]))
    assert (clipped >= 0.5).all() and (clipped <= 2.0).all()
    # Huge log weights are clipped before exponentiating: no overflow, even normalised.
    extreme = torch.tensor([-1e6, 1e6, 0.0, 1e6])
    assert torch.isfinite(iw_sft_weights(extreme, mask)).all()
    normalized = iw_sft_weights(torch.full((4,), -1e4), mask, normalize=True)  # every w underflows
    torch.testing.assert_close(normalized, torch.ones(4, 3))
    for bad in ((-1.0, 2.0), (3.0, 2.0), (0.0, 0.0), (0.0, math.inf)):
        with pytest.raises(ValueError, match="clip"):
            iw_sft_weights(log_weights, mask, clip_min=bad[0], clip_max=bad[1])


def test_iw_sft_weights_are_detached():
    student, reference, mask = two_sequences()
    student.requires_grad_(True)
    log_weights = iw_sft_sequence_log_weights(student, reference, mask)
    assert not log_weights.requires_grad
    weights = iw_sft_weights(log_weights, mask)
    assert not weights.requires_grad
    assert not iw_sft_weights(torch.zeros(2, requires_grad=True), mask).requires_grad
    # Loss Σ w · (−log π): its gradient is −w, as if w were a constant (no ∂w/∂log π term).
    loss = (weights * -student * mask).sum()
    (grad,) = torch.autograd.grad(loss, student)
    torch.testing.assert_close(grad, -weights)


def test_iw_sft_is_sft_when_student_equals_reference():
    logits, targets = random_logits(60), random_targets(61)
    logprobs = target_logprobs(logits, targets)
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(62)) > 0.3
    for normalize in (False, True):
        weights = iw_sft_weights(iw_sft_sequence_log_weights(logprobs, logprobs, mask), mask, normalize=normalize)
        torch.testing.assert_close(weights, mask.float(), atol=0, rtol=0)


def test_iw_sft_padding_does_not_contribute():
    student, reference, mask = two_sequences()
    clean = iw_sft_weights(iw_sft_sequence_log_weights(student, reference, mask), mask, normalize=True)
    # Garbage in the padded position (and a whole padded row) changes nothing and gets weight 0.
    student_bad = torch.cat([student, torch.full((1, 3), -math.inf)])
    reference_bad = torch.cat([reference, torch.full((1, 3), math.nan)])
    student_bad[1, 2], reference_bad[1, 2] = math.nan, -math.inf
    mask_bad = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)])
    log_weights = iw_sft_sequence_log_weights(student_bad, reference_bad, mask_bad)
    assert torch.isfinite(log_weights).all()
    weights = iw_sft_weights(log_weights, mask_bad, normalize=True)
    torch.testing.assert_close(weights[:2], clean)
    assert (weights[~mask_bad] == 0).all()
    # A NaN on a supervised token is an error, not a silent weight.
    student_nan = student.clone()
    student_nan[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        iw_sft_weights(iw_sft_sequence_log_weights(student_nan, reference, mask), mask)


@pytest.mark.parametrize("chunked", [False, True], ids=["logits", "chunked_head"])
def test_kd_topk_student_tail_below_float32_eps_is_exact(chunked):
    """The student's tail mass here is ~e^-30 ≈ 1e-13, far below float32 eps: 1 − Σ p_k cannot see it, the
    masked logsumexp does. The teacher keeps 1% outside its top-3, so the tail term is 0.01 (log 0.01 + 30)."""
    from dcod.objectives import ChunkedLMHead

    hidden = torch.eye(6, dtype=torch.float32)[None, :1, :].clone().requires_grad_(True)  # one position
    weight = torch.tensor([30.0, 30.0, 30.0, 0.0, 0.0, 0.0])[:, None] * torch.eye(6)[:1, :].expand(6, 6)
    weight = weight.clone().requires_grad_(True)  # logits = [30, 30, 30, 0, 0, 0]
    topk_ids = torch.tensor([[[0, 1, 2]]])
    topk_logprobs = torch.log(torch.tensor([[[0.33, 0.33, 0.33]]]))
    logits = hidden @ weight.t()
    head = ChunkedLMHead(hidden, weight, chunk_tokens=1) if chunked else logits
    loss = kd_topk_loss(head, topk_ids, topk_logprobs)
    exact = logits.detach().double().log_softmax(-1)
    p_tail = torch.logsumexp(exact[..., 3:], -1)  # log of the student's true tail, ≈ -30 + log 3 - log 3
    q = torch.tensor([0.33, 0.33, 0.33], dtype=torch.float64)
    expected = (q * (q.log() - exact[0, 0, :3])).sum() + 0.01 * (math.log(0.01) - p_tail[0, 0])
    assert float(p_tail) < math.log(1e-7)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    grad = torch.autograd.grad(loss.sum(), weight)[0]
    reference_weight = weight.detach().double().requires_grad_(True)
    reference_logits = hidden.detach().double() @ reference_weight.t()
    log_p = reference_logits.log_softmax(-1)
    reference = (q * (q.log() - log_p[0, 0, :3])).sum() + 0.01 * (math.log(0.01) - torch.logsumexp(log_p[0, 0, 3:], -1))
    (reference_grad,) = torch.autograd.grad(reference, reference_weight)
    torch.testing.assert_close(grad.double(), reference_grad, rtol=1e-4, atol=1e-6)
