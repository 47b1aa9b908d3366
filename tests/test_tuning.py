"""The learning rates in the experiment configs are the ones the validation-split tuning chose."""

import pandas as pd
import pytest

from dcod.config import load_experiment, load_profile, train_config_for

from conftest import REPO


def test_configs_use_the_tuned_learning_rates():
    # the published grid decides (results/ holds only what a local run wrote, and is not committed)
    path = REPO / "paper" / "published" / "results" / "tuning.csv"
    tuning = pd.read_csv(path)
    profile = load_profile(REPO / "config/profiles/toy.yaml")
    chosen = tuning[tuning["chosen"]].set_index("experiment")["lr"]
    main = [path.parent.name for path in sorted((REPO / "experiments").glob("*/config.yaml"))
            if load_experiment(path).table == "main"]
    assert set(chosen.index) == set(main), "every Table 1 method is tuned on the same grid"
    for experiment, lr in chosen.items():
        configured = train_config_for(profile, load_experiment(REPO / "experiments" / experiment / "config.yaml")).lr
        assert configured == pytest.approx(lr), f"{experiment}: config lr {configured} but tuning chose {lr}"
    # the grid is the same for every method (equal tuning budget)
    grids = tuning.groupby("experiment")["lr"].apply(lambda s: tuple(sorted(s)))
    assert grids.nunique() == 1


def test_ablations_train_at_the_default_dcod_learning_rate():
    """Table 2 varies one DCOD knob at a time: every ablation uses the default dcod's (tuned) lr."""
    profile = load_profile(REPO / "config/profiles/toy.yaml")
    experiments = REPO / "experiments"
    dcod_lr = train_config_for(profile, load_experiment(experiments / "dcod" / "config.yaml")).lr
    ablations = [path for path in sorted(experiments.glob("*/config.yaml"))
                 if load_experiment(path).table == "ablation"]
    assert len(ablations) >= 13
    for path in ablations:
        assert train_config_for(profile, load_experiment(path)).lr == dcod_lr, path.parent.name
