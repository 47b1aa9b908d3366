"""Configs are refused at load time with a message naming the bad key and the allowed values."""

import dataclasses

import pytest
import yaml

from dcod.config import ConfigError, discover_experiments, load_experiment, load_profile, parse_experiment

from conftest import REPO

BAD_EXPERIMENTS = [
    ({"method": "sftt"}, "method", "allowed values"),
    ({"method": "sft", "learning_rate": 1}, "learning_rate", "allowed keys"),
    ({"method": "sft", "train": {"lr": -1.0}}, "lr", "must be > 0"),
    ({"method": "sft", "train": {"lrr": 1.0}}, "lrr", "allowed keys"),
    ({"method": "sft", "train": {"steps": "many"}}, "steps", "expected int"),
    ({"method": "dcod", "params": {"beta": -1.0}}, "beta", "must be >= 0"),
    ({"method": "dcod", "params": {"beta_max": -5.0}}, "beta_max", "must be > 0"),
    ({"method": "dcod", "params": {"ess_target": 0.0}}, "ess_target", "(0, 1]"),
    ({"method": "dcod", "params": {"ess_target": 1.5}}, "ess_target", "(0, 1]"),
    ({"method": "dcod", "params": {"granularity": "token"}}, "granularity", "prefix, sequence"),
    ({"method": "dcod", "params": {"reference": "oracle"}}, "reference", "teacher, initial_student, none"),
    ({"method": "dcod", "params": {"discount": 1.5}}, "discount", "[0, 1]"),
    ({"method": "dcod", "params": {"clip": 0.5}}, "clip", ">= 1"),
    ({"method": "dcod", "params": {"token_loss": "mse"}}, "token_loss", "nll, kd"),
    ({"method": "onpolicy_kd", "params": {"jsd_beta": 1.5}}, "jsd_beta", "[0, 1]"),
    ({"method": "onpolicy_kd", "params": {"jsd_beta": -0.1}}, "jsd_beta", "[0, 1]"),
    ({"method": "self_distill", "params": {"rounds": 0}}, "rounds", ">= 1"),
    ({"method": "sft", "params": {"beta": 1.0}}, "beta", "allowed keys"),
    ({"method": "sft", "table": "appendix"}, "table", "main, ablation"),
]


@pytest.mark.parametrize("data,key,message", BAD_EXPERIMENTS)
def test_bad_experiment_configs_are_refused_naming_the_key(data, key, message):
    with pytest.raises(ConfigError) as error:
        parse_experiment("x", data, "experiments/x/config.yaml")
    assert key in str(error.value) and message in str(error.value)


BAD_PROFILES = [
    ({"train": {"lr": -0.1}}, "train.lr"),
    ({"train": {"batch_size": 10, "micro_batch_size": 3}}, "micro_batch_size"),
    ({"teacher": {"kind": "oracle"}}, "teacher.kind"),
    ({"teacher": {"kind": "hf"}}, "teacher.path"),
    ({"student": {"hidden_size": 30, "num_heads": 4}}, "hidden_size"),
    ({"seeds": []}, "seeds"),
    ({"evall": {}}, "evall"),
    ({"world": {"n_trian": 5}}, "n_trian"),
    ({"world": {"long_k": [6, 9]}}, "long_k"),
]


@pytest.mark.parametrize("override,key", BAD_PROFILES)
def test_bad_profiles_are_refused_naming_the_key(tmp_path, override, key):
    data = yaml.safe_load((REPO / "config/profiles/ci.yaml").read_text())
    for section, value in override.items():
        if isinstance(value, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **value}
        else:
            data[section] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises((ConfigError, ValueError)) as error:
        load_profile(path)
    assert key in str(error.value)


def test_every_shipped_config_loads():
    for path in sorted((REPO / "config/profiles").glob("*.yaml")):
        load_profile(path)
    names = discover_experiments(REPO / "experiments")
    assert {"sft", "kd", "dft", "onpolicy_kd", "self_distill", "dcod"} <= set(names)
    for name in names:
        experiment = load_experiment(REPO / "experiments" / name / "config.yaml")
        assert dataclasses.is_dataclass(experiment.params)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_profile(tmp_path / "nope.yaml")
