"""One optimiser step of a weighted method (DCOD, iw-SFT) under FSDP2; launched by tests/training/test_training_fsdp.py.

    python tests/fsdp_step.py --out DIR --micro 0                        # the reference: one process, one micro-batch
    accelerate launch --config_file config/accelerate/cpu_fsdp2_2proc.yaml tests/fsdp_step.py --out DIR --micro 2

Under the launcher the step runs through accelerate's FSDP2 path (``fully_shard`` of every decoder layer,
DTensor parameters, sharded gradients): 2 ranks x 2 accumulation micro-batches of 2 sequences, the weights
normalised over the global batch of 8 by the trainer's two-pass path (the one FSDP takes, ``_SHARDED`` in
dcod.training). The reference takes the same step in one process on the whole batch at once.

accelerate 1.15 never selects FSDP on a CPU: ``PartialState._prepare_backend`` makes a CPU launch
``MULTI_CPU`` and ``AcceleratorState`` turns only the GPU-like types into ``FSDP`` (state.py), so
``use_cpu: true`` with ``distributed_type: FSDP`` silently trains with DDP. torch itself runs FSDP2 on
gloo. ``_allow_fsdp_on_cpu`` therefore sets the state's distributed type to FSDP when the launcher asked
for it (``ACCELERATE_USE_FSDP``): everything after that (prepare, fully_shard, no_sync, clip_grad_norm_
over DTensors, get_state_dict) is accelerate's and torch's own code. Each variant writes to
``--out/<variant>/``: ``record_rank<r>.json``, and on rank 0 ``optimizer_step.pt`` (the full gradients
the optimiser stepped with, lr, eps) and ``state_dict.pt`` (the full weights after the step).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from distributed_step import GLOBAL_BATCH, TINY, toy_traces
from dcod.config import TrainConfig
from dcod.methods import Cost, StepContext, build_method
from dcod.methods.dcod import DCODParams
from dcod.methods.iw_sft import IwSFTParams
from dcod.models import build_tiny_llama
from dcod.toy.tokenizer import build_tokenizer
from dcod.training import Trainer

PARAMS = {"dcod": DCODParams(granularity="sequence", beta=None, ess_target=0.5),
          "iw_sft": IwSFTParams(normalize=True)}


def _allow_fsdp_on_cpu() -> None:
    """Let accelerate keep the FSDP plugin on a CPU launch (see the module docstring)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor (FSDP2's sharded parameter or gradient) gathered whole; a plain tensor as is."""
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().cpu().clone()


def run_variant(method_name: str, traces, tokenizer, out: Path, micro: int, checkpointing: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(steps=1, batch_size=GLOBAL_BATCH, micro_batch_size=micro, lr=3e-3, warmup_steps=0,
                      checkpoint_every=1, trackers=[], gradient_checkpointing=checkpointing)
    model = build_tiny_llama(TINY, tokenizer, seed=0)
    ctx = StepContext(tokenizer=tokenizer, traces=traces, batch_size=cfg.batch_size, seed=0)
    ctx.reference_model = build_tiny_llama(TINY, tokenizer, seed=1).eval()  # iw-SFT: ratios far from 1
    cost = Cost()
    method = build_method(method_name, PARAMS[method_name], ctx, cost)
    trainer = Trainer(model, tokenizer, method, cfg, out / "trainer", cost=cost, seed=0, progress=False)
    accelerator = trainer.accelerator
    seen, step = {}, trainer.optimizer.step

    def recording_step(*args, **kwargs):  # the gradients after FSDP's reduce-scatter and clipping, gathered
        group = trainer.optimizer.param_groups[0]
        seen.update(grads={n: _full(p.grad) for n, p in accelerator.unwrap_model(trainer.model).named_parameters()},
                    lr=group["lr"], eps=group["eps"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    record = trainer.train_step(0)
    record.update(world=accelerator.num_processes, accumulation=trainer.accumulation,
                  distributed_type=str(accelerator.distributed_type).split(".")[-1],
                  model_class=type(trainer.model).__name__)
    (out / f"record_rank{accelerator.process_index}.json").write_text(json.dumps(record))
    state = accelerator.get_state_dict(trainer.model)  # a collective under FSDP: every rank joins
    if accelerator.is_main_process:
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, out / "state_dict.pt")
        torch.save(seen, out / "optimizer_step.pt")
    accelerator.wait_for_everyone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--micro", type=int, required=True, help="train.micro_batch_size (0: no accumulation)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--methods", default="dcod,iw_sft")
    args = parser.parse_args()
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        _allow_fsdp_on_cpu()
    torch.set_num_threads(1)
    tokenizer = build_tokenizer()
    traces = toy_traces(tokenizer)
    for name in args.methods.split(","):
        run_variant(name, traces, tokenizer, Path(args.out) / name, args.micro, args.gradient_checkpointing)


if __name__ == "__main__":
    main()
