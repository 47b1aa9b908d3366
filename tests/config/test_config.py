"""Configs are refused at load time with a message naming the file, the bad dotted key and what is wrong
(pydantic's own words)."""

import re

import pytest
import yaml

from dcod.config import (ConfigError, Section, discover_experiments, experiment_chain, load_experiment, load_profile,
                         parse_experiment)
from dcod.methods import resolve
from dcod.splits import check_profile

from conftest import REPO


def _experiment(data):
    """Parse and resolve (the method and its params are checked by the registry), as the pipeline does."""
    experiment = parse_experiment("x", data, "experiments/x/config.yaml")
    resolve(experiment)
    return experiment


def _profile(path):
    """Load and make the checks that need the toy world or the benchmarks, as every CLI stage does."""
    return check_profile(load_profile(path))

BAD_EXPERIMENTS = [
    ({"method": "sftt"}, "method", "allowed values"),
    ({"method": "sft", "learning_rate": 1}, "learning_rate", "Extra inputs are not permitted"),
    ({"method": "sft", "train": {"lr": 1e-3}}, "train.lr", "learning_rates.values.x"),  # a profile's fact
    ({"method": "sft", "train": {"max_grad_norm": -1.0}}, "train.max_grad_norm", "greater than 0, got -1.0"),
    ({"method": "sft", "train": {"lrr": 1.0}}, "train.lrr", "Extra inputs are not permitted"),
    ({"method": "sft", "train": {"steps": "many"}}, "train.steps", "valid integer, got 'many'"),
    ({"method": "dcod", "params": {"beta": -1.0}}, "beta", "must be >= 0"),
    ({"method": "dcod", "params": {"beta_max": -5.0}}, "params.beta_max", "greater than 0"),
    ({"method": "dcod", "params": {"ess_target": 0.0}}, "params.ess_target", "greater than 0"),
    ({"method": "dcod", "params": {"ess_target": 1.5}}, "params.ess_target", "less than or equal to 1"),
    ({"method": "dcod", "params": {"granularity": "word"}}, "params.granularity", "'prefix', 'sequence', 'token' or 'step', got 'word'"),
    ({"method": "dcod", "params": {"beta": "ess"}}, "params.beta", "null (adaptive) or ess_floor"),
    ({"method": "dcod", "params": {"reference": "oracle"}}, "params.reference", "'teacher', 'initial_student' or 'none'"),
    ({"method": "dcod", "params": {"discount": 1.5}}, "params.discount", "less than or equal to 1"),
    ({"method": "dcod", "params": {"clip": 0.5}}, "params.clip", "greater than or equal to 1"),
    ({"method": "dcod", "params": {"token_loss": "mse"}}, "params.token_loss", "'nll' or 'kd'"),
    ({"method": "onpolicy_kd", "params": {"jsd_beta": 1.5}}, "params.jsd_beta", "less than or equal to 1"),
    ({"method": "onpolicy_kd", "params": {"jsd_beta": -0.1}}, "params.jsd_beta", "greater than or equal to 0"),
    ({"method": "self_distill", "params": {"rounds": 0}}, "params.rounds", "greater than or equal to 1"),
    ({"method": "sft", "params": {"beta": 1.0}}, "params.beta", "Extra inputs are not permitted"),
    ({"method": "sft", "table": "appendix"}, "table", "'main'"),
]


@pytest.mark.parametrize("data,key,message", BAD_EXPERIMENTS)
def test_bad_experiment_configs_are_refused_naming_the_key(data, key, message):
    with pytest.raises(ConfigError) as error:
        _experiment(data)
    assert "experiments/x/config.yaml" in str(error.value)
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
    with pytest.raises(ConfigError) as error:
        _profile(path)
    assert str(path) in str(error.value) and key in str(error.value)


def test_every_shipped_config_loads():
    for path in sorted((REPO / "config/profiles").glob("*.yaml")):
        _profile(path)
    names = discover_experiments(REPO / "experiments")
    assert {"sft", "kd", "dft", "onpolicy_kd", "self_distill", "dcod"} <= set(names)
    for name in names:
        _, params = resolve(load_experiment(REPO / "experiments" / name / "config.yaml"))
        assert isinstance(params, Section)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_profile(tmp_path / "nope.yaml")


# --- range checks pinned for issue 11 (list 6): each refusal names the key and what is allowed ---------

NON_FINITE_EXPERIMENTS = [
    ({"method": "sft", "train": {"min_lr_ratio": float("inf")}}, "train.min_lr_ratio"),
    ({"method": "sft", "train": {"max_grad_norm": "nan"}}, "train.max_grad_norm"),  # YAML 1.1 strings are numbers
    ({"method": "sft", "train": {"max_grad_norm": float("nan")}}, "train.max_grad_norm"),
    ({"method": "dcod", "params": {"clip": float("inf")}}, "params.clip"),
    ({"method": "dcod", "params": {"beta": float("nan")}}, "params.beta"),
    ({"method": "onpolicy_kd", "params": {"sample_temperature": float("inf")}}, "params.sample_temperature"),
    ({"method": "self_distill", "params": {"sample_temperature": float("nan")}}, "params.sample_temperature"),
]


