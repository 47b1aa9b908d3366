import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DCOD_DATA_DIR", REPO.parent / "shared" / "data"))

# subprocesses (snakemake rules call `python -m dcod`) must find this interpreter's packages
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def toy_tokenizer():
    from dcod.toy.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def ci_profile():
    from dcod.config import load_profile

    return load_profile(REPO / "config" / "profiles" / "ci.yaml")


# ----------------------------------------------------------------------------- float tolerances
#
# How the tests compare floats, so that they pass on any x86-64 CPU (and a GPU). Two results of the *same*
# code on the same inputs and kernels are compared exactly (torch.equal). Two *different* computations
# of one quantity (accumulated vs one batch, 2 processes vs 1, KV-cached vs full forward) are compared
# with a tolerance derived from the size of the computation, with the derivation beside it, never tuned
# to one CPU: ATen picks other float kernels per CPU (AVX-512, AVX2, none: ATEN_CPU_CAPABILITY), and a
# tolerance measured on one of them alone once failed on another. `make test-avx2` runs the suite on
# the AVX2 path; ATEN_CPU_CAPABILITY=default runs it without vector kernels.

EPS32 = 2.0**-23  # torch.finfo(torch.float32).eps = 1.19e-7: float32's relative rounding step


def assert_gradients_close(got: dict, expected: dict, rtol: float) -> None:
    """Per tensor, every entry within ``rtol`` x the tensor's largest entry.

    The scale is the tensor's, not the entry's: a gradient entry is a sum of many per-token
    contributions, so its rounding error scales with their size, not with what is left after they
    cancel (an entry near 0 carries the same absolute error as its neighbours).
    """
    import torch

    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        atol = rtol * float(grad.abs().max())
        torch.testing.assert_close(got[name], grad, rtol=0, atol=atol, msg=lambda m, n=name: f"gradient {n}: {m}")


def adam_first_step_bound(grad_a, grad_b, weight, lr: float, adam_eps: float):
    """Per entry, the largest |w_a - w_b| that one AdamW step from the same weights and a zero optimiser
    state can give when the two runs' gradients are ``grad_a`` and ``grad_b``.

    The first step moves a weight by -lr g/(|g| + eps) (bias-corrected m = g, sqrt(v) = |g|; weight decay
    is the same map of the same weight in both runs). g -> g/(|g| + eps) has slope eps/(|g| + eps)^2, so
    the updates differ by at most lr |g_a - g_b| eps/(m + eps)^2, m the smallest |g| between g_a and g_b
    (0 if their signs differ), plus float32 rounding: ~8 roundings of the update (<= lr) and one of
    w + update in each run, below 8 eps (|w| + lr). For |g| >> eps the update is lr sign(g) and ignores
    the gradient's rounding; an entry with |g| ~ eps (the toy models have some near 1e-9) turns a 1e-11
    rounding difference into lr x 1e-3 -- what a flat atol on the weights could not allow for.
    """
    import torch

    same_sign = torch.sign(grad_a) == torch.sign(grad_b)
    between = torch.where(same_sign, torch.minimum(grad_a.abs(), grad_b.abs()), torch.zeros_like(grad_a))
    slope = adam_eps / (between + adam_eps) ** 2
    return lr * (grad_a - grad_b).abs() * slope + 8 * EPS32 * (weight.abs() + lr)


def assert_same_adam_step(weights_a: dict, weights_b: dict, grads_a: dict, grads_b: dict, lr: float,
                          adam_eps: float) -> None:
    """The weights after one AdamW step from the same start differ by no more than the gradients allow."""
    assert weights_a.keys() == weights_b.keys() == grads_a.keys() == grads_b.keys()
    for name in weights_a:
        bound = adam_first_step_bound(grads_a[name], grads_b[name], weights_a[name], lr, adam_eps)
        excess = (weights_a[name] - weights_b[name]).abs() - bound
        worst = int(excess.argmax())
        assert float(excess.max()) <= 0, (
            f"{name}: weights differ by {float((weights_a[name] - weights_b[name]).abs().flatten()[worst]):.3g} at "
            f"entry {worst}, more than one AdamW step from gradients {float(grads_a[name].flatten()[worst]):.6g} / "
            f"{float(grads_b[name].flatten()[worst]):.6g} allows ({float(bound.flatten()[worst]):.3g})")
