"""ASFT (dcod.methods.asft, docs/method.md "asft"): DFT's loss plus λ·KL to the frozen initial student."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dcod import objectives
from dcod.config import load_experiment
from dcod.methods import Needs, resolve
from dcod.methods.asft import ASFTParams, asft_loss

from test_methods_wiring import _trainer  # noqa: F401
from method_checks import assert_refused, assert_same_loss
from tiny_training import traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "asft" / "config.yaml"


def _case(seed=0, shape=(2, 3, 5)):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=gen, dtype=torch.float64).float().requires_grad_()
    reference = F.log_softmax(torch.randn(*shape, generator=gen), dim=-1)
    targets = torch.randint(0, shape[-1], shape[:-1], generator=gen)
    return logits, reference, targets


def test_a_hand_computed_token():
    """V = 2: student (0.25, 0.75), reference (0.5, 0.5), target 1: ℓ = −0.75 log 0.75 + λ Σ r log(r/q)."""
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    reference = torch.log(torch.tensor([[[0.5, 0.5]]]))
    loss = asft_loss(logits, torch.tensor([[1]]), reference, kl_weight=0.1)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert loss.item() == pytest.approx(-0.75 * math.log(0.75) + 0.1 * kl, rel=1e-6)
    reverse = asft_loss(logits, torch.tensor([[1]]), reference, kl_weight=0.1, kl_direction="student_to_reference")
    kl_reverse = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert reverse.item() == pytest.approx(-0.75 * math.log(0.75) + 0.1 * kl_reverse, rel=1e-6)


def test_lambda_0_is_dft_value_and_gradient():
    logits, reference, targets = _case()
    ours = asft_loss(logits, targets, reference, kl_weight=0.0)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    dft = objectives.dft_loss(logits, targets)
    (grad_dft,) = torch.autograd.grad(dft.sum(), logits)
    assert torch.equal(ours, dft) and torch.equal(grad_ours, grad_dft)


def test_the_dft_weight_is_detached_and_the_anchor_is_not():
    """∂ℓ/∂z_v = −p_y (1[v = y] − q_v) + λ (q_v − r_v): the DFT weight sg(p_y) carries no gradient, the KL
    (reference → student) pulls q towards r."""
    logits, reference, targets = _case(1)
    loss = asft_loss(logits, targets, reference, kl_weight=0.3)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    q = torch.softmax(logits.detach().double(), -1)
    onehot = F.one_hot(targets, q.shape[-1]).double()
    p_y = q.gather(-1, targets.unsqueeze(-1))
    expected = -p_y * (onehot - q) + 0.3 * (q - reference.double().exp())
    assert torch.allclose(grad.double(), expected, atol=1e-6)


def _released_asft(logits, labels, reference_logits, kl_weight):
    """Re-derived (read, not copied) from the authors' released code, github.com/zhuchichi56/ASFT,
    train_v2.py, EnhancedTrainer.compute_loss, mode "asft": the label's cross-entropy times the detached
    softmax probability of the label, plus kl_weight times kl_div(log_softmax(student), softmax(reference))
    summed over the vocabulary, then the sum over valid labels divided by their count."""
    log_q = torch.log_softmax(logits, -1)
    ce = -log_q.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    weight = log_q.exp().gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1).detach()
    r = torch.softmax(reference_logits, -1)
    kl = (r * (torch.log(r) - log_q)).sum(-1)
    valid = labels != -100
    return ((ce * weight + kl_weight * kl)[valid]).sum() / valid.sum()


def test_against_the_released_code_formula():
    logits, _, targets = _case(2, (3, 4, 7))
    reference_logits = torch.randn(3, 4, 7, generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(targets, dtype=torch.bool)
    mask[0, :2] = False  # prompt positions
    ours = asft_loss(logits, targets, F.log_softmax(reference_logits, -1), kl_weight=0.1)
    ours = (ours * mask).sum() / mask.sum()  # the trainer's reduction
    labels = torch.where(mask, targets, torch.full_like(targets, -100))
    assert_same_loss(ours, _released_asft(logits, labels, reference_logits, 0.1), logits)


def test_the_experiment_resolves_to_the_released_defaults():
    experiment = load_experiment(EXPERIMENT)
    cls, params = resolve(experiment)
    assert cls.name == "asft" and params == ASFTParams() and experiment.table == "prior"
    assert (params.kl_weight, params.kl_direction) == (0.1, "reference_to_student")
    assert cls.needs(params) == Needs(reference_model=True)
    assert cls.needs(ASFTParams(kl_weight=0.0)) == Needs()  # λ = 0: DFT, no frozen copy loaded


@pytest.mark.parametrize("params,key", [({"kl_weight": -0.1}, "params.kl_weight"),
                                        ({"kl_direction": "both"}, "params.kl_direction")])
def test_bad_params_are_refused_naming_the_key(params, key):
    assert_refused("asft", params, key)


def test_a_training_step_anchors_to_the_initial_student(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """At step 0 the student is its frozen copy: the anchor is 0, so the loss is DFT's; the reference
    forward is counted; a second step (student moved) has a positive anchor."""
    asft = _trainer(tmp_path / "asft", toy_tokenizer, traces, "asft", ASFTParams(kl_weight=1.0), reference=True)
    dft = _trainer(tmp_path / "dft", toy_tokenizer, traces, "dft")
    first, first_dft = asft.train_step(0), dft.train_step(0)
    assert first["loss"] == pytest.approx(first_dft["loss"], abs=1e-6)
    assert asft.cost.reference_forward_tokens > 0
    losses = []
    original = asft.method.token_losses
    asft.method.token_losses = lambda logits, batch: losses.append(
        (batch["reference_full_logprobs"], logits.detach(), batch["loss_mask"])) or original(logits, batch)
    second = asft.train_step(1)
    reference, logits, mask = losses[0]
    anchor = F.kl_div(torch.log_softmax(logits.float(), -1), reference, reduction="none", log_target=True).sum(-1)
    assert math.isfinite(second["loss"]) and anchor[mask].mean() > 0
