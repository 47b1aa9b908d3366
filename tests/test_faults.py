"""Faults: a SIGKILLed training job resumes to the same weights; nothing half-written looks finished."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dcod.config import load_profile
from dcod.io import atomic_path, write_json
from dcod.pipeline import stage_base_student, stage_traces, stage_world

from conftest import REPO

PROFILE = REPO / "config/profiles/ci.yaml"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    profile = load_profile(PROFILE)
    stage_world(profile, root / "world")
    stage_base_student(profile, root / "world", root / "base")
    stage_traces(profile, root / "world", root / "traces.parquet")
    return root


def _train_command(root: Path, out: Path, steps: int) -> list[str]:
    profile = root / "profile.yaml"
    if not profile.exists():
        text = PROFILE.read_text().replace("  steps: 4\n", f"  steps: {steps}\n", 1)
        text = text.replace("  checkpoint_every: 2\n", "  checkpoint_every: 5\n")
        profile.write_text(text)
    return [sys.executable, "-m", "dcod", "train", "--profile", str(profile),
            "--experiment", str(REPO / "experiments/dcod/config.yaml"), "--seed", "0",
            "--world", str(root / "world"), "--base", str(root / "base"),
            "--traces", str(root / "traces.parquet"), "--out", str(out / "run.json")]


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_weights(prepared):
    steps = 40
    reference = prepared / "reference"
    subprocess.run(_train_command(prepared, reference, steps), check=True, capture_output=True, timeout=600)
    killed = prepared / "killed"
    process = subprocess.Popen(_train_command(prepared, killed, steps), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint" / "progress.pt").exists():  # wait for a first checkpoint
        assert time.time() < deadline and process.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "run.json").exists(), "a killed run must not look finished"
    subprocess.run(_train_command(prepared, killed, steps), check=True, capture_output=True, timeout=600)
    a = load_file(reference / "model" / "model.safetensors")
    b = load_file(killed / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (killed / "train_log.jsonl").read_text().splitlines()
    assert len(log) == steps  # rewound to the checkpoint: no step logged twice, none missing


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    """A results 'folder' that cannot hold files (here: it is a file; CI runs as root, so permission
    bits would not stop it) raises at once and leaves the existing file untouched."""
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises((NotADirectoryError, FileExistsError)):
        write_json(blocker / "table1.json", {"a": 1})
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_same_seed_same_machine_gives_identical_results(prepared, tmp_path):
    """Two clean runs of train + evaluate: identical losses, weights and per-sample outputs."""
    import json

    from dcod.pipeline import stage_evaluate, stage_train

    profile = load_profile(PROFILE)
    outputs = []
    for attempt in ("a", "b"):
        run = tmp_path / attempt
        stage_train(profile, REPO / "experiments/onpolicy_kd/config.yaml", 0, prepared / "world", prepared / "base",
                    prepared / "traces.parquet", run)
        stage_evaluate(profile, prepared / "world", str(run / "model"), run / "eval", seed=0)
        losses = [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]
        outputs.append((losses, load_file(run / "model" / "model.safetensors"),
                        (run / "eval" / "samples.jsonl").read_text(), (run / "eval" / "metrics.csv").read_text()))
    (losses_a, weights_a, samples_a, metrics_a), (losses_b, weights_b, samples_b, metrics_b) = outputs
    assert losses_a == losses_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert samples_a == samples_b and metrics_a == metrics_b
