"""The paper profile's training path, FSDP2, executed: two CPU processes (gloo) under
``accelerate launch --config_file config/accelerate/cpu_fsdp2_2proc.yaml`` take one step of each weighted
method (DCOD, iw-SFT) with 2 accumulation micro-batches per rank and activation checkpointing on, and must
reach the step one process takes on the whole batch at once (tests/fsdp_step.py).

accelerate 1.15 refuses FSDP on a CPU without a word (a CPU launch becomes MULTI_CPU and the FSDP plugin is
dropped: DDP instead); tests/fsdp_step.py lets its state keep the plugin, and the test checks that the
model really was sharded (FSDP2's ``FSDP<Model>`` class, distributed type FSDP). Tolerances as in
tests/training/test_training_distributed.py: gradients within N eps of each tensor's largest entry, weights within what one
AdamW step from those gradients allows.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import EPS32, assert_gradients_close, assert_same_adam_step
from test_training_distributed import BETA_RTOL, _free_port, _run

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "fsdp_step.py"
CONFIG = REPO / "config" / "accelerate" / "cpu_fsdp2_2proc.yaml"
METHODS = ("dcod", "iw_sft")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    _run([sys.executable, str(SCRIPT), "--out", str(root / "single"), "--micro", "0"], root / "single.log",
         timeout=300)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    _run([accelerate, "launch", "--config_file", str(CONFIG), "--main_process_port", str(_free_port()), str(SCRIPT),
          "--out", str(root / "fsdp"), "--micro", "2", "--gradient-checkpointing"], root / "fsdp.log", timeout=420)
    return root


def _records(root: Path, run: str, method: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / run / method).glob("record_rank*.json"))]


def test_the_shipped_fsdp_config_and_the_cpu_one_agree():
    """The CPU config tests what config/accelerate/fsdp.yaml runs: FSDP2, full shard, layer auto-wrap."""
    import yaml

    gpu, cpu = (yaml.safe_load((REPO / "config" / "accelerate" / f).read_text())
                for f in ("fsdp.yaml", "cpu_fsdp2_2proc.yaml"))
    assert gpu["distributed_type"] == cpu["distributed_type"] == "FSDP"
    for key in ("fsdp_version", "fsdp_auto_wrap_policy", "fsdp_reshard_after_forward", "fsdp_state_dict_type"):
        assert gpu["fsdp_config"][key] == cpu["fsdp_config"][key], key


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_fsdp2_weighted_step_with_accumulation_matches_one_process(runs, method):
    (one,) = _records(runs, "single", method)
    two = _records(runs, "fsdp", method)
    assert one["world"] == 1 and one["accumulation"] == 1
    # really FSDP2: the model was fully_shard-ed, not silently wrapped in DDP
    assert [(r["world"], r["accumulation"], r["distributed_type"]) for r in two] == [(2, 2, "FSDP")] * 2
    assert all(r["model_class"] == "FSDPLlamaForCausalLM" for r in two)
    assert two[0]["tokens"] == one["tokens"]
    n_eps = one["tokens"] * EPS32  # a float32 sum over the N supervised tokens
    for record in two:  # every rank logs the global loss
        assert record["loss"] == pytest.approx(one["loss"], rel=n_eps)
    if method == "dcod":  # the adaptive beta of the whole batch, gathered over ranks and micro-batches
        assert two[0]["beta"] == two[1]["beta"] == pytest.approx(one["beta"], rel=BETA_RTOL)
    else:  # iw-SFT normalize: true: mean weight 1 over the whole batch
        assert two[0]["mean_weight"] == pytest.approx(one["mean_weight"], rel=n_eps)
        assert two[0]["max_weight"] == pytest.approx(one["max_weight"], rel=n_eps)
    step_one = torch.load(runs / "single" / method / "optimizer_step.pt", weights_only=True)
    step_two = torch.load(runs / "fsdp" / method / "optimizer_step.pt", weights_only=True)
    assert step_one["lr"] == step_two["lr"]
    assert_gradients_close(step_two["grads"], step_one["grads"], rtol=n_eps)
    names = step_one["grads"].keys()
    state_one = torch.load(runs / "single" / method / "state_dict.pt", weights_only=True)
    state_two = torch.load(runs / "fsdp" / method / "state_dict.pt", weights_only=True)
    assert_same_adam_step({n: state_two[n] for n in names}, {n: state_one[n] for n in names},
                          step_two["grads"], step_one["grads"], lr=step_one["lr"], adam_eps=step_one["eps"])
