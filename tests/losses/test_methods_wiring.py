"""The two prior offline baselines added through the method registry (skew_kd, iw_sft): their experiment
configs resolve, and one Trainer step wires their losses as docs/method.md says. The maths of the losses
is pinned in test_objectives.py (same folder); here: the wiring (params reach the loss, the reference reaches the
weights, the weights reach the reduction)."""

import copy
import math
from pathlib import Path

import pytest
import torch

from dcod.config import ConfigError, TrainConfig, load_experiment, parse_experiment
from dcod.methods import Cost, Needs, StepContext, build_method, resolve
from dcod.methods.iw_sft import IwSFTParams
from dcod.methods.skew_kd import SkewKDParams
from dcod.models import build_tiny_llama
from dcod.training import Trainer

from tiny_training import TINY, _parameters, _recording, traces  # noqa: F401  (the module's toy traces fixture)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def test_the_experiment_configs_resolve_to_the_papers_defaults():
    cls, params = resolve(load_experiment(EXPERIMENTS / "skew_kd" / "config.yaml"))
    assert cls.name == "skew_kd" and params == SkewKDParams(alpha=0.1, direction="forward")
    assert cls.needs(params) == Needs() and not cls.weighted  # offline traces only
    cls, params = resolve(load_experiment(EXPERIMENTS / "iw_sft" / "config.yaml"))
    assert cls.name == "iw_sft" and params == IwSFTParams()  # the config states the defaults
    assert (params.reference, params.clip_min, params.clip_max) == ("initial_student", 0.0, 16.0)
    assert params.length_normalize and not params.normalize
    assert cls.needs(params) == Needs(reference_model=True) and cls.weighted
    assert cls.needs(IwSFTParams(reference="teacher")) == Needs()  # stored log-probs: no frozen model
    for name in ("skew_kd", "iw_sft"):
        assert load_experiment(EXPERIMENTS / name / "config.yaml").table == "main"


@pytest.mark.parametrize("method,params,key", [
    ("skew_kd", {"alpha": 1.0}, "params.alpha"),  # alpha = 1: the loss is 0 identically
    ("skew_kd", {"direction": "both"}, "params.direction"),
    ("iw_sft", {"clip_min": 2.0, "clip_max": 1.0}, "params.clip_min"),
    ("iw_sft", {"reference": "none"}, "params.reference"),
    ("iw_sft", {"clip_max": ".inf"}, "params.clip_max"),
])
def test_bad_params_are_refused_naming_the_key(method, params, key):
    if params.get("clip_max") == ".inf":
        params = {"clip_max": math.inf}
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
    ("iw_sft", IwSFTParams(), True),
    ("iw_sft", IwSFTParams(reference="teacher"), False),
    ("iw_sft", IwSFTParams(reference="teacher", normalize=True, length_normalize=False, clip_min=0.1), False),
])
def test_a_training_step_is_finite(toy_tokenizer, traces, tmp_path, method, params, reference):  # noqa: F811
    trainer = _trainer(tmp_path, toy_tokenizer, traces, method, params, reference)
    for step in range(2):
        record = trainer.train_step(step)
        assert math.isfinite(record["loss"]) and record["loss"] > 0 and math.isfinite(record["grad_norm"])
    if method == "iw_sft":
        assert {"mean_weight", "clip_fraction", "max_weight", "mean_log_ratio"} <= set(record)
        # a frozen forward per batch is a cost of the initial-student reference only
        assert (trainer.cost.reference_forward_tokens > 0) == (params.reference == "initial_student")
        if params.normalize:
            assert record["mean_weight"] == pytest.approx(1.0, rel=1e-6)


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


def test_iw_sft_against_the_initial_student_is_sft_at_step_0(toy_tokenizer, traces, tmp_path):  # noqa: F811
    """The student equals its frozen copy: every log-ratio is 0, every weight exactly 1, so the step is SFT's."""
    iw = _trainer(tmp_path / "iw", toy_tokenizer, traces, "iw_sft", IwSFTParams(), reference=True)
    sft = _trainer(tmp_path / "sft", toy_tokenizer, traces, "sft")
    weights = []
    original = iw.method.weights
    iw.method.weights = lambda scores, mask: weights.append((original(scores, mask), mask)) or weights[-1][0]
    record, _ = _same_step(iw, sft)
    (values, _), mask = weights[0]
    assert (values[mask] == 1).all() and (values[~mask] == 0).all()
    assert (record["mean_weight"], record["clip_fraction"], record["max_weight"]) == (1.0, 0.0, 1.0)
    assert record["mean_log_ratio"] == 0.0


def test_iw_sft_weights_clip_and_report_it(toy_tokenizer):
    ctx = StepContext(tokenizer=toy_tokenizer, traces=[], batch_size=3, seed=0)
    method = build_method("iw_sft", IwSFTParams(clip_min=0.25), ctx, Cost())
    scores = torch.tensor([[math.log(20.0)], [0.0], [math.log(0.5)], [math.log(0.1)]])
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True], [False, True, False]])
    weights, diagnostics = method.weights(scores, mask)
    rows = torch.tensor([16.0, 1.0, 0.5, 0.25])  # [0.25, 16]: the first and the last are clipped
    assert torch.equal(weights, torch.where(mask, rows.unsqueeze(-1), torch.zeros(())))
    assert diagnostics["clip_fraction"] == 0.5 and diagnostics["max_weight"] == 16.0
    assert diagnostics["mean_weight"] == pytest.approx((2 * 16 + 1 + 3 * 0.5 + 0.25) / 7, rel=1e-6)


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
