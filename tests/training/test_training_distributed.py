"""Data-parallel training under ``accelerate``: 2 CPU processes (gloo) must take the same DCOD step as 1.

``tests/distributed_step.py`` builds a tiny toy Llama (seed 0) and a global batch of 8 toy-teacher
traces, then takes one DCOD step (sequence granularity, adaptive beta, ESS target 0.5) through
``dcod.training.Trainer``. Run once as a plain process and once under ``accelerate launch`` with 2
processes, the step must agree: the trainer splits the batch across ranks, gathers the DCOD scores
of every rank and normalises the weights over the *global* batch (docs/method.md, Objective step 3), and DDP averages
the gradients. The two runs sum in another order (4 + 4 sequences, a gloo all-reduce), so floats are
compared with tolerances derived from the size of the step (conftest.py): the gradients the optimiser
steps with within N eps of each tensor's largest entry (N the supervised tokens, a float32 sum's
worst-case rounding), the weights within what one AdamW step from those two gradients allows, and the
logged scalars as explained beside each. A control run that normalises per rank must fail the same check
(measured: its gradients differ by up to 0.6 of their scale, its weights by 2 x lr = 6e-3, while the
global step's gradients agree within 3.6e-7 on three CPU kernel paths), so the comparison can tell the
two apart.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import EPS32, assert_gradients_close, assert_same_adam_step

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "distributed_step.py"
ACCELERATE_CONFIG = REPO / "config" / "accelerate" / "cpu_2proc.yaml"
# beta solves ESS(beta s) = 1/2, so beta x spread(s) ~ 1 and d(beta)/beta ~ d(spread)/spread: the toy scores
# are about -3.5 +- 0.02 and one float32 ulp of s (2.4e-7) is ~1e-5 of that spread; 1e-4 allows ~8 ulps.
# The weights exp(beta s), their max and the ESS move by as much. A per-rank beta is off by O(1).
BETA_RTOL = 1e-4

# the launches: ~15 s single process + ~35 s for the 2-process launch on 2 cores
slow = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes (gloo) even on a GPU machine
    env["OMP_NUM_THREADS"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def _run(command: list[str], log: Path, timeout: float) -> None:
    with open(log, "w") as handle:
        result = subprocess.run(command, cwd=REPO, env=_env(), stdout=handle, stderr=subprocess.STDOUT,
                                timeout=timeout)
    if result.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        # the root cause is often in the *other* rank's output, far above the tail
        causes = [line for line in lines if "what():" in line or "enforce fail" in line
                  or ("Error" in line and "rank" in line and "ChildFailedError" not in line)]
        pytest.fail(f"{' '.join(command)} exited with {result.returncode} (full log: {log}); first errors:\n"
                    + "\n".join(dict.fromkeys(causes[:8])) + "\nlog tail:\n" + "\n".join(lines[-25:]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _run([sys.executable, str(SCRIPT), "--out", str(root / "single")], root / "single.log", timeout=300)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    _run([accelerate, "launch", "--config_file", str(ACCELERATE_CONFIG), "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          "--main_process_port", str(_free_port()), str(SCRIPT), "--out", str(root / "two")],
         root / "two.log", timeout=420)
    return root


def _state(root: Path, run: str, variant: str) -> dict[str, torch.Tensor]:
    return torch.load(root / run / variant / "state_dict.pt", weights_only=True)


def _records(root: Path, run: str, variant: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / run / variant).glob("record_rank*.json"))]


def _optimizer_step(root: Path, run: str, variant: str) -> dict:
    return torch.load(root / run / variant / "optimizer_step.pt", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _assert_same_step(runs: Path, run: str, variant: str, reference: str = "single") -> None:
    """``run``'s step equals ``reference``'s up to float32 rounding (see the module docstring)."""
    one, other = _optimizer_step(runs, reference, "step"), _optimizer_step(runs, run, variant)
    assert one["steps"] == other["steps"] == 1 and one["lr"] == other["lr"] and one["eps"] == other["eps"]
    (record_one,) = _records(runs, reference, "step")
    # every gradient entry is a float32 sum over the N supervised tokens of the global batch: <= N eps
    assert_gradients_close(other["grads"], one["grads"], rtol=record_one["tokens"] * EPS32)
    names = one["grads"].keys()  # the parameters (lm_head.weight is tied to embed_tokens.weight)
    state_one, state_other = _state(runs, reference, "step"), _state(runs, run, variant)
    assert_same_adam_step({n: state_other[n] for n in names}, {n: state_one[n] for n in names},
                          other["grads"], one["grads"], lr=one["lr"], adam_eps=one["eps"])


@slow
def test_two_processes_split_the_global_batch(runs):
    single = json.loads((runs / "single" / "step" / "tokens_rank0.json").read_text())
    ranks = [json.loads((runs / "two" / "step" / f"tokens_rank{r}.json").read_text()) for r in (0, 1)]
    assert single["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    assert [len(r["sequences"]) for r in ranks] == [4, 4]
    assert sorted(map(tuple, ranks[0]["sequences"] + ranks[1]["sequences"])) == sorted(map(tuple, single["sequences"]))


@slow
@pytest.mark.parametrize("variant", ["step", "run"])
def test_dcod_step_matches_single_process(runs, variant):
    """``step``: Trainer.train_step; ``run``: Trainer.run (checkpoint written by both ranks) + save_model."""
    _assert_same_step(runs, "two", variant)
    one = _state(runs, "single", variant)
    initial = torch.load(runs / "single" / variant / "initial_state_dict.pt", weights_only=True)
    assert _max_diff(one, initial) > 1e-4  # the step moved the weights (each by about lr = 3e-3)
    # exact: one process runs the same ops on the same inputs and kernels either way
    torch.testing.assert_close(one, _state(runs, "single", "step"), atol=0, rtol=0)  # run() == train_step
    (record_one,) = [r for r in _records(runs, "single", variant)]
    record_two = _records(runs, "two", variant)[0]  # rank 0 writes the log
    assert record_two["tokens"] == record_one["tokens"]
    # mean_log_ratio: a float32 mean over the N supervised tokens (ratios mostly of one sign): <= N eps
    # (measured <= 1.4e-7); grad_norm: the norm of the gradients checked above, each within N eps
    sum_rtol = record_one["tokens"] * EPS32
    for key, rel in (("beta", BETA_RTOL), ("max_weight", BETA_RTOL), ("mean_log_ratio", sum_rtol),
                     ("grad_norm", sum_rtol)):
        assert record_two[key] == pytest.approx(record_one[key], rel=rel, abs=0), key
    # ESS moves with beta: d ESS / d log(beta) is O(1) at ESS 1/2, so by at most BETA_RTOL
    assert record_two["ess_fraction"] == pytest.approx(record_one["ess_fraction"], rel=0, abs=BETA_RTOL)
    # a count over 8 units: equal unless a weight sits within BETA_RTOL of the truncation C (max_weight shows)
    assert record_two["clip_fraction"] == record_one["clip_fraction"]
    if variant == "run":
        from dcod.training import PROGRESS

        assert (runs / "two" / "run" / "trainer" / "checkpoint" / PROGRESS).is_file()
        assert (runs / "two" / "run" / "model" / "config.json").is_file()


@slow
def test_every_rank_logs_the_same_global_beta(runs):
    records = _records(runs, "two", "step")
    assert len(records) == 2
    assert records[0]["beta"] == records[1]["beta"]  # exact: the same gathered scores, the same code
    # not a float tolerance: bisection pins ESS(beta) to the target within ~1e-10 (40 halvings of
    # [0, beta_max]); the slack is for the truncation at C, which can only raise the final ESS
    assert records[0]["ess_fraction"] == pytest.approx(0.5, abs=1e-3)


@slow
def test_every_rank_logs_the_global_loss(runs):
    """The logged loss is sum(w * nll) / N over the *global* batch: each rank computes its share, and the
    trainer must reduce the shares (otherwise rank 0's train_log.jsonl holds only its own share)."""
    (one,) = _records(runs, "single", "step")
    two = _records(runs, "two", "step")
    assert len(two) == 2
    # a float32 sum of N non-negative terms (w nll over the supervised tokens): <= N eps relative
    rel = one["tokens"] * EPS32
    assert sum(r["loss"] for r in two) == pytest.approx(one["loss"], rel=rel) or all(
        r["loss"] == pytest.approx(one["loss"], rel=rel) for r in two)  # the shares do add up
    for record in two:
        assert record["loss"] == pytest.approx(one["loss"], rel=rel), (
            f"rank logged {record['loss']}, the global loss is {one['loss']}: reduce the shares (sum) before logging")


@slow
def test_per_rank_normalisation_would_differ(runs):
    """Control: normalising DCOD weights per rank (each rank's 4 traces) gives another beta and other weights."""
    with pytest.raises(AssertionError):  # the check the global normalisation passes fails here
        _assert_same_step(runs, "two", "per_rank")
    one, per_rank = _optimizer_step(runs, "single", "step"), _optimizer_step(runs, "two", "per_rank")
    (global_record,) = _records(runs, "single", "step")
    # and not by a hair: the largest gradient difference, relative to its tensor's scale, is >= 100x the tolerance
    worst = max(float((per_rank["grads"][n] - g).abs().max() / g.abs().max()) for n, g in one["grads"].items())
    assert worst > 100 * global_record["tokens"] * EPS32, worst
    betas = [r["beta"] for r in _records(runs, "two", "per_rank")]
    assert all(abs(b / global_record["beta"] - 1) > 100 * BETA_RTOL for b in betas)


# ----------------------------------------------------------------------------- the shipped accelerate configs


def _launch_env(config: str) -> dict:
    """The environment ``accelerate launch --config_file <config>`` gives its processes (no launch)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(REPO / "config" / "accelerate" / config),
                                               "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("config,expected", [
    ("fsdp.yaml", {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "true",
                   "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "ACCELERATE_MIXED_PRECISION": "bf16"}),
    ("deepspeed_zero2.yaml", {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2",
                              "ACCELERATE_MIXED_PRECISION": "bf16"}),
    ("deepspeed_zero3.yaml", {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                              "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true"}),
    ("cpu_2proc.yaml", {"ACCELERATE_MIXED_PRECISION": "no"}),
])
def test_accelerate_configs_launch_as_documented(config, expected):
    env = _launch_env(config)
    for key, value in expected.items():
        assert env.get(key) == value, (config, key, env.get(key))
    if config == "cpu_2proc.yaml":
        assert env.get("ACCELERATE_USE_FSDP") != "true" and env.get("ACCELERATE_USE_DEEPSPEED") != "true"


def test_fsdp_config_wraps_llama_and_qwen2_decoder_layers(monkeypatch):
    """No fsdp_transformer_layer_cls_to_wrap in fsdp.yaml: the layer class comes from the model's
    _no_split_modules, so one file serves Llama (SmolLM2) and Qwen2 (Qwen2.5) students."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    for key, value in _launch_env("fsdp.yaml").items():
        if key.startswith("FSDP_"):
            monkeypatch.setenv(key, value)
    sizes = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                 intermediate_size=64)
    for model, layer in [(LlamaForCausalLM(LlamaConfig(**sizes)), "LlamaDecoderLayer"),
                         (Qwen2ForCausalLM(Qwen2Config(**sizes)), "Qwen2DecoderLayer")]:
        plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
        assert [type(m).__name__ for m in model.modules() if policy(m)] == [layer, layer]
        # listing both families' classes, as one might, fails on either model
        both = FullyShardedDataParallelPlugin(transformer_cls_names_to_wrap=["LlamaDecoderLayer", "Qwen2DecoderLayer"])
        with pytest.raises(ValueError, match="Could not find the transformer layer class"):
            fsdp2_prepare_auto_wrap_policy(both, model)


