"""ProFit (dcod.methods.profit, docs/method.md "profit"): NLL only where the detached p_θ(y_t) ≥ τ."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dcod import objectives
from dcod.config import load_experiment
from dcod.methods import Needs, resolve
from dcod.methods.profit import ProFitParams, profit_loss

from test_methods_wiring import _same_step, _trainer  # noqa: F401
from method_checks import assert_refused, assert_same_loss
from tiny_training import traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "profit" / "config.yaml"


def _case(seed=0, shape=(3, 5, 6)):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(*shape, generator=gen)).requires_grad_()
    return logits, torch.randint(0, shape[-1], shape[:-1], generator=gen)


def test_hand_computed_tokens_and_the_boundary():
    """p = 0.3 is kept, p = 0.05 masked at τ = 0.1; p = 0.5 exactly is kept at τ = 0.5 (the code masks p < τ)."""
    logits = torch.log(torch.tensor([[[0.3, 0.7], [0.05, 0.95], [0.5, 0.5]]]))
    targets = torch.tensor([[0, 0, 1]])
    assert profit_loss(logits, targets, 0.1)[0][0, :2].tolist() == pytest.approx([-math.log(0.3), 0.0], rel=1e-6)
    assert profit_loss(logits, targets, 0.5)[0][0, 2].item() == pytest.approx(math.log(2), rel=1e-6)
    assert profit_loss(logits, targets, 0.5)[0][0, 0].item() == 0.0


def test_threshold_0_is_sft():
    logits, targets = _case()
    (ours, kept), nll = profit_loss(logits, targets, 0.0), objectives.nll_loss(logits, targets)
    (grad_ours,) = torch.autograd.grad(ours.sum(), logits)
    (grad_nll,) = torch.autograd.grad(nll.sum(), logits)
    assert torch.equal(ours, nll) and torch.equal(grad_ours, grad_nll) and bool(kept.all())


def test_the_gate_is_detached_masked_tokens_get_no_gradient():
    """∂ℓ/∂z_v = −1[p_y ≥ τ] (1[v = y] − q_v): the NLL gradient on kept tokens, none through the gate."""
    logits, targets = _case(1)
    loss, gate = profit_loss(logits, targets, 0.2)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    q = torch.softmax(logits.detach().double(), -1)
    kept = q.gather(-1, targets.unsqueeze(-1)) >= 0.2
    expected = -kept.double() * (F.one_hot(targets, q.shape[-1]).double() - q)
    assert 0 < int(kept.sum()) < kept.numel() and torch.equal(gate, kept.squeeze(-1))  # both kinds
    assert torch.allclose(grad.double(), expected, atol=1e-6)


def _released(logits, labels, num_items_in_batch, threshold):
    """Re-derived (read, not copied) from the authors' released code, github.com/Utaotao/ProFit,
    src/llamafactory/train/trainer_utils.py, _profit_cross_entropy with threshold_direction "higher": the
    label's softmax probability, detached; labels with probability < threshold set to the ignore index;
    cross-entropy summed over the remaining labels and divided by num_items_in_batch (the trainer's count of
    labels before the masking)."""
    p = torch.softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1).detach()
    labels = torch.where(p < threshold, torch.full_like(labels, -100), labels)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                           reduction="sum")
    return loss / num_items_in_batch


def test_against_the_released_code_formula():
    logits, targets = _case(2)
    mask = torch.rand(targets.shape, generator=torch.Generator().manual_seed(4)) > 0.25
    ours = (profit_loss(logits, targets, 0.1)[0] * mask).sum() / mask.sum()  # the trainer's reduction
    labels = torch.where(mask, targets, torch.full_like(targets, -100))
    theirs = _released(logits, labels, mask.sum(), 0.1)
    assert_same_loss(ours, theirs, logits)


def test_the_experiment_resolves_to_the_released_threshold():
    experiment = load_experiment(EXPERIMENT)
    cls, params = resolve(experiment)
    assert cls.name == "profit" and params == ProFitParams(threshold=0.1) and experiment.table == "prior"
    assert cls.needs(params) == Needs()
    assert_refused("profit", {"threshold": 1.5}, "params.threshold")


def test_a_training_step_reads_the_threshold(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """τ = 0 is SFT's step exactly; τ = 1 keeps no token (p < 1), so its loss is 0; a τ near the untrained
    student's typical p (about 1/V: the default 0.1 would mask every token of this untrained model) keeps
    some tokens only."""
    _same_step(_trainer(tmp_path / "t0", toy_tokenizer, traces, "profit", ProFitParams(threshold=0.0)),
               _trainer(tmp_path / "sft", toy_tokenizer, traces, "sft"))
    none_trainer = _trainer(tmp_path / "t1", toy_tokenizer, traces, "profit", ProFitParams(threshold=1.0))
    none = none_trainer.train_step(0)
    some_trainer = _trainer(tmp_path / "ts", toy_tokenizer, traces, "profit",
                            ProFitParams(threshold=1.0 / len(toy_tokenizer)))
    some = some_trainer.train_step(0)
    sft = _trainer(tmp_path / "sft2", toy_tokenizer, traces, "sft").train_step(0)
    assert none["loss"] == 0.0 and none["grad_norm"] == 0.0
    assert 0 < some["loss"] < sft["loss"]
    # run.json says how much the gate kept: nothing at τ = 1 (a run that did not train), a part in between
    assert none_trainer.method.run_summary() == {"profit_kept_fraction": 0.0}
    assert 0 < some_trainer.method.run_summary()["profit_kept_fraction"] < 1
    state = some_trainer.method.state()
    resumed = _trainer(tmp_path / "tr", toy_tokenizer, traces, "profit", ProFitParams()).method
    resumed.load_state(state)
    assert resumed.run_summary() == some_trainer.method.run_summary()
