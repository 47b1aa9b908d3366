"""Shipped base students (dcod.shipped; docs/reproducibility.md, "Shipped base students"): the export and its
manifest, the checked copy (`base-student --shipped`) and its refusals, and the DAG's two modes, on real tiny
base students of the ci profile pre-trained in a tmp folder (never under models/)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

from dcod.cli import main
from dcod.config import load_profile
from dcod.shipped import MANIFEST, base_student_dir, base_student_metrics, shipped_seeds

CI = REPO / "config" / "profiles" / "ci.yaml"
# synthetic evaluations of the two base students (the export reads them; a real evaluation adds nothing here)
ACCURACY = {1234: {"validation": 0.25, "id": 0.5, "long": 0.125, "retention": 1.0},
            1235: {"validation": 0.375, "id": 0.4375, "long": 0.0625, "retention": 0.9375}}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(work folder, shipped folder): the ci world, its base students of pre-training seeds 1234 and 1235
    (pretrain.per_seed, seeds [0, 1]) and their evaluations, exported by the CLI."""
    from dcod.pipeline import stage_base_student, stage_world

    root = tmp_path_factory.mktemp("shipped")
    work, out = root / "work" / "ci", root / "models" / "ci"
    profile = load_profile(CI)
    assert shipped_seeds(profile) == {1234: 0, 1235: 1}
    stage_world(profile, work / "world")
    for pretrain_seed, training_seed in shipped_seeds(profile).items():
        seeded = load_profile(CI, [f"pretrain.seed={pretrain_seed}"])
        stage_base_student(seeded, work / "world", base_student_dir(work, profile, pretrain_seed))
        metrics = base_student_metrics(work, training_seed)
        metrics.parent.mkdir(parents=True)
        pd.DataFrame({"split": list(ACCURACY[pretrain_seed]), "n": 16,
                      "accuracy": list(ACCURACY[pretrain_seed].values())}).to_csv(metrics, index=False)
    main(["ship-base-students", "--profile", str(CI), "--work", str(work), "--out", str(out)])
    return work, out


def _copy(exported, tmp_path, *sets, shipped_seed=1234, shipped=None):
    """`base-student --shipped` into tmp_path/base_student: (exit code or None, stderr-free message)."""
    work, out = exported
    profile_seed = [] if shipped_seed == 1234 else [f"pretrain.seed={shipped_seed}"]
    args = ["base-student", "--profile", str(CI), *(a for s in [*profile_seed, *sets] for a in ("--set", s)),
            "--world", str(work / "world" / "world.json"), "--shipped",
            str((shipped or out) / f"pretrain_seed{shipped_seed}"), "--out", str(tmp_path / "base_student")]
    main(args)


def _refusal(capsys, call) -> str:
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_the_manifest_records_every_file_hash_and_the_accuracies(exported):
    work, out = exported
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["students"]) == ["pretrain_seed1234", "pretrain_seed1235"]
    for name, student in manifest["students"].items():
        seed = student["pretrain_seed"]
        source = base_student_dir(work, load_profile(CI), seed)
        files = sorted(p.name for p in source.iterdir() if not p.name.startswith("."))
        assert "model.safetensors" in files and sorted(student["files"]) == files
        for file_name, digest in student["files"].items():  # sha256sum's digest of the original and the copy
            assert digest == _sha256(source / file_name) == _sha256(out / name / file_name)
        assert student["accuracy"] == {s: 100 * ACCURACY[seed][s] for s in ("validation", "id", "long")}
        assert student["pretrained_by"]["machine"]["threads"] >= 1
    assert manifest["sections"]["pretrain"]["steps"] == 12 and "seed" not in manifest["sections"]["pretrain"]
    assert manifest["sections"]["world"]["seed"] == 0
    assert manifest["world"]["pretrain.jsonl"] and manifest["world"]["tokenizer"]
    assert "ship-base-students" in manifest["exported_by"]["command"]
    assert manifest["exported_by"]["machine"]["cpu"] and manifest["exported_by"]["machine"]["torch"]


