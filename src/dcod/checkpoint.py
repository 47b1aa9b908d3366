"""Checkpoints of the training loop (``dcod.training.Trainer``), kept beside it as torchtitan keeps its
checkpointer apart from its trainer: write (atomically, only a finite state), resume (only on an exact
fingerprint match) and discard. See docs/reproducibility.md ("After a kill") for what a resume guarantees.

``Checkpointing`` is mixed into ``Trainer`` and uses its attributes: ``accelerator``, ``model``, ``method``,
``cost``, ``fingerprint``, ``checkpoint_dir``, ``log_path``, ``tracker_dir``, ``start_step``,
``elapsed_before``, ``saved_step``, ``check_finite`` and ``name``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch

from dcod.io import write_text

PROGRESS = "progress.json"  # step, cost, elapsed, method state, fingerprint: plain JSON, no pickle


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite loss, gradient norm or weight: training stops before anything is written from it."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint, the log or the model failed (disk full, ...); the message names the path."""


@contextlib.contextmanager
def named_write(path: Path, what: str):
    """Re-raise a failed write with the path in the message (torch.save's disk-full error is a bare
    ``basic_ios::clear: iostream error``); interruptions pass through unchanged."""
    try:
        yield
    except Exception as error:
        if isinstance(error, (NonFiniteLossError, CheckpointWriteError)):
            raise
        message = f"writing {what} {path} failed: {type(error).__name__}: {error}"
        raise CheckpointWriteError(getattr(error, "errno", None) or 0, message) from error


