"""Checkpoints and resume (dcod/checkpoint.py, the training loop's faults; issue 11): a SIGKILLed training
job resumes to the same weights; a checkpoint computed from other inputs is never resumed; non-finite
values stop training before anything is written from them; a checkpoint folder cannot run code; a full
disk names the path."""

import errno
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from dcod import checkpoint, methods, objectives, pipeline, training
from dcod.methods import get_method
from dcod.config import load_profile
from dcod.data import load_traces
from dcod.pipeline import stage_base_student, stage_traces, stage_train, stage_world
from dcod.training import CheckpointWriteError, NonFiniteLossError

from conftest import REPO

PROFILE = REPO / "config/profiles/ci.yaml"
SFT = REPO / "experiments/sft/config.yaml"
SFT_LR = 1e-3  # a point of the ci profile's grid (its Table 1 reads the grid's choice; these runs pass one)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    profile = load_profile(PROFILE)
    stage_world(profile, root / "world")
    stage_base_student(profile, root / "world", root / "base")
    stage_traces(profile, root / "world", root / "traces.parquet")
    return root


# Long enough that a run cannot finish in the moment between its first checkpoint (step 5) and the
# SIGKILL: ~7 ms per ci-sized step, so ~2.7 s remain (40 steps left only ~0.25 s: the kill raced the end).
KILL_STEPS = 400


def _train_command(root: Path, out: Path, steps: int) -> list[str]:
    profile = root / "profile.yaml"
    if not profile.exists():
        text = PROFILE.read_text().replace("  steps: 4\n", f"  steps: {steps}\n", 1)
        text = text.replace("  checkpoint_every: 2\n", "  checkpoint_every: 5\n")
        profile.write_text(text)
    return [sys.executable, "-m", "dcod", "train", "--profile", str(profile),
            "--experiment", str(REPO / "experiments/dcod/config.yaml"), "--seed", "0",
            "--world", str(root / "world"), "--base", str(root / "base"),
            "--traces", str(root / "traces.parquet"), "--out", str(out / "run.json"), "--lr", str(SFT_LR)]


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_weights(prepared):
    steps = KILL_STEPS
    reference = prepared / "reference"
    subprocess.run(_train_command(prepared, reference, steps), check=True, capture_output=True, timeout=600)
    killed = prepared / "killed"
    process = subprocess.Popen(_train_command(prepared, killed, steps), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint" / "progress.json").exists():  # wait for a first checkpoint
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
                    prepared / "traces.parquet", run, lr=SFT_LR)
        stage_evaluate(profile, prepared / "world", str(run / "model"), run / "eval", seed=0)
        losses = [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]
        outputs.append((losses, load_file(run / "model" / "model.safetensors"),
                        (run / "eval" / "samples.jsonl").read_text(), (run / "eval" / "metrics.csv").read_text()))
    (losses_a, weights_a, samples_a, metrics_a), (losses_b, weights_b, samples_b, metrics_b) = outputs
    assert losses_a == losses_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert samples_a == samples_b and metrics_a == metrics_b


# ----------------------------------------------------------------------------- stale checkpoints (issue 11.1)
# ci profile: 4 steps, a checkpoint every 2; stop_after=3 leaves the step-2 checkpoint behind, as a job killed
# during step 3 would. Every comparison of weights is exact: same machine, same code path, CPU kernels.


def _train(root: Path, out: Path, *, profile=None, experiment: Path = SFT, base: Path | None = None,
           lr: float = SFT_LR, **kwargs):
    kwargs["lr"] = lr
    stage_train(profile or load_profile(PROFILE), experiment, 0, root / "world", base or root / "base",
                root / "traces.parquet", out, **kwargs)
    return load_file(out / "model" / "model.safetensors")


def _interrupted(root: Path, out: Path, **kwargs) -> None:
    with pytest.raises(KeyboardInterrupt):
        _train(root, out, stop_after=3, **kwargs)
    assert (out / "checkpoint" / "progress.json").is_file() and not (out / "run.json").exists()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def clean(prepared):
    """Weights of clean (never interrupted) sft runs, by learning rate, trained once per module."""
    cache = {}

    def weights(lr: float = SFT_LR) -> dict:
        if lr not in cache:
            cache[lr] = _train(prepared, prepared / f"clean-lr{lr}", lr=lr)
        return cache[lr]

    return weights


