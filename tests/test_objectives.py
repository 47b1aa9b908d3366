"""Token losses of dcod.objectives against references: trl's GKD JSD, F.kl_div, explicit formulas."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dcod.objectives import dft_loss, generalized_jsd, kd_topk_loss, nll_loss, target_logprobs

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
    ],
    ids=["nll", "dft", "gjsd", "kd_topk"],
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
