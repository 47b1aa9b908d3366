"""Extending the pipeline touches only the files docs/architecture.md names ("Three walkthroughs"). In a
scratch copy of the repository (its tracked files), a throwaway baseline (one module under
src/dcod/methods/, one experiments/<name>/config.yaml with ``table: main``) and a throwaway figure (one
module under src/dcod/reporting/figures/ plus its entry in dcod.layout.FIGURES) are added; the `ci` DAG
then builds Table 1 and the generated report, and both show them. Nothing else is edited but the scratch
ci profile, to keep the run short: its experiment list (sft, dcod and the new method) and one seed; the
learning rates are still tuned on validation (learning_rates.source tuning)."""

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO

NAME = "throwaway_sft"
FIGURE = "throwaway_figure"

METHOD = f'''"""A throwaway baseline (tests/workflow/test_extending.py; docs/architecture.md): SFT under another name."""

from dcod.methods.base import Method, register


@register
class Throwaway(Method):
    name = "{NAME}"
'''

EXPERIMENT = f"""method: {NAME}
description: a throwaway baseline (SFT under another name)
table: main
"""

FIGURE_MODULE = f'''"""A throwaway figure (tests/workflow/test_extending.py): the id accuracy of every Table 1 row."""

import matplotlib.pyplot as plt

from dcod.reporting.figures import read_table1, save

NAME = "{FIGURE}"
CAPTION = "Throwaway figure: id accuracy per row of Table 1."


def render(args) -> None:
    data = read_table1(args, NAME)[["method", "id_mean"]]
    figure, axis = plt.subplots()
    axis.bar(data["method"], data["id_mean"])
    save(figure, data, args.out)
'''


def _scratch(root):
    """The repository's tracked files (as the working tree has them) copied under ``root``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return root


def _replace(path, old, new):
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: expected one {old!r}"
    path.write_text(text.replace(old, new))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_new_method_and_a_new_figure_reach_table1_and_the_report(tmp_path):
    root = _scratch(tmp_path / "repo")
    # the baseline: its module and its config
    (root / "src/dcod/methods" / f"{NAME}.py").write_text(METHOD)
    (root / "experiments" / NAME).mkdir()
    (root / "experiments" / NAME / "config.yaml").write_text(EXPERIMENT)
    # the figure: its module and one entry in the figure list
    (root / "src/dcod/reporting/figures" / f"{FIGURE}.py").write_text(FIGURE_MODULE)
    _replace(root / "src/dcod/layout.py", '"offline_accuracy_vs_cost")', f'"offline_accuracy_vs_cost", "{FIGURE}")')
    # shorter, not different: three experiments, one seed, a grid of one point (still tuned on validation)
    ci = root / "config/profiles/ci.yaml"
    _replace(ci, "ablations: [dcod_kd]", f"experiments: [sft, dcod, {NAME}]")
    _replace(ci, "seeds: [0, 1]\n", "seeds: [0]\n")
    _replace(ci, "  lrs: [1.0e-3, 2.0e-3]", "  lrs: [1.0e-3]")
    assert "learning_rates:\n  source: tuning\n" in ci.read_text()

    env = {**os.environ, "PYTHONPATH": str(root / "src")}  # the copy's package, the new modules included
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "results/ci/table1.csv",
                             "paper/ci/report.md", "--config", "profile=ci"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=3300)
    print(f"ci DAG with the throwaway method and figure: {time.monotonic() - start:.0f} s")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    table = pd.read_csv(root / "results/ci/table1.csv")
    row = table.set_index("method").loc[NAME]
    assert row["role"] == "method" and row["description"] == "a throwaway baseline (SFT under another name)"
    assert 0 <= row["id_mean"] <= 100
    tuning = pd.read_csv(root / "work/ci/tuning" / NAME / "choice.csv")  # its own grid's choice, what it trained at
    assert NAME in set(tuning.loc[tuning["chosen"], "experiment"])  # tuned on validation like every row
    assert (root / "figures/ci" / f"{FIGURE}.png").stat().st_size > 0
    assert NAME in set(pd.read_csv(root / "figures/ci" / f"{FIGURE}.csv")["method"])
    report = (root / "paper/ci/report.md").read_text()
    assert "Throwaway figure: id accuracy per row of Table 1." in report and f"{FIGURE}.png" in report
    assert f"| {NAME} " in report  # its Table 1 row in the report