def test_a_finished_run_leaves_no_checkpoint_and_reruns_from_scratch(prepared, tmp_path, capsys, clean):
    """--forcerun train: the outputs are deleted and the job rerun; with no checkpoint left it trains."""
    out = tmp_path / "run"
    first = _train(prepared, out)
    assert not (out / "checkpoint").exists() and not list(out.glob(".checkpoint*"))
    (out / "run.json").unlink()
    capsys.readouterr()
    again = _train(prepared, out)
    assert "resumed" not in capsys.readouterr().out
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 4
    assert _same(first, again) and _same(again, clean())


def test_changed_lr_starts_fresh(prepared, tmp_path, capsys, clean):
    """Issue 11.1: an edited learning rate resumed the old checkpoint and trained nothing (today a rate
    changes when a profile's table or its tuning choice does)."""
    out = tmp_path / "run"
    _interrupted(prepared, out)  # SFT_LR
    capsys.readouterr()
    weights = _train(prepared, out, lr=0.002)
    assert f"checkpoint at {out / 'checkpoint'} was computed from other inputs (differs in: config); " \
           "starting fresh" in capsys.readouterr().out
    assert _same(weights, clean(0.002)) and not _same(weights, clean(SFT_LR))
    assert json.loads((out / "run.json").read_text())["train"]["lr"] == 0.002
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]
    assert not (out / "checkpoint").exists()


@pytest.mark.parametrize("complete", [".checkpoint.tmp", ".checkpoint.old"])
def test_a_kill_while_swapping_checkpoints_resumes_from_the_complete_one(prepared, tmp_path, capsys, clean,
                                                                          complete):
    """CI caught it: save_checkpoint removed the old checkpoint before renaming the new one in, so a SIGKILL
    between the two left no checkpoint and the rerun silently trained from step 0. Now the old one waits in
    .checkpoint.old; a kill leaves a complete folder (the one holding progress.json) that the rerun restores."""
    out = tmp_path / "run"
    _interrupted(prepared, out)
    (out / "checkpoint").rename(out / complete)  # the state a kill between the two renames leaves
    partial = ({".checkpoint.tmp", ".checkpoint.old"} - {complete}).pop()
    (out / partial).mkdir()  # a half-written new folder, or a half-removed old one: never resumed
    (out / partial / "model.safetensors").write_bytes(b"half")
    capsys.readouterr()
    weights = _train(prepared, out)
    printed = capsys.readouterr().out
    assert f"checkpoint at {out / 'checkpoint'} restored from {complete}" in printed
    assert f"resumed from {out / 'checkpoint'} at step 2" in printed
    assert _same(weights, clean())
    assert not (out / "checkpoint").exists() and not list(out.glob(".checkpoint*"))


