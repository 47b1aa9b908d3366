"""The workflow profile (profiles/default/profile.yaml, read by Snakemake without a flag): a failed rule's
own error line reaches the console under the documented command, not only its log file."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO


def test_the_default_workflow_profile_shows_failed_logs():
    profile = yaml.safe_load((REPO / "profiles" / "default" / "profile.yaml").read_text())
    assert profile["show-failed-logs"] is True and profile["rerun-incomplete"] is True


def test_a_failing_rule_prints_its_cause_on_the_console(tmp_path):
    """smol's first rule with a local data folder that lacks the benchmark: the stage's one-line error
    (naming the missing file and the hub alternative) is on the console."""
    env = {**os.environ, "DCOD_DATA_DIR": str(tmp_path / "empty"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
               "work/smol/world/world.json", "--config", "profile=smol"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    console = result.stdout + result.stderr
    assert result.returncode != 0
    missing = tmp_path / "empty" / "gsm8k" / "train.jsonl"
    assert f"dcod world: error: benchmark 'gsm8k_train': local file {missing} does not exist" in console
    assert "unset both to read openai/gsm8k from the hub" in console
