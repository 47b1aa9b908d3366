"""The Slurm profile (config/slurm/config.yaml) allocates what each rule of the paper DAG uses: every job's
sbatch line is rendered with the executor plugin's own code (tests/slurm_submit_lines.py: the profile's
resources applied by Snakemake's command line, the line built by the plugin's ``get_submit_command`` +
``set_gres_string``) and pinned here. No Slurm needed."""

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake_executor_plugin_slurm", reason="the Slurm executor plugin (pip install -e .[cluster])")

import dcod.backends  # noqa: E402
from dcod.config import load_experiment, load_profile, train_config_for  # noqa: E402
from dcod.generation_vllm import VLLMBackend  # noqa: E402
from dcod.methods import needs_of  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HEAD = "sbatch --parsable --job-name RUN --output .snakemake/slurm_logs/rule_{rule}/%j.log --export=ALL " \
       "--comment rule_{rule} -A CHANGE_ME "
# the resources part of each submitted rule's line (after the account), as the plugin renders it
FSDP_GPUS = yaml.safe_load((REPO / "config" / "accelerate" / "fsdp.yaml").read_text())["num_processes"]
PINNED = {
    "traces": "-p gpu -t 240 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
    "base_student": "-p cpu -t 60 --mem 64000 --nodes=1 --ntasks=1 --cpus-per-task=4",
    "student_traces": "-p gpu -t 240 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
    "trace_scores": "-p gpu -t 120 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
    "train/fsdp": "-p gpu -t 720 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=8",
    "train/one_process": "-p gpu -t 720 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
    "tune_train/fsdp": "-p gpu -t 720 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=8",
    "tune_train/one_process": "-p gpu -t 720 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
    "evaluate": "-p gpu -t 180 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
    "evaluate_reference": "-p gpu -t 360 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
    "tune_evaluate": "-p gpu -t 120 --mem-per-cpu 8000 --nodes=1 --cpus-per-gpu=8 --gpus=1",
}
REPORT_RULES = re.findall(r"^rule (\w+):", (REPO / "workflow" / "rules" / "report.smk").read_text(), re.M)
# light rules outside report.smk: the grid's choice reads CSVs (a stage, since training reads it)
LIGHT_STAGES = ["tuning", "tuning_choice"]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    result = subprocess.run([sys.executable, str(REPO / "tests" / "slurm_submit_lines.py"), "--directory", str(folder),
                             "--", "--config", "profile=paper"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _one_process(experiment: str) -> bool:
    """What the train rules decide (workflow/rules/common.smk, _train_launch), from the method's needs."""
    profile = load_profile(REPO / "config" / "profiles" / "paper.yaml")
    exp = load_experiment(REPO / "experiments" / experiment / "config.yaml")
    return needs_of(exp).student_rollouts and train_config_for(profile, exp).rollout_backend == "vllm"


def _kind(job) -> str:
    if job["rule"] in ("train", "tune_train"):
        return f"{job['rule']}/{'one_process' if _one_process(job['wildcards']['experiment']) else 'fsdp'}"
    return job["rule"]


def test_every_submitted_job_has_its_pinned_line(jobs):
    submitted = [j for j in jobs if not j["local"]]
    seen = set()
    for job in submitted:
        kind = _kind(job)
        assert kind in PINNED, f"no pinned line for {kind}: {job['submit']}"
        assert job["submit"] == HEAD.format(rule=job["rule"]) + PINNED[kind], (job["wildcards"], job["submit"])
        seen.add(kind)
    assert seen == set(PINNED), set(PINNED) - seen  # the paper DAG has every kind (one-process rollouts too)


def test_gpus_follow_what_the_job_uses(jobs):
    # traces: one vLLM engine without tensor parallelism (the backend's default, which load_teacher keeps)
    assert inspect.signature(VLLMBackend.__init__).parameters["tensor_parallel_size"].default == 1
    assert "tensor_parallel_size" not in inspect.getsource(dcod.backends)
    traces = [j for j in jobs if j["rule"] == "traces"]
    assert len(traces) == 1 and traces[0]["submit"].endswith(" --gpus=1")
    # offline training: the accelerate config's processes, all on one node, CPUs per GPU (not a fixed count)
    for job in jobs:
        if job["rule"] == "train":
            gpus = 1 if _one_process(job["wildcards"]["experiment"]) else FSDP_GPUS
            assert job["submit"].endswith(f" --gpus={gpus}"), job
        if "--gpus=" in job["submit"]:
            assert "--cpus-per-task" not in job["submit"] and "--cpus-per-gpu=8" in job["submit"], job
            assert "--nodes=1" in job["submit"], job
    assert FSDP_GPUS == 8


def test_light_rules_run_on_the_login_node(jobs):
    local = {j["rule"] for j in jobs if j["local"]}
    assert "world" in local  # it downloads the benchmarks: compute nodes may have no network
    assert set(REPORT_RULES + LIGHT_STAGES) <= {"world", *_localrules()}, set(REPORT_RULES) - set(_localrules())
    assert local <= {"world", *REPORT_RULES, *LIGHT_STAGES}
    gpu_rules = {j["rule"] for j in jobs if "--gpus=" in j["submit"]}
    assert not gpu_rules & local


def _localrules() -> list[str]:
    text = (REPO / "workflow" / "rules" / "cluster.smk").read_text()
    return re.findall(r"^\s+(\w+),?$", text.split("localrules:", 1)[1], re.M)


def test_plugin_is_pinned():
    from importlib.metadata import version

    pyproject = (REPO / "pyproject.toml").read_text()
    pin = re.search(r'"snakemake-executor-plugin-slurm==([\d.]+)"', pyproject)
    assert pin, "pyproject.toml: the cluster extra must pin snakemake-executor-plugin-slurm"
    assert f"snakemake-executor-plugin-slurm=={pin.group(1)}" in (REPO / "environment.yml").read_text()
    assert version("snakemake-executor-plugin-slurm") == pin.group(1)