def test_the_export_refuses_a_base_student_without_its_evaluation(exported, tmp_path, capsys):
    work, _ = exported
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    missing = base_student_metrics(copy, 1)
    missing.unlink()
    err = _refusal(capsys, lambda: main(["ship-base-students", "--profile", str(CI), "--work", str(copy),
                                         "--out", str(tmp_path / "models")]))
    assert str(missing) in err
    assert not (tmp_path / "models").exists()


def test_a_shipped_copy_is_bit_identical(exported, tmp_path):
    work, _ = exported
    _copy(exported, tmp_path, shipped_seed=1235)
    source = work / "calibration" / "pretrain_seed1235" / "base_student"
    copied = sorted(p.name for p in (tmp_path / "base_student").iterdir())
    assert copied == sorted(p.name for p in source.iterdir() if not p.name.startswith("."))
    for name in copied:
        assert (tmp_path / "base_student" / name).read_bytes() == (source / name).read_bytes(), name


def test_a_flipped_byte_is_refused_naming_the_file(exported, tmp_path, capsys):
    shipped = tmp_path / "models"
    shutil.copytree(exported[1], shipped)
    weights = shipped / "pretrain_seed1234" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    err = _refusal(capsys, lambda: _copy(exported, tmp_path, shipped=shipped))
    assert f"{weights}: sha256" in err and str(shipped / MANIFEST) in err
    assert not (tmp_path / "base_student").exists()


@pytest.mark.parametrize("override, named", [("pretrain.lr=0.005", "pretrain.lr=0.002, the profile says 0.005"),
                                             ("world.seed=1", "world.seed=0, the profile says 1")])
def test_a_changed_profile_value_is_refused_naming_the_key(exported, tmp_path, capsys, override, named):
    err = _refusal(capsys, lambda: _copy(exported, tmp_path, override))
    assert named in err and "manifest.json was made with" in err and "make all" in err
    assert not (tmp_path / "base_student").exists()


def test_a_missing_seed_folder_or_another_seed_is_refused(exported, tmp_path, capsys):
    shipped = tmp_path / "models"
    shutil.copytree(exported[1], shipped)
    shutil.rmtree(shipped / "pretrain_seed1235")
    err = _refusal(capsys, lambda: _copy(exported, tmp_path, shipped_seed=1235, shipped=shipped))
    assert f"{shipped / 'pretrain_seed1235'}: no such folder" in err
    # the folder of another seed than the profile's pretrain.seed
    work, out = exported
    err = _refusal(capsys, lambda: main([
        "base-student", "--profile", str(CI), "--world", str(work / "world" / "world.json"),
        "--shipped", str(out / "pretrain_seed1235"), "--out", str(tmp_path / "base_student")]))
    assert "holds pre-training seed 1235, the profile says pretrain.seed=1234" in err


# ----------------------------------------------------------------------------- the DAG
SHIPPED_PROFILE = "ci_shipped"
# a calibration seed and the steps-factor student besides the shipped ones, and the float-path root
EXTRA = ("calibration:\n  pretrain_seeds: [1236]\n  steps_factor: 1.5\n"
         "float_path_check:\n  name: avx2\n  env: {ATEN_CPU_CAPABILITY: avx2, ONEDNN_MAX_CPU_ISA: AVX2}\n")


@pytest.fixture(scope="module")
def workflow(exported, tmp_path_factory):
    """A copy of the workflow whose profile ci_shipped (ci plus EXTRA) ships the exported base students."""
    root = tmp_path_factory.mktemp("dag_shipped")
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, root / name)
    for name in ("workflow", "config", "experiments"):
        shutil.copytree(REPO / name, root / name)
    shutil.copytree(exported[1], root / "models" / SHIPPED_PROFILE)
    text = CI.read_text()
    assert "pretrain:\n" in text and "calibration:" not in text and "float_path_check" not in text
    text = text.replace("pretrain:\n", f"pretrain:\n  shipped: models/{SHIPPED_PROFILE}\n", 1) + EXTRA
    (root / "config" / "profiles" / f"{SHIPPED_PROFILE}.yaml").write_text(text)
    return root


