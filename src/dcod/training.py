"""The training loop: one loop for every method, on ``accelerate`` so FSDP/DeepSpeed configs apply unchanged.

Each optimiser step: the method supplies the step's examples (offline traces, fresh student samples,
or a self-distillation round's kept samples); the global batch is split across data-parallel ranks
and accumulation micro-batches; the per-token losses are reduced as ``sum(w * loss * mask) / N`` with
N the supervised tokens of the *whole* optimiser batch, so every method has SFT's loss scale.

DCOD's weights must be normalised over the whole optimiser batch. With one micro-batch per rank the
scores come from the training forward itself (no extra cost). With accumulation
(``train.weighted_accumulation``): ``single_pass`` (default) backs each micro-batch with un-normalised
weights from its own scores and multiplies the accumulated gradient by the global normaliser before the
last (synchronising) backward, exact for the normaliser; DCOD's adaptive β and truncation threshold come
from the previous optimiser batch (docs/method.md, "Accumulation without a scoring pass", with the bound
logged every step). ``two_pass`` runs a no-grad scoring pass over the rank's micro-batches first (exact,
about one extra forward). Scores of all ranks are gathered for the weights and their diagnostics.

Logits: for vocabularies of at least ``train.logits_chunk_min_vocab`` the model returns its final hidden
states only and the losses read the LM head ``train.logits_chunk_tokens`` positions at a time
(``objectives.ChunkedLMHead``), so the [tokens, vocab] logits never exist whole. ``train.packing`` runs
the forward padding-free (one row, position ids restarting per sequence) and scatters the outputs back
to the padded layout every loss reads.

Resume: ``accelerate``'s ``save_state`` every ``checkpoint_every`` steps into a temporary directory
renamed into place; the data order is a pure function of (seed, step), so a resumed run replays
exactly the batches of an uninterrupted one. A checkpoint carries a fingerprint of what it was computed
from (resolved config, input files, package source) and is resumed only on an exact match; progress is
JSON, never a pickle (docs/architecture.md, "Checkpoints").

Training curves: every record of train_log.jsonl (loss, lr, grad_norm, tokens, elapsed and a weighted
method's diagnostics) also goes to accelerate's trackers (``train.trackers``; TensorBoard event files
under ``<run>/tensorboard/`` by default), at the same 1-based step. A resumed run logs again from the
step after its checkpoint; its TensorBoard writer marks a restart there (``purge_step``), so
TensorBoard hides the interrupted run's later events and shows each step once, with the resumed run's
value (the one train_log.jsonl keeps).
Each tracker run is named ``<profile>/<experiment>/seed<seed>/lr<lr>`` where the tracker takes a name
(W&B, MLflow) and records the resolved config, flattened, as its hyperparameters.

Saved model: ``train.save_dtype`` (float32, or bf16 for the paper profile) and a short model card,
``README.md``: base model, teacher, method, data, commit (docs/paper_setting.md, "What a training run records").

Non-finite guard: the step's global loss and the gradient norm (which ``clip_grad_norm_`` already
reduces over every gradient) are checked every step as two Python floats the step computes anyway, and
the weights before each checkpoint is written, so a checkpoint or model never holds a non-finite state.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from tqdm import tqdm

# PROGRESS and CheckpointWriteError are re-exported: callers and tests name them as dcod.training's
from dcod.checkpoint import PROGRESS, CheckpointWriteError, Checkpointing, NonFiniteLossError, named_write  # noqa: F401
from dcod.config import TrainConfig
from dcod.io import atomic_path, plain_json, source_fingerprint, write_text
from dcod.methods.base import Cost, Method, Scores, collate_for
from dcod.objectives import ChunkedLMHead

# Where each rank's ``param.grad`` holds its whole local gradient until the synchronising backward (plain
# and DDP-style data parallelism): one-pass weighting rescales it and the chunked head reads the weight.
# FSDP / DeepSpeed shard both: they keep the full logits and the two-pass weights.
_SHARDED = {"FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA"}


def cosine_schedule(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _pad_cat(tensors: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in tensors])


def _split(items: list, parts: int) -> list[list]:
    size = len(items) // parts
    return [items[i * size:(i + 1) * size] for i in range(parts)]


class Trainer(Checkpointing):
    check_finite = True  # the non-finite guard (bench/step_cost.py switches it off to measure its cost)

    def __init__(self, model, tokenizer, method: Method, cfg: TrainConfig, out_dir: Path, *,
                 cost: Cost, seed: int, progress: bool = True, stop_after: int | None = None,
                 fingerprint: dict | None = None, name: str | None = None):
        """``fingerprint``: ``{"config": ..., "inputs": ...}`` from the caller (resolved profile and
        experiment, input file digests); the trainer adds its own config, seed, method and the source
        fingerprint. ``name`` (default: the method's) names the run in errors."""
        self.cfg, self.method, self.tokenizer, self.cost = cfg, method, tokenizer, cost
        self.name = name or method.name
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.seed, self.progress = seed, progress
        self.stop_after = stop_after  # tests: simulate an interruption after this many steps
        self.tracker_dir = self.out_dir / "tensorboard"  # the local trackers' folder (accelerate's logging_dir)
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                                       log_with=list(cfg.trackers) or None,
                                       project_config=ProjectConfiguration(project_dir=str(self.out_dir),
                                                                           logging_dir=str(self.tracker_dir)))
        # accelerate drops a tracker whose package is missing with a debug message: say so instead
        missing = sorted(set(cfg.trackers) - {str(t) for t in self.accelerator.log_with})
        if missing:
            raise ValueError(f"train.trackers: {', '.join(missing)} not installed (pip install it, or leave it out)")
        world = self.accelerator.num_processes
        micro = cfg.micro_batch_size or cfg.batch_size // world
        if cfg.batch_size % (micro * world):
            raise ValueError(f"batch_size={cfg.batch_size} must be a multiple of micro_batch_size x processes "
                             f"= {micro} x {world}")
        self.accumulation = cfg.batch_size // (micro * world)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(cfg))
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.local_grads = str(self.accelerator.distributed_type).split(".")[-1] not in _SHARDED
        self.head = self._chunkable_head(model)
        self._hidden = None
        if self.head is not None:  # the decoder's output, captured on its way to the (skipped) LM head
            def capture(module, args, output):
                self._hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
            model.get_decoder().register_forward_hook(capture)
        self.checkpoint_dir = self.out_dir / "checkpoint"
        self.log_path = self.out_dir / "train_log.jsonl"
        self.start_step = 0
        self.elapsed_before = 0.0
        self.saved_step: int | None = None  # the checkpoint on disk, written or resumed by this run
        given = fingerprint or {}
        self.fingerprint = plain_json({
            "config": {"train": cfg.model_dump(mode="json"), "seed": seed, "method": method.name, **given.get("config", {})},
            "inputs": given.get("inputs", {}), "code": source_fingerprint()})

    # ------------------------------------------------------------------ one optimiser step
    def _local_examples(self, step: int) -> list[dict]:
        examples = self.method.examples(step, self.accelerator.unwrap_model(self.model))
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        return examples[rank::world]

    def _chunkable_head(self, model):
        """The LM head when losses should read it in chunks (``train.logits_chunk_tokens``), else None:
        a bias-free linear head over at least ``logits_chunk_min_vocab`` tokens, no logit soft-capping or
        scaling, a method whose losses accept ``ChunkedLMHead``, unsharded parameters."""
        cfg = self.cfg
        if not (cfg.logits_chunk_tokens and self.method.chunked_logits and self.local_grads):
            return None
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        config = getattr(model, "config", None)
        if (not isinstance(head, torch.nn.Linear) or head.bias is not None or not hasattr(model, "get_decoder")
                or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)):
            return None
        return head if head.weight.shape[0] >= cfg.logits_chunk_min_vocab else None

    def _forward(self, batch):
        """The outputs at the target positions: logits [B, T, V], or a ``ChunkedLMHead`` standing in for
        them. Right padding + causal attention: no real token ever attends to a pad, so the attention mask
        is redundant here, and without it SDPA takes its causal fast path (~1.5x faster measured on the
        toy student). Pads' own outputs are masked out of every loss."""
        input_ids = batch["input_ids"]
        if not self.cfg.packing and self.head is None:
            return self.model(input_ids=input_ids).logits[:, :-1]
        kwargs = {}
        if self.cfg.packing:
            lengths = batch["attention_mask"].sum(-1)
            keep = batch["attention_mask"].bool()
            kwargs["position_ids"] = (torch.cumsum(batch["attention_mask"], -1) - 1)[keep].unsqueeze(0)
            input_ids = input_ids[keep].unsqueeze(0)  # [1, sum of lengths]: padding-free
            # transformers finds the sequences' boundaries from the position ids only without an attention
            # mask and without a KV cache (masking_utils: find_packed_sequence_indices)
            kwargs["use_cache"] = False
        if self.head is not None:  # no logits: an empty slice of positions reaches the head
            kwargs["logits_to_keep"] = torch.zeros(0, dtype=torch.long, device=input_ids.device)
        out = self.model(input_ids=input_ids, **kwargs)
        values = self._hidden if self.head is not None else out.logits
        self._hidden = None
        if self.cfg.packing:  # back to the padded [B, L, ·] layout the losses read (pads: zeros, masked)
            padded = values.new_zeros((*batch["input_ids"].shape, values.shape[-1]))
            padded[keep] = values[0, : int(lengths.sum())]
            values = padded
        if self.head is None:
            return values[:, :-1]
        return ChunkedLMHead(values[:, :-1], self.head.weight, self.cfg.logits_chunk_tokens)

    def _global_tokens(self, batches) -> float:
        local = torch.tensor(float(sum(int(b["loss_mask"].sum()) for b in batches)), device=self.accelerator.device)
        return float(self.accelerator.reduce(local, reduction="sum"))

    def _gather_scores(self, scores: list[Scores], batches: list[dict]):
        """Every rank's scores [N, U] and masks [N, T] (micro-batches concatenated, ranks gathered), and
        the mean of each per-token statistic of the Scores over the supervised tokens."""
        local_scores = _pad_cat([s.values for s in scores])
        local_mask = _pad_cat([b["loss_mask"].float() for b in batches])  # gathered as float: padding
        # a bool tensor across ranks would change its dtype on the padded ranks only
        pad = self.accelerator.pad_across_processes
        all_scores = self.accelerator.gather(pad(local_scores, dim=1))
        all_mask = self.accelerator.gather(pad(local_mask, dim=1)).bool()
        all_stats = {name: self.accelerator.gather(pad(_pad_cat([s.token_stats[name] for s in scores]), dim=1))
                     for name in scores[0].token_stats}
        means = {f"mean_{name}": float(values[all_mask].mean()) if all_mask.any() else 0.0
                 for name, values in all_stats.items()}
        units = {}  # units neither tokens nor rows (DCOD's steps): gathered beside the scores, -1 as padding
        if scores[0].units is not None:
            local_units = _pad_cat([s.units for s in scores], value=-1)
            units["units"] = self.accelerator.gather(pad(local_units, dim=1, pad_index=-1))
        return all_scores, all_mask, means, units

    def _global_weights(self, scores: list[Scores], batches: list[dict]):
        """A weighted method's weights normalised over every micro-batch of every rank (gathered, then
        sliced back), and its diagnostics plus the mean of each per-token statistic of its Scores."""
        all_scores, all_mask, means, units = self._gather_scores(scores, batches)
        weights, diagnostics = self.method.weights(all_scores, all_mask, **units)
        diagnostics.update(means)
        local_scores = _pad_cat([s.values for s in scores])
        rows = local_scores.shape[0]
        rank = self.accelerator.process_index
        mine = weights[rank * rows:(rank + 1) * rows]
        out, offset = [], 0
        for batch in batches:
            b, t = batch["loss_mask"].shape
            out.append(mine[offset:offset + b, :t])
            offset += b
        return out, diagnostics

    def train_step(self, step: int) -> dict:
        examples = self._local_examples(step)
        if not examples:  # e.g. a self-distillation round in which no sample was verified correct
            self.scheduler.step()
            return {"step": step + 1, "loss": None, "lr": self.scheduler.get_last_lr()[0],
                    "grad_norm": 0.0, "tokens": 0, "skipped": True}
        micro_examples = _split(examples, self.accumulation)
        pad_id = self.tokenizer.pad_token_id
        batches = [collate_for(self.method, ex, pad_id, self.accelerator.device) for ex in micro_examples]
        n_tokens = self._global_tokens(batches)
        scale = self.accelerator.num_processes / n_tokens  # DDP averages gradients over ranks
        diagnostics: dict = {}
        weights = [None] * len(batches)
        cached_logits = None
        if (self.method.weighted and len(batches) > 1 and self.cfg.weighted_accumulation == "single_pass"
                and self.local_grads and self.method.stream_ready()):
            total, diagnostics = self._single_pass(batches, scale, n_tokens)
        elif self.method.weighted:
            if len(batches) == 1:
                cached_logits = self._forward(batches[0])
                scores = [self.method.unit_scores(cached_logits, batches[0])]
            else:
                with torch.no_grad():
                    scores = [self.method.unit_scores(self._forward(b), b) for b in batches]
            weights, diagnostics = self._global_weights(scores, batches)
            total = self._weighted_backward(batches, weights, scale, cached_logits)
        else:
            total = self._weighted_backward(batches, weights, scale, None)
        total = float(self.accelerator.reduce(torch.tensor(total, device=self.accelerator.device),
                                              reduction="sum"))  # the global loss
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        grad_norm = float(grad_norm)  # the sync the log record always made, after the step is queued
        # The guard: two floats the step computes anyway (the global loss; the norm clip_grad_norm_ reduced
        # over every gradient of every rank, so all ranks stop alike). A non-finite step has already
        # spoiled the in-memory weights; it raises before any checkpoint or model is written from them.
        if self.check_finite and not math.isfinite(total + grad_norm):
            raise NonFiniteLossError(f"{self.name}: non-finite loss {total} / gradient norm {grad_norm} at "
                                     f"step {step} (train_log step {step + 1}); nothing written from this "
                                     f"state; {self._last_good()}")
        self.cost.student_tokens_trained += int(n_tokens)
        return {"step": step + 1, "loss": total, "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": grad_norm, "tokens": int(n_tokens), **diagnostics}

    def _weighted_backward(self, batches, weights, scale, cached_logits) -> float:
        """Forward and backward every micro-batch with its (final) weights; this rank's loss."""
        total = 0.0
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            sync = self.accelerator.no_sync(self.model) if not last else contextlib.nullcontext()
            with sync:
                logits = cached_logits if cached_logits is not None else self._forward(batch)
                per_token = self.method.token_losses(logits, batch)
                mask = batch["loss_mask"].to(per_token.dtype)
                if weights[index] is not None:
                    mask = mask * weights[index].to(per_token.dtype)
                loss = (per_token * mask).sum() * scale
                self.accelerator.backward(loss)
                total += loss.item() / self.accelerator.num_processes
        return total

    def _scale_grads(self, factor: float) -> None:
        if factor != 1.0:
            for parameter in self.model.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(factor)

    def _single_pass(self, batches, scale, n_tokens) -> tuple[float, dict]:
        """A weighted step without a scoring pass (docs/method.md, "Accumulation without a scoring pass").

        Each micro-batch's weights come from its own scores (``stream_weights``). Log-weights λ are backed
        as exp(λ − a), a the largest λ of this rank so far; when a grows, the gradient accumulated so far
        (and the loss) is multiplied by exp(a_old − a_new) <= 1, so nothing overflows. Before the last
        micro-batch's backward (the one that synchronises ranks) the ranks agree on the shift A = max a
        and the mass M = Σ exp(λ − A) over every supervised token of the optimiser batch, and this rank's
        accumulated gradient is multiplied by exp(a − A) N / M: afterwards every token's weight is
        exp(λ − A) N / M, the weights normalised to token-mean 1 over the whole batch. Returns this
        rank's loss and the method's diagnostics on the gathered scores."""
        acc, device = self.accelerator, self.accelerator.device
        shift, mass, total, scores = -math.inf, 0.0, 0.0, []
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            sync = acc.no_sync(self.model) if not last else contextlib.nullcontext()
            with sync:
                out = self._forward(batch)
                score = self.method.unit_scores(out, batch)
                scores.append(score)
                mask_bool = batch["loss_mask"].bool()
                values, normalise = self.method.stream_weights(score.values, mask_bool)
                if normalise:
                    top = float(values[mask_bool].max()) if bool(mask_bool.any()) else -math.inf
                    if top > shift:
                        if shift > -math.inf:
                            factor = math.exp(shift - top)
                            self._scale_grads(factor)
                            mass, total = mass * factor, total * factor
                        shift = top
                    values = torch.exp(values - shift) if shift > -math.inf else torch.zeros_like(values)
                    values = torch.where(mask_bool, values, torch.zeros_like(values))
                    mass += float(values.sum())
                    if last:
                        stats = torch.tensor([shift], dtype=torch.float64, device=device)
                        top_all = float(acc.gather(stats).max()) if acc.num_processes > 1 else shift
                        mine = mass * math.exp(shift - top_all) if shift > -math.inf else 0.0
                        all_mass = float(acc.reduce(torch.tensor(mine, dtype=torch.float64, device=device),
                                                    reduction="sum"))
                        factor = (math.exp(shift - top_all) if shift > -math.inf else 0.0) * n_tokens / all_mass
                        self._scale_grads(factor)
                        total, values = total * factor, values * factor
                per_token = self.method.token_losses(out, batch)
                mask = batch["loss_mask"].to(per_token.dtype) * values.to(per_token.dtype)
                loss = (per_token * mask).sum() * scale
                acc.backward(loss)
                total += loss.item() / acc.num_processes
        all_scores, all_mask, means, units = self._gather_scores(scores, batches)
        return total, {**self.method.stream_diagnostics(all_scores, all_mask, **units), **means}

    # ------------------------------------------------------------------ training curves
    def _start_trackers(self) -> None:
        """Open the trackers after ``maybe_resume`` (the first step to log is known). Resumed: TensorBoard's
        writer records a restart at that step, and its readers (the UI, EventAccumulator) drop the
        interrupted run's events from that step on, so a replayed step is not shown twice."""
        if not self.cfg.trackers:
            return
        kwargs = {"tensorboard": {"purge_step": self.start_step + 1}} if self.start_step else {}
        # the run's name where a tracker takes one (W&B, MLflow; TensorBoard's run is its folder,
        # <run>/tensorboard/dcod), and the resolved config as the run's hyperparameters (TensorBoard: its
        # hparams tab and hparams.yml; W&B: the run config)
        for tracker, key in RUN_NAME_KEYS.items():
            kwargs.setdefault(tracker, {})[key] = self.run_name
        self.accelerator.init_trackers("dcod", config=flat_config(self.tracked_config()), init_kwargs=kwargs)

    @property
    def run_name(self) -> str:
        """``<profile>/<experiment>/seed<seed>/lr<lr>`` (the method's name without an experiment, as in the
        base student's pre-training; the lr tells the tuning grid's runs apart)."""
        config = self.fingerprint["config"]
        profile = (config.get("profile") or {}).get("name", "run")
        experiment = (config.get("experiment") or {}).get("name", config["method"])
        return f"{profile}/{experiment}/seed{self.seed}/lr{self.cfg.lr:g}"

    def tracked_config(self) -> dict:
        """What the trackers record of the run: its name, the commit, the resolved config (profile,
        experiment, training budget, seed, method) and the digests of its inputs."""
        from dcod.io import code_version

        return {"run_name": self.run_name, "code_version": code_version(), **self.fingerprint["config"],
                "inputs": self.fingerprint["inputs"]}

    def _log_curves(self, record: dict) -> None:
        """The record's numbers, at its 1-based step (as in train_log.jsonl); a skipped step's None loss and
        its flag are left out. Main process only (accelerate's ``log``)."""
        if not self.accelerator.trackers:
            return
        values = {key: value for key, value in record.items()
                  if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
        self.accelerator.log(values, step=record["step"])

    def _finish_trackers(self) -> None:
        """Close the trackers (flush and close the event file). Not ``end_training()``: it also destroys
        the process group, which ``save_model`` and ``discard_checkpoint`` still use after the loop."""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers = []

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        self.maybe_resume()
        self._start_trackers()
        try:
            return self._loop()
        finally:  # an interrupted or failed run keeps the curves it logged
            self._finish_trackers()

    def _loop(self) -> dict:
        self.model.train()
        started = time.time()
        bar = tqdm(range(self.start_step, self.cfg.steps), initial=self.start_step, total=self.cfg.steps,
                   desc=f"train {self.method.name}", disable=not (self.progress and self.accelerator.is_main_process))
        elapsed = self.elapsed_before
        for step in bar:
            record = self.train_step(step)
            record["elapsed"] = elapsed = self.elapsed_before + time.time() - started
            if self.accelerator.is_main_process:
                with named_write(self.log_path, "the training log"), open(self.log_path, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
            self._log_curves(record)
            if step % self.cfg.log_every == 0 and record["loss"] is not None:
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            done = step + 1
            if done % self.cfg.checkpoint_every == 0 or done == self.cfg.steps:
                self.save_checkpoint(done, record["elapsed"])
            if self.stop_after is not None and done >= self.stop_after:
                raise KeyboardInterrupt(f"stopped after step {done} (stop_after)")
        return {"wall_time_s": elapsed, **self.cost.as_dict()}  # the final checkpoint's elapsed

    def save_model(self, path: Path) -> None:
        """The trained model as an HF folder, written by the main process. ``get_state_dict`` is a
        collective: under FSDP or DeepSpeed ZeRO-3 every rank joins while the full (unsharded) state
        dict is gathered on the main process; single-process it is the plain state dict."""
        self.accelerator.wait_for_everyone()
        state_dict = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            with named_write(path, "the model"), atomic_path(path, directory=True) as tmp:
                model.save_pretrained(tmp, state_dict=_in_save_dtype(state_dict, self.cfg.save_dtype))
                _record_save_dtype(tmp, self.cfg.save_dtype)
                self.tokenizer.save_pretrained(tmp)
                write_text(tmp / "README.md", model_card(self.tracked_config(), self.cfg.save_dtype))
        self.accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- trackers and saved models
# the init_kwargs key that names a run, for the trackers whose accelerate class passes it on (accelerate
# 1.15, tracking.py: WandBTracker -> wandb.init(name=...), MLflowTracker(run_name=...)); the others are
# named by the project, "dcod", and carry the run name in their config
RUN_NAME_KEYS = {"wandb": "name", "mlflow": "run_name"}


def flat_config(config: dict, prefix: str = "") -> dict:
    """A nested config as ``{"section.key": value}`` with values TensorBoard's hparams accept (bool, str,
    int, float, None): lists and other values as their JSON text."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif value is None or isinstance(value, (bool, str, int, float)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def _in_save_dtype(state_dict: dict, save_dtype: str) -> dict:
    """The state dict in ``train.save_dtype``: float32 as trained, or its floating tensors cast to bf16."""
    if save_dtype == "float32":
        return state_dict
    dtype = getattr(torch, save_dtype)
    return {key: value.to(dtype) if value.is_floating_point() else value for key, value in state_dict.items()}


def _record_save_dtype(folder: Path, save_dtype: str) -> None:
    """config.json's ``dtype`` names the weights' dtype (``save_pretrained`` writes the live model's, float32),
    so that a loader with ``dtype="auto"`` (vLLM) loads the bf16 weights as bf16."""
    if save_dtype == "float32":
        return
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text())
    config["dtype"] = save_dtype
    write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def model_card(tracked: dict, save_dtype: str) -> str:
    """A short README.md for a saved student: what it was trained from, how, on what, by which commit."""
    profile = tracked.get("profile") or {}
    student, teacher, data = profile.get("student", {}), profile.get("teacher", {}), profile.get("data", {})
    experiment = tracked.get("experiment") or {}
    train = tracked.get("train", {})

    def model(section: dict, built: str) -> str:
        if not section.get("path"):
            return built
        revision = section.get("revision")
        return f"{section['path']}" + (f" (revision {revision})" if revision else " (revision not pinned)")

    if data.get("source") == "benchmarks":
        sources = data.get("train")
        sources = ", ".join(sources) if isinstance(sources, list) else sources
        prompts = f"{sources} (dcod/benchmarks/*.yaml)"
    else:
        prompts = "the synthetic toy world (docs/toy_world.md)"
    inputs = tracked.get("inputs", {})
    lines = [
        f"# {tracked['run_name']}",
        "",
        "A student trained by the dcod pipeline (docs/method.md, docs/architecture.md).",
        "",
        f"- base model: {model(student, 'a tiny Llama built from the profile (student section)')}",
        f"- teacher: {model(teacher, 'the programmatic toy teacher (docs/toy_world.md)')}",
        f"- method: {tracked.get('method')} (experiment {experiment.get('name', 'none')}; parameters "
        f"{json.dumps(experiment.get('params', {}), sort_keys=True)})",
        f"- data: teacher traces on the training prompts of {prompts}; traces sha256 "
        f"{inputs.get('traces', 'none')}",
        f"- training: {train.get('steps')} steps of {train.get('batch_size')} sequences, lr {train.get('lr')}, "
        f"seed {tracked.get('seed')}, mixed precision {train.get('mixed_precision')}; weights saved in {save_dtype}",
        f"- profile: {profile.get('name')}",
        f"- code: commit {tracked.get('code_version')}",
        "",
    ]
    return "\n".join(lines)
