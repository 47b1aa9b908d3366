"""Learning rates belong to a profile: where each one comes from, and that no value crosses profiles."""

import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from dcod.config import (ConfigError, discover_experiments, learning_rate_for, learning_rate_needs_tuning,
                         load_experiment, load_profile, train_config_for)

from conftest import REPO

PROFILES = sorted((REPO / "config" / "profiles").glob("*.yaml"))
EXPERIMENTS = REPO / "experiments"


def _experiments(profile):
    return {name: load_experiment(EXPERIMENTS / name / "config.yaml")
            for name in discover_experiments(EXPERIMENTS, profile)}


def _in_published_table(profile, experiment) -> bool:
    """Whether a ``source: table`` profile lists the experiment's rate (or, for an ablation, its base's).
    A method new since the table was copied is not in the published snapshot: the DAG tunes it
    (docs/tuning.md), so it is left out of the checks that read the table, not a failure of them."""
    names = (experiment.name, *(experiment.bases if experiment.table == "ablation" else ()))
    return any(name in profile.learning_rates.values for name in names)


def test_no_experiment_config_carries_a_learning_rate():
    for path in sorted(EXPERIMENTS.glob("*/config.yaml")):
        assert "lr" not in (yaml.safe_load(path.read_text()).get("train") or {}), path


def test_an_experiment_learning_rate_is_refused_naming_file_and_profile_key(tmp_path):
    path = tmp_path / "mine" / "config.yaml"
    path.parent.mkdir()
    path.write_text("method: sft\ntrain: {lr: 1.0e-3}\n")
    with pytest.raises(ConfigError, match=r"mine/config.yaml: train.lr: .*learning_rates.values.mine"):
        load_experiment(path)


def test_the_toy_table_is_the_published_grid_choice():
    """The toy profile's table was copied from its tuning results: every method in both agrees, and every
    chosen value is a point of the profile's own grid (the guard against a value tuned elsewhere)."""
    profile = load_profile(REPO / "config/profiles/toy.yaml")
    rates = profile.learning_rates
    assert rates.source == "table"
    tuning = pd.read_csv(REPO / rates.tuned_from)
    chosen = tuning[tuning["chosen"]].set_index("experiment")["lr"]
    shared = sorted(set(chosen.index) & set(rates.values))
    assert shared, "the table and the tuning results share no experiment"
    for name in shared:
        assert rates.values[name] == pytest.approx(chosen[name]), name
    assert set(tuning["lr"]) == set(profile.tuning.lrs), "the table came from this profile's grid"


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_every_experiment_of_every_profile_resolves_its_learning_rate(path, tmp_path):
    profile = load_profile(path)
    experiments = _experiments(profile)
    table = None
    tuned = {n for n, e in experiments.items() if learning_rate_needs_tuning(profile, e)}
    if tuned:
        with pytest.raises(ConfigError, match="needs the tuning results"):
            learning_rate_for(profile, experiments[sorted(tuned)[0]])
        # a tuning file of this profile's grid: a distinct grid point per experiment, so a mix-up shows
        grid = profile.tuning.lrs
        main = [n for n, e in experiments.items() if e.table != "ablation"]
        rows = [{"experiment": n, "lr": lr, "chosen": lr == grid[i % len(grid)]}
                for i, n in enumerate(main) for lr in grid]
        table = tmp_path / "tuning.csv"
        pd.DataFrame(rows).to_csv(table, index=False)
    if profile.learning_rates is not None and profile.learning_rates.source == "table":
        experiments = {n: e for n, e in experiments.items() if _in_published_table(profile, e)}
        assert experiments, f"{path.name}: no experiment in its learning-rate table"
    for name, experiment in experiments.items():
        rate = learning_rate_for(profile, experiment, table)
        assert rate.value in ([profile.train.lr] if profile.learning_rates is None else profile.tuning.lrs), name
        assert train_config_for(profile, experiment, lr=rate.value).lr == rate.value
        if name in tuned:
            owner = name if experiment.table != "ablation" else experiment.bases[0]
            assert owner in rate.origin and str(table) in rate.origin


def test_the_paper_profile_resolves_none_of_the_toy_values(tmp_path):
    """Under the paper profile every rate is the paper grid's choice: none of the toy table's values."""
    toy = load_profile(REPO / "config/profiles/toy.yaml")
    paper = load_profile(REPO / "config/profiles/paper.yaml")
    assert paper.learning_rates.source == "tuning" and "lr" not in paper.train.model_fields_set
    assert not set(paper.tuning.lrs) & set(toy.learning_rates.values.values())
    experiments = _experiments(paper)
    tuned = [n for n, e in experiments.items() if e.table in ("main", "prior")]  # the DAG's TUNED: Tables 1 and 3
    rows = [{"experiment": n, "lr": lr, "chosen": lr == 1e-5} for n in tuned for lr in paper.tuning.lrs]
    table = tmp_path / "tuning.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    for name, experiment in experiments.items():
        assert learning_rate_for(paper, experiment, table).value == 1e-5, name