def _dry_run(root, *config):
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2", "--config",
                             f"profile={SHIPPED_PROFILE}", *config], cwd=root, capture_output=True, text=True,
                            timeout=300)
    return result


def _base_students(result):
    """--out folder -> the base-student command that makes it."""
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line.removeprefix("Shell command: ") for line in result.stdout.splitlines() if " -m dcod " in line]
    return {re.search(r"--out (\S+)", c).group(1): c for c in commands if " dcod base-student " in c}, commands


W = f"work/{SHIPPED_PROFILE}"
FLOAT = f"{W}/float_paths/avx2"
SHIPPED = {f"{W}/base_student": 1234, f"{W}/calibration/pretrain_seed1235/base_student": 1235,
           f"{FLOAT}/base_student": 1234, f"{FLOAT}/calibration/pretrain_seed1235/base_student": 1235}
PRETRAINED = {f"{W}/calibration/pretrain_seed1236/base_student", f"{W}/calibration/steps_x1.5/base_student"}


def test_shipped_mode_copies_the_shipped_seeds_and_pretrains_the_others(workflow):
    bases, commands = _base_students(_dry_run(workflow))
    assert set(bases) == set(SHIPPED) | PRETRAINED
    for out, seed in SHIPPED.items():
        assert f"--shipped {workflow}/models/{SHIPPED_PROFILE}/pretrain_seed{seed} " in bases[out], bases[out]
    for out in PRETRAINED:
        assert "--shipped" not in bases[out]
    # the float-path root starts from the same shipped weights, under its kernels
    assert bases[f"{FLOAT}/base_student"].startswith("env ATEN_CPU_CAPABILITY=avx2 ")
    assert not [c for c in commands if "report base_students" in c]


def test_rebuild_mode_pretrains_every_base_student_and_checks_them(workflow):
    bases, commands = _base_students(_dry_run(workflow, "base_students=rebuild"))
    assert set(bases) == set(SHIPPED) | PRETRAINED
    assert not [c for c in bases.values() if "--shipped" in c]
    check = [c for c in commands if " dcod report base_students " in c]
    assert len(check) == 1
    assert f"--manifest {workflow}/models/{SHIPPED_PROFILE}/manifest.json" in check[0]
    assert f"--out results/{SHIPPED_PROFILE}/base_students.csv" in check[0]


def test_the_copy_job_builds_the_shipped_bytes_from_the_dags_own_world(workflow):
    """The rule's command for real: the world the DAG writes is the one the export recorded (its digest)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    target = f"{W}/calibration/pretrain_seed1235/base_student"
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--config",
                             f"profile={SHIPPED_PROFILE}", "--", target],
                            cwd=workflow, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    stats = result.stdout + result.stderr  # the job stats: the copy ran, no pre-training
    assert re.search(r"^base_student_shipped\s+1$", stats, re.M) and not re.search(r"^base_student\s+\d", stats, re.M)
    shipped = workflow / "models" / SHIPPED_PROFILE / "pretrain_seed1235"
    assert sorted(p.name for p in (workflow / target).iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in shipped.iterdir())
    for path in shipped.iterdir():
        assert (workflow / target / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_stale_manifest_fails_the_dry_run_naming_the_key(workflow):
    profile = workflow / "config" / "profiles" / f"{SHIPPED_PROFILE}.yaml"
    text = profile.read_text()
    try:
        profile.write_text(text.replace("  steps: 12\n", "  steps: 13\n", 1))
        result = _dry_run(workflow)
        assert result.returncode != 0
        assert "manifest.json was made with pretrain.steps=12, the profile says 13" in result.stdout + result.stderr
        assert _dry_run(workflow, "base_students=rebuild").returncode == 0  # make all rebuilds it
    finally:
        profile.write_text(text)