def test_a_failed_swap_keeps_the_last_good_checkpoint(prepared, tmp_path, monkeypatch):
    """An interruption after the old checkpoint was renamed aside puts it back before the error propagates."""
    out = tmp_path / "run"
    real_replace = checkpoint.os.replace

    def interrupted_swap(source, target):
        if Path(source).name == ".checkpoint.tmp" and (out / ".checkpoint.old").exists():
            raise KeyboardInterrupt  # the second checkpoint: the first one is aside, the new one not yet in
        real_replace(source, target)

    monkeypatch.setattr(checkpoint.os, "replace", interrupted_swap)
    profile = load_profile(PROFILE)
    profile.train.checkpoint_every = 1
    with pytest.raises(KeyboardInterrupt):
        _train(prepared, out, profile=profile)
    progress = json.loads((out / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 1 and not list(out.glob(".checkpoint*"))


def test_retrained_base_student_restarts_training(prepared, tmp_path, capsys, clean):
    """Issue 11.1: after an upstream change of pretrain.steps, SFT kept weights from the old base student."""
    base = tmp_path / "base_student"
    shutil.copytree(prepared / "base", base)
    out = tmp_path / "run"
    _interrupted(prepared, out, base=base)
    upstream = load_profile(PROFILE)
    upstream.pretrain.steps = 6
    stage_base_student(upstream, prepared / "world", base)  # retrained into the same folder
    capsys.readouterr()
    weights = _train(prepared, out, base=base)
    assert "(differs in: inputs); starting fresh" in capsys.readouterr().out
    assert _same(weights, _train(prepared, tmp_path / "clean", base=base))
    assert not _same(weights, clean())  # the run on the old base student


def test_changed_pretrain_lr_restarts_pretraining(prepared, tmp_path, monkeypatch, capsys):
    """Issue 11.1: an interrupted pre-training resumed under another pretrain.lr. (ci: 12 steps, a checkpoint
    every 3; the interruption after step 5 leaves the step-3 checkpoint.)"""

    class Interrupted(training.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.stop_after = 5

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "Trainer", Interrupted)
        with pytest.raises(KeyboardInterrupt):
            stage_base_student(load_profile(PROFILE), prepared / "world", tmp_path / "base")
    assert (tmp_path / "base_run" / "checkpoint" / "progress.json").is_file()
    changed = load_profile(PROFILE)
    changed.pretrain.lr *= 2
    capsys.readouterr()
    stage_base_student(changed, prepared / "world", tmp_path / "base")
    assert "(differs in: config); starting fresh" in capsys.readouterr().out
    stage_base_student(changed, prepared / "world", tmp_path / "clean" / "base")
    weights = load_file(tmp_path / "base" / "model.safetensors")
    assert _same(weights, load_file(tmp_path / "clean" / "base" / "model.safetensors"))
    assert not _same(weights, load_file(prepared / "base" / "model.safetensors"))  # the old pretrain.lr
    assert not (tmp_path / "base_run" / "checkpoint").exists()


def test_edited_source_starts_fresh(prepared, tmp_path, monkeypatch, capsys, clean):
    """Issue 11.1/11.2: an uncommitted code edit. The "old code" (another source fingerprint) trained with
    another loss; resuming its checkpoint (what happened before) gives other weights than a clean run."""
    out = tmp_path / "run"
    old = "0" * 64
    with monkeypatch.context() as patch:
        patch.setattr(training, "source_fingerprint", lambda: old)
        patch.setattr(methods.get_method("sft"), "token_losses", lambda self, logits, batch: objectives.dft_loss(
            logits, batch["targets"]))
        _interrupted(prepared, out)
    shutil.copytree(out, tmp_path / "stale")
    with monkeypatch.context() as patch:  # the old behaviour: resume whatever checkpoint is there
        patch.setattr(training, "source_fingerprint", lambda: old)
        stale = _train(prepared, tmp_path / "stale")
    capsys.readouterr()
    weights = _train(prepared, out)
    assert "(differs in: code); starting fresh" in capsys.readouterr().out
    assert _same(weights, clean()) and not _same(weights, stale)


# ----------------------------------------------------------------------------- non-finite values (issue 11.3)
def _rewrite_row(source: Path, target: Path, column: str, row: int, token: int, value: float) -> None:
    """A copy of a traces parquet with one value replaced (``row`` counted from 1)."""
    frame = pd.read_parquet(source)
    cells = []
    for index, cell in enumerate(frame[column]):
        if index == row - 1:
            if column == "topk_logprobs":
                cell = [np.array(v, dtype=np.float64) for v in cell]
                cell[token][0] = value
            else:
                cell = np.array(cell, dtype=np.float64)
                cell[token] = value
        cells.append(cell)
    frame[column] = cells
    frame.to_parquet(target, index=False)


@pytest.mark.parametrize("column,value,message", [
    ("teacher_logprobs", math.nan, r"row 3: teacher_logprobs\[1\] is nan"),
    ("teacher_logprobs", -math.inf, r"row 3: teacher_logprobs\[1\] is -inf"),
    ("topk_logprobs", math.nan, r"row 3: topk_logprobs at completion token 1 is \[nan"),
    ("topk_logprobs", math.inf, r"row 3: topk_logprobs at completion token 1 is \[inf"),
])
def test_non_finite_teacher_logprobs_are_refused_at_load(prepared, tmp_path, column, value, message):
    path = tmp_path / "traces.parquet"
    _rewrite_row(prepared / "traces.parquet", path, column, 3, 1, value)
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        load_traces(path)


def test_nan_topk_is_refused_before_kd_trains(prepared, tmp_path):
    """Issue 11.3: kd trained on NaN top-k log-probs with loss 0.0 and exit 0."""
    traces = tmp_path / "traces.parquet"
    _rewrite_row(prepared / "traces.parquet", traces, "topk_logprobs", 5, 0, math.nan)
    with pytest.raises(ValueError, match="row 5: topk_logprobs"):
        stage_train(load_profile(PROFILE), REPO / "experiments/kd/config.yaml", 0, prepared / "world",
                    prepared / "base", traces, tmp_path / "run", lr=SFT_LR)
    assert not (tmp_path / "run" / "train_log.jsonl").exists() and not (tmp_path / "run" / "model").exists()


def test_minus_inf_topk_is_zero_mass_and_accepted(prepared, tmp_path):
    path = tmp_path / "traces.parquet"  # top-p sampling leaves fewer than k tokens with mass
    _rewrite_row(prepared / "traces.parquet", path, "topk_logprobs", 3, 1, -math.inf)
    assert load_traces(path)[2]["topk_logprobs"][1][0] == -math.inf


def _finite_checkpoint(folder: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(folder / "model.safetensors").values())


def test_exploding_lr_stops_before_writing_a_non_finite_state(prepared, tmp_path):
    """Issue 11.3: lr 1e30 checkpointed NaN weights and called them the last good checkpoint. Step 0 takes
    the weights to ~1e29 (finite, checkpointed); step 1's loss overflows."""
    profile = load_profile(PROFILE)
    profile.train.checkpoint_every = 1
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as error:
        _train(prepared, out, profile=profile, lr=1e30)
    assert f"sft (seed 0, lr 1e+30): non-finite loss" in str(error.value)
    assert f"at step 1 (train_log step 2)" in str(error.value)
    assert f"last good checkpoint: {out / 'checkpoint'} (step 1)" in str(error.value)
    assert _finite_checkpoint(out / "checkpoint")
    assert json.loads((out / "checkpoint" / "progress.json").read_text())["step"] == 1
    assert not (out / "model").exists() and not (out / "run.json").exists()
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1] and math.isfinite(records[0]["loss"])


def test_weights_overflowing_with_finite_gradients_are_never_checkpointed(prepared, tmp_path, monkeypatch):
    """A weight can turn infinite in an update whose loss and gradient norm were finite (simulated: the
    optimiser's step writes an inf; a real lr cannot, torch refuses a step size beyond float32): the check
    before each checkpoint catches what the per-step guard cannot see yet."""
    original = torch.optim.AdamW.step

    def overflowing(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = math.inf
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing)
    profile = load_profile(PROFILE)
    profile.train.checkpoint_every = 1
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite weights after step 0 .*last good checkpoint: none"):
        _train(prepared, out, profile=profile)
    assert not [p for p in ("checkpoint", "model", "run.json") if (out / p).exists()]


# ----------------------------------------------------------------------------- safe loading (issue 11.4)
class _Payload:
    """Unpickling this creates ``path``: what a crafted file would use to run a command."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_progress_pickle_is_never_loaded(prepared, tmp_path, capsys, clean):
    """Issue 11.4: torch.load(progress.pt, weights_only=False) ran whatever the folder held."""
    out, marker = tmp_path / "run", tmp_path / "code-ran"
    (out / "checkpoint").mkdir(parents=True)
    torch.save({"step": 4, "elapsed": 0.0, "cost": {}, "method": _Payload(marker)},
               out / "checkpoint" / "progress.pt")
    capsys.readouterr()
    weights = _train(prepared, out)
    assert not marker.exists()
    assert "has no progress.json (incomplete, or written by an older version); starting fresh" \
        in capsys.readouterr().out
    assert _same(weights, clean())


def test_a_crafted_accelerate_file_cannot_run_code_even_with_our_fingerprint(prepared, tmp_path):
    """Residual risk, bounded: progress.json copied from a real checkpoint makes the folder look like ours,
    so accelerate's load_state runs; it reads optimizer.bin with torch.load(weights_only=True), which
    refuses the payload's global. The load fails naming the folder instead of training on."""
    out, marker = tmp_path / "run", tmp_path / "code-ran"
    _interrupted(prepared, out)
    torch.save({"state": _Payload(marker)}, out / "checkpoint" / "optimizer.bin")
    with pytest.raises(RuntimeError, match=f"checkpoint at {out / 'checkpoint'} matches this run's fingerprint "
                                           "but could not be loaded.*Unpickl"):
        _train(prepared, out)
    assert not marker.exists()


def test_self_distill_state_survives_json():
    """Its round data (token-id lists under int round indices) goes through progress.json."""
    SelfDistill = get_method("self_distill")
    method, restored = SelfDistill.__new__(SelfDistill), SelfDistill.__new__(SelfDistill)  # state only
    method.round_data = {1: [{"prompt_ids": [np.int64(1), 2], "completion_ids": [3, 4]}]}
    method.accepted = {0: 0.25, 1: 0.5}
    restored.load_state(json.loads(json.dumps(method.state(), allow_nan=False)))
    assert restored.round_data == {1: [{"prompt_ids": [1, 2], "completion_ids": [3, 4]}]}
    assert restored.accepted == {0: 0.25, 1: 0.5} and all(type(k) is int for k in restored.round_data)


def test_self_distill_resumed_mid_round_gives_the_uninterrupted_weights(prepared, tmp_path):
    """ci: 4 steps in 2 rounds; a checkpoint every step and an interruption after step 1 resume inside
    round 0, from the round data stored in progress.json."""
    profile = load_profile(PROFILE)
    profile.train.checkpoint_every = 1
    experiment = REPO / "experiments/self_distill/config.yaml"
    clean_weights = _train(prepared, tmp_path / "clean", profile=profile, experiment=experiment)
    with pytest.raises(KeyboardInterrupt):
        _train(prepared, tmp_path / "cut", profile=profile, experiment=experiment, stop_after=1)
    assert "0" in json.loads((tmp_path / "cut/checkpoint/progress.json").read_text())["method"]["round_data"]
    assert _same(clean_weights, _train(prepared, tmp_path / "cut", profile=profile, experiment=experiment))
    clean_run, cut_run = (json.loads((tmp_path / name / "run.json").read_text()) for name in ("clean", "cut"))
    assert clean_run["self_distill_acceptance"] == cut_run["self_distill_acceptance"]


def test_no_weights_only_false_in_the_package():
    sources = sorted((REPO / "src" / "dcod").rglob("*.py"))
    assert sources and not [p for p in sources if "weights_only=False" in p.read_text()]


# ----------------------------------------------------------------------------- disk full (issue 11.6)
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_save_full(*args, **kwargs):  # what torch.save really raises when the disk fills up
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos; "
                       "basic_ios::clear: iostream error")


