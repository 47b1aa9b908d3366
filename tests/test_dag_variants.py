"""The DAG's variant roots (workflow/rules/common.smk): robustness worlds, calibration base students and
the float-path check get their own profile overrides and environment, and share what does not change."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dcod.config import load_profile

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The shell commands of a dry run of `all` in a fresh folder, one per line."""
    folder = tmp_path_factory.mktemp("dag")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                             "--directory", str(folder), "--cores", "2"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line.removeprefix("Shell command: ") for line in result.stdout.splitlines() if " -m dcod " in line]


def _commands(planned, pattern):
    return [c for c in planned if re.search(pattern, c)]


def test_robustness_worlds_get_their_world_seed_and_style_mix(planned):
    trains = _commands(planned, r"dcod train .*--out work/toy/robustness/w1_p0\.25/runs/sft/seed1/")
    assert len(trains) == 1
    assert "--set world.seed=1 --set teacher.p_direct=0.25" in trains[0]
    # the base student depends on the world seed only: one per world seed, shared across style mixes
    bases = _commands(planned, r"dcod base-student .*--out work/toy/robustness/")
    assert [re.search(r"--out (\S+)", b).group(1) for b in bases] == ["work/toy/robustness/w1_p0.25/base_student"]
    w1 = _commands(planned, r"dcod train .*--out work/toy/robustness/w1_p0\.75/")
    assert w1 and all("--base work/toy/robustness/w1_p0.25/base_student" in c for c in w1)
    # world seed 0 is the main world's seed: its other style mixes reuse the main base student
    main_p = load_profile(REPO / "config" / "profiles" / "toy.yaml").teacher.p_direct
    assert main_p in (0.25, 0.5, 0.75), main_p
    other_p = 0.75 if main_p != 0.75 else 0.5
    w0 = _commands(planned, rf"dcod train .*--out work/toy/robustness/w0_p{other_p:g}/")
    assert w0 and all("--base work/toy/base_student " in c for c in w0)
    # the main world is one of the robustness worlds: its runs are Table 1's, never trained twice
    assert not _commands(planned, rf"work/toy/robustness/w0_p{main_p:g}/")
    evals = _commands(planned, r"dcod evaluate .*work/toy/robustness/w1_p0\.25/runs/dcod/seed0/")
    assert len(evals) == 1 and "--splits validation,id,long --no-stability" in evals[0]


def test_oracle_trains_on_student_style_traces(planned):
    oracle = _commands(planned, r"dcod train .*oracle_sft/config.yaml .*--out work/toy/runs/oracle_sft/seed0/")
    assert len(oracle) == 1 and "--traces work/toy/traces_student_style/train.parquet" in oracle[0]
    styled = _commands(planned, r"dcod traces .*--out work/toy/traces_student_style/")
    assert len(styled) == 1 and "--set teacher.p_direct=0" in styled[0]
    sft = _commands(planned, r"dcod train .*experiments/sft/config.yaml .*--out work/toy/runs/sft/seed0/")
    assert len(sft) == 1 and "--traces work/toy/traces/train.parquet" in sft[0]


def test_float_path_check_reruns_every_stage_under_its_kernels(planned):
    float_cmds = _commands(planned, r"work/toy/float_paths/avx2/")
    stages = {re.search(r"-m dcod (\S+)", c).group(1) for c in float_cmds}
    assert {"world", "base-student", "traces", "train", "evaluate"} <= stages
    for command in float_cmds:
        if " dcod report " in command:
            continue
        assert command.startswith("env ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 "), command
    assert not _commands(planned, r"^env .*--out work/toy/runs/")  # the main run keeps the default kernels


def test_calibration_base_students_vary_one_setting(planned):
    bases = {re.search(r"--out (\S+)", c).group(1): c for c in _commands(planned, r"dcod base-student ")}
    assert "--set pretrain.seed=1235" in bases["work/toy/calibration/pretrain_seed1235/base_student"]
    assert "--set pretrain.seed=1236" in bases["work/toy/calibration/pretrain_seed1236/base_student"]
    assert "--set pretrain.steps=" in bases["work/toy/calibration/steps_x1.5/base_student"]
    assert "--world work/toy/world/world.json" in bases["work/toy/calibration/steps_x1.5/base_student"]
