"""The method registry and the trainer/method contract (dcod.methods): names, params, needs, scores."""

import sys

import pytest
import torch

from dcod.config import ConfigError, Section, TrainConfig, parse_experiment
from dcod.data import collate
from dcod.methods import (REGISTRY, Cost, Method, Needs, Scores, StepContext, build_method, discover, get_method,
                          method_names, register, resolve)
from dcod.methods.dcod import DCODParams
from dcod.models import build_tiny_llama
from dcod.pipeline import step_context
from dcod.toy.teacher import ToyTeacher
from dcod.training import Trainer

from tiny_training import TINY, traces  # noqa: F401  (the module's toy traces fixture)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown method 'sftt'; known methods: .*dcod.*sft"):
        get_method("sftt")
    experiment = parse_experiment("x", {"method": "sftt"}, "experiments/x/config.yaml")
    with pytest.raises(ConfigError, match=r"experiments/x/config\.yaml: method: got 'sftt', allowed values: "):
        resolve(experiment)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_declares_params_and_needs(name):
    cls = get_method(name)
    assert cls.name == name and issubclass(cls, Method)
    assert issubclass(cls.Params, Section) and cls.Params.model_config["extra"] == "forbid"
    params = cls.Params()  # the defaults are valid
    assert isinstance(cls.needs(params), Needs)
    assert isinstance(cls.report_columns(params), dict)
    assert cls.weighted == bool(cls.weight_diagnostics)  # a weighted method says what its weights log


def test_the_shipped_methods_declare_what_the_pipeline_loads():
    def needs(name, **params):
        cls = get_method(name)
        return cls.needs(cls.Params(**params))

    assert needs("sft") == Needs()  # offline traces only
    assert needs("dcod").reference_model is False and needs("dcod", reference="initial_student").reference_model
    assert needs("onpolicy_kd").teacher_model and needs("onpolicy_kd").student_rollouts
    assert not needs("onpolicy_kd").offline_traces and needs("onpolicy_kd", student_fraction=0.5).offline_traces
    assert needs("self_distill") == Needs(offline_traces=False, student_rollouts=True, training_prompts=True)


