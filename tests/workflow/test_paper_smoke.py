"""The paper_smoke profile (config/profiles/paper_smoke.yaml): what it covers of the paper DAG (default tier),
and its CPU twin, the whole DAG through Snakemake (slow tier).

The twin is paper_smoke.yaml with only what a CPU needs changed (``CPU_OVERRIDES``): tiny random Qwen2 models
built from config with the locally built Qwen2-style tokenizers (tests/tiny_qwen.py: the student's eos is
<|endoftext|>, the teacher's <|im_end|>, as Qwen2.5-1.5B's and Qwen2.5-Math-7B-Instruct's), the hf backends
instead of vLLM, one process instead of accelerate's FSDP, float32, ``keep_only_correct: false`` (random
models solve nothing) and a short token cap. Same data source (the benchmark declarations, read from local
copies under ../shared/data), same prompt counts, methods, steps, accumulation, stages and reports. Both
models end their answers with <|im_end|>, so the twin's samples stop only through the stop-token handling.

Measured: the Snakemake run took 386 s (the whole test 394 s) with --cores 2 on the shared 2-core machine
while other test suites ran on it: 31 jobs, most of each job's time being the start of `python -m dcod`.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO, SHARED_DATA

PROFILE = REPO / "config" / "profiles" / "paper_smoke.yaml"
HAVE_DATA = all((SHARED_DATA / path).is_file() for path in ("gsm8k/train.jsonl", "gsm8k/test.jsonl", "amc23/test.jsonl"))
CAP = 24  # new tokens per sample on CPU
CPU_OVERRIDES = {
    "traces": {"backend": "hf", "max_new_tokens": CAP, "keep_only_correct": False},
    "train": {"accelerate_config": None, "rollout_backend": "hf", "rollout_gpu_memory_utilization": None,
              "mixed_precision": "no"},
    "eval": {"backend": "hf", "max_new_tokens": CAP},
    "threads": 1,
}


def test_paper_smoke_runs_every_method_and_stage_of_the_paper_dag():
    """Every method the paper profile trains (oracle_sft is toy-only), with the paper profile's backends and
    a one-GPU FSDP2 launch; at least one ablation, so that Table 2 is built."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    from dcod.config import discover_experiments, load_experiment, load_profile
    from dcod.splits import check_profile

    smoke = check_profile(load_profile(PROFILE))
    paper = load_profile(REPO / "config" / "profiles" / "paper.yaml")
    method_of = lambda names: {load_experiment(REPO / "experiments" / n / "config.yaml").method  # noqa: E731
                               for n in names}
    experiments = discover_experiments(REPO / "experiments", smoke)
    from dcod.methods import get_method

    # a method that reads the toy's step styles (oracle_knowledge: the reweighting ceiling) is toy-only, like
    # oracle_sft: the DAG drops it on the paper profile (workflow/rules/common.smk)
    toy_only = {m for m in method_of(discover_experiments(REPO / "experiments", paper))
                if get_method(m).needs(get_method(m).Params()).oracle_knowledge}
    # both lists are derived (every experiment outside Table 2), so both hold the toy-only ones the DAG drops
    assert method_of(experiments) - toy_only == method_of(discover_experiments(REPO / "experiments", paper)) - toy_only
    assert any(load_experiment(REPO / "experiments" / n / "config.yaml").table == "ablation" for n in experiments)
    assert (smoke.traces.backend, smoke.eval.backend, smoke.train.rollout_backend) == ("vllm",) * 3
    assert smoke.data.source == "benchmarks" and smoke.data.eval[0] == "gsm8k" and len(smoke.data.eval) == 2
    assert (smoke.student.path, smoke.teacher.path) == (paper.student.path, paper.teacher.path)
    assert smoke.train.mixed_precision == "bf16" and smoke.train.batch_size > smoke.train.micro_batch_size
    args = launch_command_parser().parse_args(["--config_file", str(REPO / smoke.train.accelerate_config), "x.py"])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp and args.num_processes == 1 and int(args.fsdp_version) == 2