@pytest.mark.parametrize("where", ["save_state", "torch.save", "progress"])
def test_disk_full_during_a_checkpoint_names_the_path_and_leaves_no_tmp(prepared, tmp_path, monkeypatch,
                                                                       where):
    from accelerate import Accelerator

    if where == "save_state":  # accelerate dies after a partial write into the temporary folder
        def partial(self, output_dir, **kwargs):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")
            _disk_full()

        monkeypatch.setattr(Accelerator, "save_state", partial)
    elif where == "torch.save":  # optimizer.bin: after model.safetensors was written
        monkeypatch.setattr(torch, "save", _torch_save_full)
    else:
        monkeypatch.setattr(checkpoint, "write_text", _disk_full)  # the progress file (dcod/checkpoint.py)
    out = tmp_path / "run"
    with pytest.raises(CheckpointWriteError) as error:
        _train(prepared, out)
    assert f"writing the checkpoint {out / 'checkpoint'} failed" in str(error.value)
    if where != "torch.save":
        assert error.value.errno == errno.ENOSPC
    assert not list(out.glob(".checkpoint*")) and not (out / "checkpoint").exists()
    assert not (out / "run.json").exists() and not (out / "model").exists()


# ----------------------------------------------------------------------------- killed jobs (slow)
@pytest.mark.slow
def test_sigkill_then_rerun_with_another_lr_starts_fresh(prepared, tmp_path):
    steps = KILL_STEPS
    killed = prepared / "killed-lr"
    process = subprocess.Popen(_train_command(prepared, killed, steps), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint" / "progress.json").exists():
        assert time.time() < deadline and process.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "run.json").exists(), "a killed run must not look finished"
    rerun = subprocess.run(_train_command(prepared, killed, steps) + ["--lr", "0.002"], check=True,
                           capture_output=True, text=True, timeout=600)
    assert "differs in: config); starting fresh" in rerun.stdout
    clean_run = prepared / "clean-lr"
    subprocess.run(_train_command(prepared, clean_run, steps) + ["--lr", "0.002"], check=True,
                   capture_output=True, timeout=600)
    a = load_file(clean_run / "model" / "model.safetensors")
    b = load_file(killed / "model" / "model.safetensors")
    assert _same(a, b)
    assert len((killed / "train_log.jsonl").read_text().splitlines()) == steps
    assert not (killed / "checkpoint").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_snakemake_forcerun_retrains(tmp_path):
    """Issue 11.1: `--forcerun train` resumed the finished run's checkpoint and trained nothing."""
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
                 "--config", "profile=ci"]
    target = "work/ci/runs/sft/seed0/run.json"
    subprocess.run(snakemake + ["--", target], cwd=tmp_path, check=True, capture_output=True, timeout=1500)
    run = tmp_path / "work/ci/runs/sft/seed0"
    first = load_file(run / "model" / "model.safetensors")
    assert not (run / "checkpoint").exists()
    subprocess.run(snakemake + ["--forcerun", "train", "--", target], cwd=tmp_path, check=True,
                   capture_output=True, timeout=600)
    log = (tmp_path / "work/ci/logs/train/sft_seed0.log").read_text()
    assert "resumed" not in log and len((run / "train_log.jsonl").read_text().splitlines()) == 4
    assert _same(first, load_file(run / "model" / "model.safetensors"))  # same inputs: same weights