@slow
def test_the_train_command_runs_under_accelerate_launch(tmp_path):
    """`accelerate launch ... -m dcod train` (what the train rules run for a profile with an accelerate
    config) on the ci profile with 2 CPU processes: the run finishes, logs every step once and saves a
    model that loads."""
    from transformers import AutoModelForCausalLM

    from dcod.config import load_profile
    from dcod.pipeline import stage_base_student, stage_traces, stage_world

    profile_path = REPO / "config" / "profiles" / "ci.yaml"
    profile = load_profile(profile_path)
    stage_world(profile, tmp_path / "world")
    stage_base_student(profile, tmp_path / "world", tmp_path / "base")
    stage_traces(profile, tmp_path / "world", tmp_path / "traces" / "train.parquet")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    _run([accelerate, "launch", "--config_file", str(ACCELERATE_CONFIG), "--num_processes", "2",
          "--main_process_port", str(_free_port()), "-m", "dcod", "train", "--profile", str(profile_path),
          "--experiment", str(REPO / "experiments" / "dcod" / "config.yaml"), "--seed", "0",
          "--world", str(tmp_path / "world" / "world.json"), "--base", str(tmp_path / "base"),
          "--traces", str(tmp_path / "traces" / "train.parquet"), "--out", str(tmp_path / "run" / "run.json"),
          "--lr", "1e-3"],  # a point of the ci grid (its Table 1 reads the grid's choice)
         tmp_path / "launch.log", timeout=420)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, profile.train.steps + 1))  # rank 0 logs, once
    assert run["experiment"]["method"] == "dcod"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())
