"""How a train job runs: the accelerate config it is launched with, checked before anything loads.

The Snakemake train rules start offline methods with ``accelerate launch --config_file
<train.accelerate_config>`` (workflow/rules/common.smk) and the train stage starts under it; both call
``check_launch`` so that a combination known to give wrong numbers stops the dry run and the job.
"""

from __future__ import annotations

import os
from pathlib import Path

from dcod.io import load_yaml


def accelerate_settings(config_file: str | Path | None) -> dict:
    """(distributed type, processes) of a launch: from accelerate's environment inside a launched process,
    else from the config file (planning), else one plain process."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return {"distributed_type": "DEEPSPEED", "num_processes": int(os.environ.get("WORLD_SIZE", "1")),
                "source": "accelerate launch environment (ACCELERATE_USE_DEEPSPEED)"}
    if config_file is not None and Path(config_file).is_file():
        data = load_yaml(config_file) or {}
        return {"distributed_type": str(data.get("distributed_type", "NO")),
                "num_processes": int(data.get("num_processes", 1)), "source": str(config_file)}
    return {"distributed_type": "NO", "num_processes": int(os.environ.get("WORLD_SIZE", "1")), "source": None}


def check_launch(cfg, weighted: bool, config_file: str | Path | None, *, where: str) -> None:
    """Refuse DeepSpeed with gradient accumulation for a weighted loss (DCOD, iw-SFT).

    dcod's trainer accumulates micro-batches itself and rescales or re-weights the accumulated gradient
    with the normaliser of the whole optimiser batch (docs/method.md, "Accumulation without a scoring
    pass"; training.py). DeepSpeed owns the gradient buffers and steps its own accumulation boundary, so
    the per-micro-batch losses would be reduced with the wrong normaliser: a wrong result without an
    error. One micro-batch per GPU per step (batch_size = micro_batch_size x processes) is correct."""
    settings = accelerate_settings(config_file)
    if not weighted or settings["distributed_type"] != "DEEPSPEED":
        return
    processes = settings["num_processes"]
    micro = cfg.micro_batch_size or cfg.batch_size // processes
    accumulation = cfg.batch_size // max(1, micro * processes)
    if accumulation > 1:
        raise ValueError(
            f"{where}: a weighted loss under DeepSpeed ({settings['source']}) with gradient accumulation: "
            f"train.batch_size={cfg.batch_size} / (train.micro_batch_size={micro} x num_processes={processes}) "
            f"= {accumulation} micro-batches per step, which DeepSpeed would reduce with the wrong normaliser. "
            f"Set train.micro_batch_size={cfg.batch_size // processes} (one micro-batch per GPU), or use "
            f"train.accelerate_config: config/accelerate/fsdp.yaml (docs/paper_setting.md, "
            f"'DeepSpeed and gradient accumulation')")