def test_ablations_train_at_the_learning_rate_of_the_experiment_they_vary():
    """Table 2 varies one DCOD knob at a time: every ablation inherits its base's rate (toy table)."""
    profile = load_profile(REPO / "config/profiles/toy.yaml")
    ablations = {n: e for n, e in _experiments(profile).items()
                 if e.table == "ablation" and _in_published_table(profile, e)}
    assert ablations
    for name, experiment in ablations.items():
        base = load_experiment(EXPERIMENTS / experiment.bases[-1] / "config.yaml")
        assert learning_rate_for(profile, experiment).value == learning_rate_for(profile, base).value, name


def test_a_value_off_the_profile_grid_or_beside_train_lr_is_refused(tmp_path):
    text = (REPO / "config/profiles/toy.yaml").read_text()
    off_grid = tmp_path / "off_grid.yaml"
    off_grid.write_text(text.replace("    sft: 1.0e-3\n", "    sft: 3.0e-3\n"))
    with pytest.raises(ConfigError, match=r"off_grid.yaml: learning_rates: \{'sft': 0.003\} are not points"):
        load_profile(off_grid)
    both = tmp_path / "both.yaml"
    both.write_text(text.replace("  batch_size: 32\n  warmup_steps", "  batch_size: 32\n  lr: 1.0e-3\n  warmup_steps"))
    with pytest.raises(ConfigError, match="both.yaml: train: sets lr, which learning_rates"):
        load_profile(both)
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.replace("    sft: 1.0e-3\n", ""))
    with pytest.raises(ConfigError, match="values has no rate for it .* training 'sft' needs the tuning results"):
        learning_rate_for(load_profile(missing), load_experiment(EXPERIMENTS / "sft/config.yaml"))


def test_a_method_newer_than_the_table_is_tuned_by_the_grid_never_given_another_rate(tmp_path):
    """toy (source table) without sft in its table: sft now waits for the profile's grid and reads its own
    choice there, its ablation-free neighbours keep the table; the origin names both facts."""
    text = (REPO / "config/profiles/toy.yaml").read_text()
    path = tmp_path / "toy_without_sft.yaml"
    path.write_text(text.replace("    sft: 1.0e-3\n", ""))
    profile = load_profile(path)
    sft, kd = (load_experiment(EXPERIMENTS / f"{n}/config.yaml") for n in ("sft", "kd"))
    assert learning_rate_needs_tuning(profile, sft) and not learning_rate_needs_tuning(profile, kd)
    table = tmp_path / "tuning.csv"
    pd.DataFrame([{"experiment": "sft", "lr": lr, "chosen": lr == 2e-4} for lr in profile.tuning.lrs]
                 + [{"experiment": "kd", "lr": lr, "chosen": lr == 2e-3} for lr in profile.tuning.lrs]
                 ).to_csv(table, index=False)
    rate = learning_rate_for(profile, sft, table)
    assert rate.value == 2e-4 and "not in learning_rates.values" in rate.origin
    assert learning_rate_for(profile, kd, table).value == profile.learning_rates.values["kd"]


def test_a_tuning_file_without_the_experiment_is_refused(tmp_path):
    paper = load_profile(REPO / "config/profiles/paper.yaml")
    table = tmp_path / "tuning.csv"
    pd.DataFrame([{"experiment": "kd", "lr": 1e-5, "chosen": True}]).to_csv(table, index=False)
    with pytest.raises(ConfigError, match="no chosen learning rate for 'sft'"):
        learning_rate_for(paper, load_experiment(EXPERIMENTS / "sft/config.yaml"), table)


@pytest.mark.parametrize("profile,experiment,expected", [
    ("toy", "dcod_beta5", "learning_rates.values.dcod (inherited through base: dcod)"),
    ("paper", "sft", "tuned in the DAG"),
    ("smol", "sft", "train.lr (one untuned value"),
])
def test_config_show_prints_the_learning_rate_and_its_origin(profile, experiment, expected):
    result = subprocess.run([sys.executable, "-m", "dcod", "config", "show", "--profile",
                             f"config/profiles/{profile}.yaml", "--experiment", experiment],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert expected in shown["learning_rate"]["origin"]
    assert shown["train"]["lr"] == shown["learning_rate"]["value"]


def test_the_dag_feeds_the_tuning_choice_to_training_under_source_tuning():
    """paper (source tuning): every Table 1 training job waits for the grid and reads its choice."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
               "results/paper/table1.csv", "--config", "profile=paper"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    train_lines = [line for line in result.stdout.splitlines() if " -m dcod train " in line and "--lr " not in line]
    assert train_lines
    for line in train_lines:  # each job reads the choice of the grid of the experiment that owns its rate
        owner = re.search(r"--lr-table work/paper/tuning/([A-Za-z0-9_\-]+)/choice.csv", line)
        assert owner, line
        experiment = re.search(r"--experiment \S*experiments/([A-Za-z0-9_\-]+)/config.yaml", line).group(1)
        assert owner.group(1) == experiment or experiment.startswith(owner.group(1)), line
    assert "rule tuning_choice:" in result.stdout
