"""The −p objective of "Beyond Log Likelihood" (dcod.methods.neg_prob, docs/method.md "neg_prob"):
ℓ = (1 − p^α)/α, α = 1 the −p loss, α → 0 the NLL."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dcod import objectives
from dcod.config import load_experiment
from dcod.methods import Needs, resolve
from dcod.methods.neg_prob import NegProbParams, prob_power_loss

from test_methods_wiring import _trainer  # noqa: F401
from method_checks import assert_refused, assert_same_loss
from tiny_training import _recording, traces  # noqa: F401  (traces: the module's toy traces fixture)

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "neg_prob" / "config.yaml"


def _case(seed=0, shape=(2, 4, 6)):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(*shape, generator=gen)).requires_grad_()
    return logits, torch.randint(0, shape[-1], shape[:-1], generator=gen)


def test_hand_computed_values():
    """V = 2, p(target) = 0.75: 1 − p = 0.25 at α = 1; (1 − √0.75)/0.5 at α = 0.5; −log 0.75 at α = 0."""
    logits, target = torch.tensor([[[0.0, math.log(3.0)]]]), torch.tensor([[1]])
    assert prob_power_loss(logits, target, 1.0).item() == pytest.approx(0.25, rel=1e-6)
    assert prob_power_loss(logits, target, 0.5).item() == pytest.approx((1 - math.sqrt(0.75)) / 0.5, rel=1e-6)
    assert prob_power_loss(logits, target, 0.0).item() == pytest.approx(-math.log(0.75), rel=1e-6)


def test_alpha_0_is_the_nll_and_small_alpha_tends_to_it():
    logits, targets = _case()
    nll = objectives.nll_loss(logits, targets)
    assert torch.equal(prob_power_loss(logits, targets, 0.0), nll)
    near = prob_power_loss(logits, targets, 1e-6)
    assert torch.allclose(near, nll, rtol=1e-5, atol=1e-6)  # (1 − p^α)/α = −log p − α log² p / 2 + …


def test_the_gradient_is_p_to_the_alpha_times_the_nll_gradient():
    """∂ℓ/∂z_v = −p_y^α (1[v = y] − q_v): at α = 1 exactly DFT's gradient (only the value differs)."""
    logits, targets = _case(1)
    q = torch.softmax(logits.detach().double(), -1)
    onehot = F.one_hot(targets, q.shape[-1]).double()
    p_y = q.gather(-1, targets.unsqueeze(-1))
    for alpha in (1.0, 0.5, 2.0):
        (grad,) = torch.autograd.grad(prob_power_loss(logits, targets, alpha).sum(), logits)
        assert torch.allclose(grad.double(), -p_y**alpha * (onehot - q), atol=1e-6)
    (grad_p,) = torch.autograd.grad(prob_power_loss(logits, targets, 1.0).sum(), logits)
    (grad_dft,) = torch.autograd.grad(objectives.dft_loss(logits, targets).sum(), logits)
    assert torch.allclose(grad_p, grad_dft, atol=1e-7)


def _released(logits, labels, objective):
    """Re-derived (read, not copied) from the authors' released code, github.com/GaotangLi/Beyond-Log-Likelihood,
    main_verl/trainer/fsdp_sft_trainer.py, _compute_loss_and_backward: p = exp(log_softmax gathered at the
    label); objective "p": loss 1 − p; "GeneralFamily-α": loss −(exp(α log p) − 1)/α; each times the
    loss mask, and the masked tokens' sum over their count."""
    log_p = torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if objective == "p":
        return 1 - log_p.exp()
    alpha = float(objective.split("-")[1])
    return -(torch.exp(alpha * log_p) - 1) / alpha


@pytest.mark.parametrize("objective,alpha", [("p", 1.0), ("GeneralFamily-0.3", 0.3), ("GeneralFamily-5", 5.0)])
def test_against_the_released_code_formula(objective, alpha):
    logits, targets = _case(2)
    mask = torch.rand(targets.shape, generator=torch.Generator().manual_seed(3)) > 0.3
    ours = (prob_power_loss(logits, targets, alpha) * mask).sum() / mask.sum()
    theirs = (_released(logits, targets, objective) * mask).sum() / mask.sum()
    assert_same_loss(ours, theirs, logits)


def test_the_experiment_resolves_to_the_minus_p10_objective():
    experiment = load_experiment(EXPERIMENT)
    cls, params = resolve(experiment)
    assert cls.name == "neg_prob" and params == NegProbParams(alpha=10.0) and experiment.table == "prior"
    assert cls.needs(params) == Needs()
    assert_refused("neg_prob", {"alpha": -1}, "params.alpha")


def test_a_training_step_uses_alpha(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """α = 0 trains like SFT; α = 1 reports the mean of 1 − p, which is below 1 and differs from it."""
    nll = _trainer(tmp_path / "a0", toy_tokenizer, traces, "neg_prob", NegProbParams(alpha=0.0)).train_step(0)
    sft = _trainer(tmp_path / "sft", toy_tokenizer, traces, "sft").train_step(0)
    minus_p = _trainer(tmp_path / "a1", toy_tokenizer, traces, "neg_prob", NegProbParams()).train_step(0)
    assert nll["loss"] == sft["loss"]
    assert 0 < minus_p["loss"] < 1 and math.isfinite(minus_p["grad_norm"])


def test_alpha_1_takes_dfts_optimiser_step(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """Same gradient as DFT (−p ∇log p), so the same update up to float rounding: docs/method.md says a
    neg_prob run at α = 1 repeats dft's."""
    minus_p = _trainer(tmp_path / "p", toy_tokenizer, traces, "neg_prob", NegProbParams())
    dft = _trainer(tmp_path / "dft", toy_tokenizer, traces, "dft")
    seen_p, seen_dft = _recording(minus_p), _recording(dft)
    minus_p.train_step(0), dft.train_step(0)
    for name, grad in seen_p["grads"].items():
        assert torch.allclose(grad, seen_dft["grads"][name], rtol=1e-4, atol=1e-7), name
