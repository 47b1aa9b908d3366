"""The DAG's variant roots (workflow/rules/common.smk): robustness worlds, calibration base students and
the float-path check get their own profile overrides and environment, and share what does not change."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dcod.config import load_profile

REPO = Path(__file__).resolve().parents[2]


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
    # the base student depends on the world seed only: one per world seed, shared across style mixes (under
    # pretrain.per_seed one per world seed and training seed)
    profile = load_profile(REPO / "config" / "profiles" / "toy.yaml")

    def base(owner, command):
        s = int(re.search(r"/seed(\d+)/run\.json", command).group(1))
        if profile.pretrain.per_seed and s != 0:
            return f"{owner}/calibration/pretrain_seed{profile.pretrain.seed + s}/base_student"
        return f"{owner}/base_student"

    bases = _commands(planned, r"dcod base-student .*--out work/toy/robustness/")
    owner = "work/toy/robustness/w1_p0.25"
    # ... and the knife-edge base students of that world seed (ProfileConfig.knife_edge_pretrain_seeds)
    knife = profile.knife_edge_pretrain_seeds(main_world=False)
    assert len(knife) >= 2, knife
    expected = ({f"{owner}/base_student"} | {base(owner, f"/seed{s}/run.json") for s in profile.robustness.seeds}
                | {f"{owner}/calibration/pretrain_seed{p}/base_student" for p in knife})
    assert sorted(re.search(r"--out (\S+)", b).group(1) for b in bases) == sorted(expected)
    for p in knife:  # each evaluated on the owner's world, as the calibration base students are
        knife_evals = _commands(planned, rf"dcod evaluate .*--out {owner}/calibration/pretrain_seed{p}/eval/")
        assert len(knife_evals) == 1 and "--set world.seed=1 " in knife_evals[0], knife_evals
        assert "--splits validation,id,long --no-stability" in knife_evals[0]
        assert f"--base {owner}/calibration/pretrain_seed{p}/base_student" in knife_evals[0]
    w1 = _commands(planned, r"dcod train .*--out work/toy/robustness/w1_p0\.75/")
    assert w1 and all(f"--base {base(owner, c)} " in c for c in w1)
    # world seed 0 is the main world's seed: its other style mixes reuse the main base student(s)
    main_p = profile.teacher.p_direct
    assert main_p in (0.25, 0.5, 0.75), main_p
    other_p = 0.75 if main_p != 0.75 else 0.5
    w0 = _commands(planned, rf"dcod train .*--out work/toy/robustness/w0_p{other_p:g}/")
    assert w0 and all(f"--base {base('work/toy', c)} " in c for c in w0)
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


@pytest.fixture(scope="module")
def planned_ci(tmp_path_factory):
    """A dry run of the ci profile's `all`: it sets pretrain.per_seed."""
    folder = tmp_path_factory.mktemp("dag_ci")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                             "--directory", str(folder), "--cores", "2", "--config", "profile=ci"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line.removeprefix("Shell command: ") for line in result.stdout.splitlines() if " -m dcod " in line]


def test_paired_seeds_start_from_their_own_base_student(planned_ci):
    assert load_profile(REPO / "config" / "profiles" / "ci.yaml").pretrain.per_seed
    seed = load_profile(REPO / "config" / "profiles" / "ci.yaml").pretrain.seed
    base_of = {}
    for command in _commands(planned_ci, r"dcod train .*--out work/ci/runs/"):
        run = re.search(r"--out work/ci/runs/(\S+)/seed(\d+)/", command)
        base_of[(run.group(1), int(run.group(2)))] = re.search(r"--base (\S+)", command).group(1)
    assert base_of and {s for _, s in base_of} == {0, 1}
    for (experiment, s), base in base_of.items():  # every method, Table 1 and Table 2 alike
        expected = "work/ci/base_student" if s == 0 else f"work/ci/calibration/pretrain_seed{seed + s}/base_student"
        assert base == expected, (experiment, s, base)
    bases = {re.search(r"--out (\S+)", c).group(1): c for c in _commands(planned_ci, r"dcod base-student ")}
    assert set(bases) == {"work/ci/base_student", f"work/ci/calibration/pretrain_seed{seed + 1}/base_student"}
    assert f"--set pretrain.seed={seed + 1} " in bases[f"work/ci/calibration/pretrain_seed{seed + 1}/base_student"]
    # Table 1's base-student row: each seed's own base student, evaluated like a run of that seed
    evals = {re.search(r"--out (\S+)", c).group(1): c
             for c in _commands(planned_ci, r"dcod evaluate .*--model base_student ")}
    for s in (0, 1):
        command = evals[f"work/ci/eval/base_student/seed{s}/metrics.csv"]
        assert f"--seed {s} " in command and f"--base {base_of[('sft', s)]} " in command
    # tuning trains from the profile's own base student, whatever the pairing
    tuning = _commands(planned_ci, r"dcod train .*--out work/ci/tuning/")
    assert tuning and all("--base work/ci/base_student " in c for c in tuning)


def test_toy_runs_start_from_the_base_student_its_profile_names(planned):
    # whichever way the toy profile sets pretrain.per_seed: the main runs and the float-path check's
    profile = load_profile(REPO / "config" / "profiles" / "toy.yaml")
    for root in ("work/toy", "work/toy/float_paths/avx2"):
        trains = _commands(planned, rf"dcod train .*--out {root}/runs/")
        assert trains
        for command in trains:
            s = int(re.search(rf"--out {root}/runs/\S+/seed(\d+)/", command).group(1))
            paired = profile.pretrain.per_seed and s != 0
            base = f"{root}/calibration/pretrain_seed{profile.pretrain.seed + s}" if paired else root
            assert f"--base {base}/base_student " in command, command
        assert bool(_commands(planned, rf"--out {root}/eval/base_student/seed")) == profile.pretrain.per_seed


def test_calibration_report_needs_every_knife_edge_base_student_of_the_main_world(tmp_path):
    """`results/calibration.csv` alone plans the pre-training and evaluation of each main-world knife-edge
    base student (toy: 1235-1238, Table 1's five seeds), and nothing of world seed 1."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                             "--directory", str(tmp_path), "--cores", "2", "results/calibration.csv"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    planned = [line.removeprefix("Shell command: ") for line in result.stdout.splitlines() if " -m dcod " in line]
    seeds = load_profile(REPO / "config" / "profiles" / "toy.yaml").knife_edge_pretrain_seeds(main_world=True)
    assert seeds == [1235, 1236, 1237, 1238]
    for p in seeds:
        assert len(_commands(planned, rf"dcod base-student .*--out work/toy/calibration/pretrain_seed{p}/base_student")) == 1
        assert len(_commands(planned, rf"dcod evaluate .*--out work/toy/calibration/pretrain_seed{p}/eval/")) == 1
    assert not _commands(planned, r"robustness/w1_")