def test_a_method_module_is_registered_by_existing(tmp_path, monkeypatch):
    package = tmp_path / "extra_methods"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "echo.py").write_text(
        "from dcod.methods.base import Method, register\n\n\n@register\nclass Echo(Method):\n    name = 'echo_test'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert discover("extra_methods") == ["echo"]
        assert get_method("echo_test").__module__ == "extra_methods.echo" and "echo_test" in method_names()
    finally:
        REGISTRY.pop("echo_test", None)
        for module in ("extra_methods", "extra_methods.echo"):
            sys.modules.pop(module, None)


def test_register_refuses_a_method_without_a_name_or_typed_params():
    with pytest.raises(TypeError, match="needs its own `name`"):
        register(type("Nameless", (Method,), {}))
    with pytest.raises(TypeError, match="Params must be a dcod.config.Section"):
        register(type("Untyped", (Method,), {"name": "untyped_test", "Params": dict}))
    assert "untyped_test" not in REGISTRY


def test_the_pipeline_loads_what_a_method_declares(ci_profile, toy_tokenizer, tmp_path):
    """A method registered here (as a new baseline would be) gets exactly what its needs ask for."""
    world, base = tmp_path / "world", tmp_path / "base"
    toy_tokenizer.save_pretrained(world / "tokenizer")
    (world / "train.jsonl").write_text('{"id": "1", "question": "Q:1+2\\nA:", "gold": "3"}\n')
    model = build_tiny_llama(TINY, toy_tokenizer, seed=0)
    model.save_pretrained(base)
    cfg = TrainConfig(steps=1, batch_size=2)

    class Rollouts(Method):
        name = "rollouts_test"

        @classmethod
        def needs(cls, params):
            return Needs(student_rollouts=True, teacher_model=True, training_prompts=True, reference_model=True)

    register(Rollouts)
    try:
        cls = get_method("rollouts_test")
        ctx = step_context(ci_profile, cfg, cls.needs(cls.Params()), model=model, tokenizer=toy_tokenizer,
                           traces=[], seed=0, world_dir=world, base_dir=base)
        assert ctx.student_backend is not None and ctx.student_backend.model is model  # samples the live student
        assert isinstance(ctx.teacher, ToyTeacher)
        assert [p["gold"] for p in ctx.prompts] == ["3"] and ctx.grade(["3"], ["\\boxed{3}"]) == [True]
        assert ctx.reference_model is not None and not ctx.reference_model.training
        assert ctx.total_steps == 1
    finally:
        REGISTRY.pop("rollouts_test")
    plain = step_context(ci_profile, cfg, Needs(), model=model, tokenizer=toy_tokenizer, traces=[], seed=0,
                         world_dir=world, base_dir=base)
    assert (plain.student_backend, plain.teacher, plain.reference_model, plain.prompts) == (None, None, None, [])


def test_dcod_scores_carry_the_log_ratios_not_the_batch(toy_tokenizer, traces, tmp_path):  # noqa: F811
    ctx = StepContext(tokenizer=toy_tokenizer, traces=traces, batch_size=8, seed=0, total_steps=1)
    method = build_method("dcod", DCODParams(), ctx, Cost())
    batch = collate(traces[:4], toy_tokenizer.pad_token_id)
    method.extra_inputs(batch, traces[:4])
    keys = set(batch)
    logits = torch.randn(*batch["targets"].shape, len(toy_tokenizer))
    scores = method.unit_scores(logits, batch)
    assert isinstance(scores, Scores) and set(scores.token_stats) == {"log_ratio"}
    ratios = scores.token_stats["log_ratio"]
    assert ratios.shape == batch["targets"].shape and (ratios[~batch["loss_mask"]] == 0).all()
    assert set(batch) == keys  # no side channel through the batch

    seen = []
    trainer = Trainer(build_tiny_llama(TINY, toy_tokenizer, seed=0), toy_tokenizer, method,
                      TrainConfig(steps=1, batch_size=8, checkpoint_every=1), tmp_path, cost=method.cost, seed=0,
                      progress=False)
    token_losses = method.token_losses
    method.token_losses = lambda logits, batch: seen.append(set(batch)) or token_losses(logits, batch)
    record = trainer.train_step(0)
    assert seen and all("log_ratios" not in keys for keys in seen)
    assert {"beta", "ess_fraction", "clip_fraction", "mean_log_ratio"} <= set(record)


# registered methods that no experiment runs yet, each with its reason (keep short)
WITHOUT_EXPERIMENT: dict[str, str] = {}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_has_a_config_a_cited_docstring_and_a_test(name):
    """What every member of the registry must have (derived from the registry, so a new method is checked
    without editing a list): an experiment config that runs it, a module docstring citing its source (a
    paper with its year, or a docs/ page) and a test outside this file that builds or trains it."""
    import re
    from pathlib import Path

    from dcod.config import load_experiment

    root = Path(__file__).resolve().parents[2]
    configs = [p for p in sorted((root / "experiments").glob("*/config.yaml")) if load_experiment(p).method == name]
    assert bool(configs) != (name in WITHOUT_EXPERIMENT), f"method {name}: no experiments/<name>/config.yaml runs it"
    doc = sys.modules[get_method(name).__module__].__doc__ or ""
    assert re.search(r"\b(19|20)\d\d\b|docs/\w+\.md", doc), f"method {name}: its module docstring cites no source"
    quoted = re.compile(rf"""["']{re.escape(name)}["']""")
    exercising = [p.name for p in sorted((root / "tests").rglob("test_*.py")) if p.name != Path(__file__).name
                  and quoted.search(p.read_text()) and re.search(r"build_method|train_step|_loss\(|weights\(|stage_train",
                                                                 p.read_text())]
    assert exercising, f"method {name}: no test builds it, trains it or checks its loss or weights"