@pytest.mark.parametrize("data,key", NON_FINITE_EXPERIMENTS)
def test_non_finite_experiment_values_are_refused(data, key):
    with pytest.raises(ConfigError, match=rf"experiments/x/config\.yaml: {key}: Input should be a finite number, got"):
        _experiment(data)


def test_an_experiment_without_method_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "experiments" / "x" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("description: no method\n")
    with pytest.raises(ConfigError, match=r"experiments/x/config\.yaml: method: Field required"):
        load_experiment(path)


RANGE_PROFILES = [
    ({"train": {"lr": float("inf")}}, r"train\.lr: Input should be a finite number, got inf"),
    ({"train": {"lr": float("nan")}}, r"train\.lr: Input should be a finite number, got nan"),
    ({"pretrain": {"lr": float("inf")}}, r"pretrain\.lr: Input should be a finite number"),
    # shipped base students lie inside the repository (dcod.shipped)
    ({"pretrain": {"shipped": "/models/ci"}}, r"pretrain\.shipped: a folder relative to the repository root"),
    ({"pretrain": {"shipped": "models/../../x"}}, r"pretrain\.shipped: a folder relative to the repository root"),
    ({"teacher": {"p_direct": float("nan")}}, r"teacher\.p_direct: Input should be a finite number"),
    ({"traces": {"temperature": float("inf")}}, r"traces\.temperature: Input should be a finite number"),
    ({"eval": {"stability_temperature": float("inf")}}, r"eval\.stability_temperature: Input should be a finite number"),
    ({"tuning": {"lrs": [1e-3, float("inf")]}}, r"tuning\.lrs: Input should be a finite number"),
    ({"seeds": [0, -1]}, r": seeds: Input should be greater than or equal to 0"),
    ({"ablation_seeds": [-3]}, r": ablation_seeds: Input should be greater than or equal to 0"),
    ({"ablation_seeds": [0, 0]}, r": ablation_seeds: must be distinct"),
    ({"tuning": {"seed": -1}}, r"tuning\.seed: Input should be greater than or equal to 0"),
    ({"pretrain": {"seed": -1}}, r"pretrain\.seed: Input should be greater than or equal to 0"),
    ({"traces": {"seed": -7}}, r"traces\.seed: Input should be greater than or equal to 0"),
    ({"eval": {"splits": ["validation", "idd"]}}, r"eval\.splits: 'idd' is not an evaluation split of the toy world; "
                                                  r"its splits with problems: validation, id, long, retention"),
    ({"eval": {"splits": ["validation", "train"]}}, r"eval\.splits: 'train' is not an evaluation split"),
    ({"eval": {"splits": ["validation", "extrapolate"]}}, r"eval\.splits: 'extrapolate' is not an evaluation split"),
    ({"eval": {"splits": ["validation", "id"]}, "world": {"n_id": 0}}, r"eval\.splits: 'id' is not an evaluation"),
    ({"eval": {"splits": ["validation", "id", "id"]}}, r"eval\.splits: must be distinct"),
    ({"eval": {"stability_temperature": 0.0}}, r"eval\.stability_temperature: Input should be greater than 0"),
    ({"eval": {"stability_temperature": -1.0}}, r"eval\.stability_temperature: Input should be greater than 0"),
    ({"eval": {"stability_problems": -1, "stability_samples": 0}}, r"eval\.stability_problems: must be >= 1 when"),
    ({"eval": {"stability_problems": 0, "stability_samples": 2}}, r"eval\.stability_problems: must be >= 1 when"),
    # one base model given by path: there is no other pre-training seed to pair a training seed with
    ({"student": {"path": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "pretrain": {"per_seed": True}},
     r"pretrain\.per_seed: needs a student pre-trained by this pipeline"),
]


def _profile_with(tmp_path, override: dict):
    data = yaml.safe_load((REPO / "config/profiles/ci.yaml").read_text())
    for section, value in override.items():
        data[section] = {**data[section], **value} if isinstance(value, dict) else value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("override,message", RANGE_PROFILES)
def test_out_of_range_profile_values_are_refused_at_load(tmp_path, override, message):
    path = _profile_with(tmp_path, override)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*" + message):
        _profile(path)


def test_in_range_edge_values_still_load(tmp_path):
    _profile(_profile_with(tmp_path, {"eval": {"stability_samples": 0, "stability_problems": 0}}))
    profile = _profile(_profile_with(tmp_path, {"world": {"n_extrapolate": 4},
                                                 "eval": {"splits": ["validation", "extrapolate"]}}))
    assert profile.eval.splits == ["validation", "extrapolate"]
    assert _profile(_profile_with(tmp_path, {"seeds": [0], "ablation_seeds": [0]})).seeds == [0]


# --- experiments inherit (base:) --------------------------------------------------------------------


def _write(root, name, text):
    path = root / name / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_an_experiment_inherits_its_base_and_overrides_one_knob(tmp_path):
    _write(tmp_path, "parent", "method: dcod\ndescription: parent\nparams: {beta: null, clip: 5.0, ess_target: 0.5}\n"
                               "train: {max_grad_norm: 0.5, steps: 7}\n")
    child = _write(tmp_path, "child", "base: parent\ndescription: child\ntable: ablation\nparams: {clip: null}\n"
                                      "train: {steps: 9}\n")
    experiment = load_experiment(child)
    assert (experiment.name, experiment.method, experiment.description, experiment.table) == (
        "child", "dcod", "child", "ablation")
    assert experiment.params == {"beta": None, "clip": None, "ess_target": 0.5}  # merged key by key
    assert experiment.train == {"max_grad_norm": 0.5, "steps": 9}
    assert experiment_chain(child) == [child, tmp_path / "parent" / "config.yaml"]
    assert experiment.bases == ("parent",)


def test_the_shipped_ablations_resolve_to_the_default_dcod_but_their_knob():
    dcod = load_experiment(REPO / "experiments/dcod/config.yaml")
    _, default = resolve(dcod)
    for path in sorted(REPO.glob("experiments/dcod_*/config.yaml")):
        experiment = load_experiment(path)
        _, params = resolve(experiment)
        changed = {k for k, v in params.model_dump().items() if v != getattr(default, k)}
        assert 1 <= len(changed) <= 2 and experiment.table == "ablation", path  # prefix: granularity + λ
        assert experiment.train == dcod.train  # the ablations inherit DCOD's tuned learning rate


def test_an_inheritance_cycle_is_refused_naming_the_file(tmp_path):
    a = _write(tmp_path, "a", "base: b\nmethod: sft\n")
    _write(tmp_path, "b", "base: a\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(tmp_path / 'b' / 'config.yaml'))}: base: 'a' makes a "
                                          r"cycle \(a -> b -> a\)"):
        load_experiment(a)


def test_a_missing_base_is_refused_naming_the_file(tmp_path):
    path = _write(tmp_path, "x", "base: nowhere\nmethod: sft\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: base: no experiment 'nowhere'"):
        load_experiment(path)


def test_knife_edge_pretrain_seeds_cover_every_base_student_of_a_world_seed():
    """The toy profile: the main world's knife edge compares the base students of Table 1's five seeds
    (pre-training seeds 1234-1238, the calibration's 1235 and 1236 among them); another world seed's, the
    calibration's seeds and its robustness seeds' (0, 1: 1235). Without per_seed, the calibration's only."""
    profile = load_profile(REPO / "config" / "profiles" / "toy.yaml")
    assert profile.pretrain.seed == 1234 and profile.seeds == [0, 1, 2, 3, 4]
    assert profile.knife_edge_pretrain_seeds(main_world=True) == [1235, 1236, 1237, 1238]
    assert profile.knife_edge_pretrain_seeds(main_world=False) == [1235, 1236]
    profile.pretrain.per_seed = False
    assert profile.knife_edge_pretrain_seeds(main_world=True) == [1235, 1236]
    profile.calibration.pretrain_seeds = []
    assert profile.knife_edge_pretrain_seeds(main_world=False) == []


def test_ci_derives_every_table1_experiment_and_lists_only_its_ablations():
    """ci's experiments are derived (every experiment outside Table 2, plus `ablations`): a new Table 1 method
    joins without an edit of the profile."""
    profile = _profile(REPO / "config/profiles/ci.yaml")
    assert profile.experiments is None and profile.ablations == ["dcod_kd"]
    names = discover_experiments(REPO / "experiments", profile)
    tables = {n: load_experiment(REPO / "experiments" / n / "config.yaml").table
              for n in discover_experiments(REPO / "experiments")}
    assert set(names) == {n for n, table in tables.items() if table != "ablation"} | {"dcod_kd"}


def test_ablations_derivation_follows_a_new_experiment(tmp_path):
    root = tmp_path / "experiments"
    for name, text in {"sft": "method: sft\n", "new_method": "method: kd\n",
                       "sft_x": "base: sft\ntable: ablation\n", "sft_y": "base: sft\ntable: ablation\n"}.items():
        (root / name).mkdir(parents=True)
        (root / name / "config.yaml").write_text(text)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"ablations": ["sft_y"]}))
    assert discover_experiments(root, load_profile(path)) == ["new_method", "sft", "sft_y"]
    path.write_text(yaml.safe_dump({"ablations": ["new_method"]}))
    with pytest.raises(ConfigError, match=r"p.yaml: ablations: \['new_method'\] are not Table 2 experiments"):
        discover_experiments(root, load_profile(path))
    path.write_text(yaml.safe_dump({"ablations": [], "experiments": ["sft"]}))
    with pytest.raises(ConfigError, match="ablations: a profile lists its experiments by hand or derives them"):
        load_profile(path)
