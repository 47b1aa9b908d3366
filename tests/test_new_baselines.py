"""Prior offline baselines added through the method registry (skew_kd): the experiment config
resolves, and one Trainer step wires the loss as docs/method.md says. The maths of the losses
is pinned in test_objectives.py; here: the wiring (params reach the loss, the loss reaches the reduction)."""

import copy
import math
from pathlib import Path

import pytest
import torch

from dcod.config import ConfigError, TrainConfig, load_experiment, parse_experiment
from dcod.methods import Cost, Needs, StepContext, build_method, resolve
from dcod.methods.skew_kd import SkewKDParams
from dcod.models import build_tiny_llama
from dcod.training import Trainer

from test_training import TINY, _parameters, _recording, traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_the_experiment_configs_resolve_to_the_papers_defaults():
    cls, params = resolve(load_experiment(EXPERIMENTS / "skew_kd" / "config.yaml"))
    assert cls.name == "skew_kd" and params == SkewKDParams(alpha=0.1, direction="forward")
    assert cls.needs(params) == Needs() and not cls.weighted  # offline traces only
    assert load_experiment(EXPERIMENTS / "skew_kd" / "config.yaml").table == "main"


@pytest.mark.parametrize("method,params,key", [
    ("skew_kd", {"alpha": 1.0}, "params.alpha"),  # alpha = 1: the loss is 0 identically
    ("skew_kd", {"direction": "both"}, "params.direction"),
])
def test_bad_params_are_refused_naming_the_key(method, params, key):
    experiment = parse_experiment("x", {"method": method, "params": params}, "experiments/x/config.yaml")
    with pytest.raises(ConfigError, match=rf"experiments/x/config\.yaml: {key}"):
        resolve(experiment)


def _trainer(tmp_path, tokenizer, traces, method, params=None, reference=False):  # noqa: F811
    cfg = TrainConfig(steps=2, batch_size=8, lr=3e-3, warmup_steps=1, checkpoint_every=2)
    model = build_tiny_llama(TINY, tokenizer, seed=0)
    cost = Cost()
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0, total_steps=cfg.steps)
    if reference:  # what the pipeline's step_context loads for Needs(reference_model=True)
        ctx.reference_model = copy.deepcopy(model).eval()
    return Trainer(model, tokenizer, build_method(method, params, ctx, cost), cfg, tmp_path, cost=cost, seed=0,
                   progress=False)


@pytest.mark.parametrize("method,params,reference", [
    ("skew_kd", SkewKDParams(), False),
    ("skew_kd", SkewKDParams(alpha=0.3, direction="reverse"), False),
])
def test_a_training_step_is_finite(toy_tokenizer, traces, tmp_path, method, params, reference):  # noqa: F811
    trainer = _trainer(tmp_path, toy_tokenizer, traces, method, params, reference)
    for step in range(2):
        record = trainer.train_step(step)
        assert math.isfinite(record["loss"]) and record["loss"] > 0 and math.isfinite(record["grad_norm"])


def _same_step(a: Trainer, b: Trainer) -> tuple[dict, dict]:
    """One optimiser step of each from the same start: the loss, gradients and new weights agree exactly."""
    seen_a, seen_b = _recording(a), _recording(b)
    record_a, record_b = a.train_step(0), b.train_step(0)
    assert record_a["loss"] == record_b["loss"] and record_a["tokens"] == record_b["tokens"]
    assert seen_a["grads"].keys() == seen_b["grads"].keys()
    assert all(torch.equal(seen_a["grads"][k], seen_b["grads"][k]) for k in seen_a["grads"])
    weights_a, weights_b = _parameters(a.model), _parameters(b.model)
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    return record_a, record_b


def test_skew_kd_with_alpha_0_is_kd(toy_tokenizer, traces, tmp_path):  # noqa: F811
    skew = _trainer(tmp_path / "skew", toy_tokenizer, traces, "skew_kd", SkewKDParams(alpha=0.0))
    kd = _trainer(tmp_path / "kd", toy_tokenizer, traces, "kd")
    _same_step(skew, kd)


def test_skew_kd_passes_its_knobs_to_the_loss(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """alpha and direction change the step (a method that ignored its params would pass the alpha 0 test)."""
    losses = {}
    for label, params in {"kd": SkewKDParams(alpha=0.0), "skl": SkewKDParams(alpha=0.5),
                          "srkl": SkewKDParams(alpha=0.5, direction="reverse")}.items():
        losses[label] = _trainer(tmp_path / label, toy_tokenizer, traces, "skew_kd", params).train_step(0)["loss"]
    assert len(set(losses.values())) == 3
    assert losses["skl"] < losses["kd"]  # the mixture is closer to the teacher than the student is