def twin_profile(student, teacher) -> dict:
    """paper_smoke.yaml with the CPU overrides and the local models."""
    data = yaml.safe_load(PROFILE.read_text())
    for section, values in CPU_OVERRIDES.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    data["student"] = {"path": str(student)}
    data["teacher"] = {"kind": "hf", "path": str(teacher)}
    data["data"]["data_dir"] = str(SHARED_DATA)
    return data


def copy_workflow(root):
    """The workflow (Snakefile, rules, configs, experiments) in ``root``, whose config/profiles gets the twin:
    Snakemake reads profiles from beside the Snakefile. The dcod package is the one installed (this checkout)."""
    for name in ("Snakefile", "environment.yml"):
        shutil.copy(REPO / name, root / name)
    for name in ("workflow", "config", "experiments"):
        shutil.copytree(REPO / name, root / name)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not HAVE_DATA, reason=f"no GSM8K train/test and AMC 2023 copies under {SHARED_DATA}")
def test_paper_smoke_cpu_twin(tmp_path):
    from tiny_qwen import build_pair

    from dcod.config import load_experiment
    from dcod.io import read_jsonl
    from dcod.reporting.tables import read_table

    student, teacher = build_pair(tmp_path / "models")
    root = tmp_path / "repo"
    root.mkdir()
    copy_workflow(root)
    (root / "config" / "profiles" / "paper_smoke_cpu.yaml").write_text(yaml.safe_dump(twin_profile(student, teacher)))
    env = {**os.environ, "DCOD_DATA_DIR": str(SHARED_DATA), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"),
               "--cores", os.environ.get("DCOD_TEST_CORES", "2"), "--config", "profile=paper_smoke_cpu"]
    started = time.time()
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1700)
    print(f"paper_smoke CPU twin: {time.time() - started:.0f} s")
    work = root / "work" / "paper_smoke_cpu"
    if result.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (work / "logs").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\n{logs[-8000:]}")

    from dcod.config import discover_experiments, load_profile
    from dcod.methods import needs_of

    # the profile derives its experiments (every one outside Table 2, plus its `ablations`); the DAG drops the
    # toy-only ones (oracle_knowledge), as it does here
    configs = {n: load_experiment(root / "experiments" / n / "config.yaml")
               for n in discover_experiments(root / "experiments", load_profile(PROFILE))}
    experiments = [n for n, e in configs.items() if not needs_of(e).oracle_knowledge]
    main = [n for n in experiments if configs[n].table == "main"]
    table = read_table(root / "results" / "paper_smoke_cpu" / "table1.csv")
    assert list(table["method"][:2]) == ["teacher", "base_student"] and sorted(table["method"][2:]) == sorted(main)
    table2 = read_table(root / "results" / "paper_smoke_cpu" / "table2.csv")
    assert "dcod_prefix_l09" in set(table2["method"])
    assert (root / "paper" / "paper_smoke_cpu" / "report.md").is_file()

    # stop tokens: every saved student lists both end tokens; the base student's and the teacher's samples
    # stop on <|im_end|> (the student never emits its own eos <|endoftext|>), so their cap share is below 1
    for folder in [work / "base_student", *(work / "runs").glob("*/seed0/model")]:
        assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == [256, 258], folder
    assert len(list((work / "runs").glob("*/seed0/model"))) == len(experiments)
    assert table["cap_share"].between(0, 1).all(), table[["method", "cap_share"]]
    shares = table.set_index("method")["cap_share"]
    assert shares["teacher"] < 0.5 and shares["base_student"] < 0.5, shares
    samples = list(read_jsonl(work / "eval" / "base_student" / "samples.jsonl"))
    assert {s["finish_reason"] for s in samples} <= {"stop", "length"} and any(s["finish_reason"] == "stop" for s in samples)
    traces = pd.read_parquet(work / "traces" / "train.parquet")
    assert (traces["completion_ids"].map(lambda ids: ids[-1]) == 258).mean() > 0.5  # the teacher's turns end
    # the student is trained and evaluated under its own chat template, not the teacher's system prompt
    assert json.loads((work / "runs" / "sft" / "seed0" / "run.json").read_text())["trace_prompts_reencoded"] > 0
