"""Checks the method tests share (tests/losses/test_method_*.py): a loss against its authors' formula (value
and gradient), a bad ``params`` key refused naming the file and key, and the full-vocabulary teacher that a
top-k bucketed loss stands for."""

import pytest
import torch

from dcod.config import ConfigError, parse_experiment
from dcod.methods import resolve


def assert_same_loss(ours: torch.Tensor, theirs: torch.Tensor, wrt: torch.Tensor, *, rtol: float = 1e-6,
                     atol: float = 1e-7) -> None:
    """Two losses agree in value (relative ``rtol``) and in their gradient with respect to ``wrt`` (the
    logits; absolute ``atol``). Non-scalar losses are summed first."""
    ours, theirs = ours.sum(), theirs.sum()
    (grad_ours,) = torch.autograd.grad(ours, wrt, retain_graph=True)
    (grad_theirs,) = torch.autograd.grad(theirs, wrt, retain_graph=True)
    assert ours.item() == pytest.approx(theirs.item(), rel=rtol, abs=atol)
    assert torch.allclose(grad_ours, grad_theirs.to(grad_ours.dtype), atol=atol)


def assert_refused(method: str, params: dict, key: str) -> None:
    """An experiment of ``method`` with these ``params`` is a ConfigError naming its file and ``key``."""
    experiment = parse_experiment("x", {"method": method, "params": params}, "experiments/x/config.yaml")
    with pytest.raises(ConfigError, match=rf"experiments/x/config\.yaml: {key}"):
        resolve(experiment)


def completed_teacher(logits: torch.Tensor, ids: list[int], probs: list[float]) -> torch.Tensor:
    """The full-vocabulary teacher a top-k loss stands for: ``probs`` on ``ids``, the rest of the mass spread
    over the other tokens like the student's distribution (``logits`` [V]), held fixed."""
    q = torch.softmax(logits.detach(), -1)
    tail = torch.ones_like(q, dtype=torch.bool)
    tail[ids] = False
    teacher = torch.zeros_like(q)
    teacher[ids] = torch.tensor(probs, dtype=q.dtype)
    teacher[tail] = (1 - sum(probs)) * q[tail] / q[tail].sum()
    return teacher