class Checkpointing:
    def save_checkpoint(self, step: int, elapsed: float) -> None:
        """Every rank writes into one temporary folder (``save_state`` is collective under FSDP and
        DeepSpeed, and each rank saves its own RNG state); rank 0 adds the progress file last and swaps the
        folder into place: the previous checkpoint is renamed aside, the new one renamed in, then the old
        one removed. A kill at any instant leaves a complete checkpoint in one of the three folders, which
        ``maybe_resume`` finds (``_recover``). Only a finite state is written; a failed write (disk full)
        names the path and leaves no temporary folder behind."""
        acc = self.accelerator
        if self.check_finite and not self._weights_finite():
            raise NonFiniteLossError(f"{self.name}: non-finite weights after step {step - 1} (train_log step "
                                     f"{step}); not checkpointed; {self._last_good()}")
        tmp, old = self._side_folders()
        try:
            with named_write(self.checkpoint_dir, "the checkpoint"):
                if acc.is_main_process:
                    shutil.rmtree(tmp, ignore_errors=True)
                acc.wait_for_everyone()
                acc.save_state(str(tmp))
                acc.wait_for_everyone()
                if acc.is_main_process:
                    if self.log_path.exists():
                        shutil.copy(self.log_path, tmp / "train_log.jsonl")
                    progress = {"step": step, "cost": self.cost.as_dict(), "elapsed": elapsed,
                                "method": self.method.state(), "fingerprint": self.fingerprint}
                    # strict JSON: a state that does not serialise is a bug to see, not to stringify;
                    # written last (atomically), so a folder holding it is complete
                    write_text(tmp / PROGRESS, json.dumps(progress, allow_nan=False) + "\n")
                    shutil.rmtree(old, ignore_errors=True)
                    if self.checkpoint_dir.exists():
                        os.replace(self.checkpoint_dir, old)
                    os.replace(tmp, self.checkpoint_dir)
                    shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                if not self.checkpoint_dir.exists() and old.exists():  # failed mid-swap: keep the last good one
                    os.replace(old, self.checkpoint_dir)
            raise
        self.saved_step = step
        acc.wait_for_everyone()

    def _weights_finite(self) -> bool:
        """Whether every weight is finite on every rank, checked before each checkpoint only: the per-step
        guard sees the loss and the gradient norm, not an update that overflows a weight although both
        were finite. FSDP2 parameters are DTensors: each rank checks its own shard (DeepSpeed ZeRO-3's
        partitioned parameters are not looked at: their local placeholders are empty)."""
        bad = torch.zeros((), device=self.accelerator.device)
        for parameter in self.model.parameters():
            local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
            bad += (~torch.isfinite(local.detach())).sum()
        return float(self.accelerator.reduce(bad, reduction="sum")) == 0

    def _side_folders(self) -> tuple[Path, Path]:
        """The folder a checkpoint is written into and the one the previous checkpoint waits in while the
        new one is renamed into place."""
        name = self.checkpoint_dir.name
        return self.checkpoint_dir.with_name(f".{name}.tmp"), self.checkpoint_dir.with_name(f".{name}.old")

    def _recover(self) -> None:
        """After a kill during ``save_checkpoint``'s swap the checkpoint folder may be missing while the new
        one (``.tmp``, complete once it holds the progress file) or the previous one (``.old``) is whole:
        rename the newest complete one into place; then drop both side folders (partial writes)."""
        tmp, old = self._side_folders()
        if not self.checkpoint_dir.exists():
            for candidate in (tmp, old):
                if (candidate / PROGRESS).is_file():
                    os.replace(candidate, self.checkpoint_dir)
                    self.accelerator.print(f"checkpoint at {self.checkpoint_dir} restored from {candidate.name} "
                                           "(the job was killed while swapping checkpoints)")
                    break
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

    def _last_good(self) -> str:
        if self.saved_step is None:
            return "last good checkpoint: none (no checkpoint written yet)"
        return f"last good checkpoint: {self.checkpoint_dir} (step {self.saved_step})"

    def _read_progress(self) -> tuple[dict | None, str]:
        """The checkpoint's progress and, when it must not be resumed, why (``None`` and the reason)."""
        path = self.checkpoint_dir / PROGRESS
        if not path.is_file():
            return None, f"has no {PROGRESS} (incomplete, or written by an older version)"
        try:
            progress = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            return None, f"has an unreadable {PROGRESS} ({error})"
        if not isinstance(progress, dict) or not {"step", "cost", "elapsed", "method"} <= set(progress):
            return None, f"has a {PROGRESS} without step/cost/elapsed/method"
        stored = progress.get("fingerprint")
        if stored != self.fingerprint:
            stored = stored if isinstance(stored, dict) else {}
            differs = [key for key in self.fingerprint if stored.get(key) != self.fingerprint[key]]
            return None, f"was computed from other inputs (differs in: {', '.join(differs)})"
        return progress, ""

    def maybe_resume(self) -> None:
        """Resume from the checkpoint only if its fingerprint equals this run's; anything else (another
        config, input or source; a folder without our progress file) is removed and training starts
        fresh. accelerate's ``load_state`` is therefore only ever called on a folder we wrote."""
        acc = self.accelerator
        if acc.is_main_process:  # a job killed while writing a checkpoint leaves side folders
            self._recover()
        acc.wait_for_everyone()
        progress, reason = None, ""
        if self.checkpoint_dir.exists():
            progress, reason = self._read_progress()  # every rank decides alike: same files and fingerprint
        if progress is None:
            if reason:
                acc.print(f"checkpoint at {self.checkpoint_dir} {reason}; starting fresh")
            acc.wait_for_everyone()
            if acc.is_main_process:
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
                self.log_path.unlink(missing_ok=True)
                shutil.rmtree(self.tracker_dir, ignore_errors=True)  # curves of another run, like the log
            acc.wait_for_everyone()
            return
        try:
            # accelerate loads its .bin/.pkl files with torch.load(weights_only=True) (FSDP's sharded
            # states: a pickled .metadata); we only get here for a folder carrying our fingerprint
            acc.load_state(str(self.checkpoint_dir))
        except Exception as error:  # the model may be half-loaded already: starting fresh would be wrong
            raise RuntimeError(f"checkpoint at {self.checkpoint_dir} matches this run's fingerprint but could "
                               f"not be loaded ({type(error).__name__}: {error}); delete the folder to start "
                               "fresh") from error
        self.start_step = progress["step"]
        self.elapsed_before = progress["elapsed"]
        self.saved_step = progress["step"]
        for key, value in progress["cost"].items():
            setattr(self.cost, key, value)
        self.method.load_state(progress["method"])
        # the log is rewound to the checkpoint so steps after it are not logged twice
        saved_log = self.checkpoint_dir / "train_log.jsonl"
        if acc.is_main_process:
            if saved_log.exists():
                shutil.copy(saved_log, self.log_path)
            else:
                self.log_path.unlink(missing_ok=True)
        acc.print(f"resumed from {self.checkpoint_dir} at step {self.start_step}")

    def discard_checkpoint(self) -> None:
        """Remove the checkpoint once the model and run.json are written: it only exists to rescue an
        interrupted job, and a finished run's checkpoint must never stand in for a later one."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            for folder in (self.checkpoint_dir, *self._side_folders()):
                shutil.rmtree(folder, ignore_errors=True)
        self.accelerator.wait_for_everyone()
