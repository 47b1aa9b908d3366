"""The paper profile's GPU-hour table, counted from the DAG's own job list (docs/paper_setting.md, "What
each stage costs").

A Snakemake dry run of the profile (``snakemake -n -p --config profile=paper`` in an empty folder) lists
every job with its rule and wildcards; each job is sorted into a kind and multiplied by that kind's
GPU-hours, the assumptions below (one place; each figure is derived in docs/paper_setting.md). A method
whose kind has no figure is an error, so a new method never drops out of the count unnoticed.

    python bench/gpu_hours.py                    # print the table
    python bench/gpu_hours.py --write            # rewrite it in README.md and docs/paper_setting.md
    python bench/gpu_hours.py --profile smol     # another profile's job list, same per-job figures

The same dry run of the ``smol`` profile counts the models its DAG leaves in ``work/smol/`` (``--write`` puts
that disk estimate in docs/paper_setting.md too). tests/workflow/test_gpu_hours.py checks that the documents hold what
this prints; tests/workflow/test_smol_dag.py (slow) measures a real smol run against the disk estimate.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "docs" / "paper_setting.md"]
BEGIN, END = "<!-- gpu-hours:begin (bench/gpu_hours.py --write) -->", "<!-- gpu-hours:end -->"

# GPU-hours per job on H100-80GB, estimated (docs/paper_setting.md derives each from token counts and
# assumed throughputs; nothing was measured at this scale)
HOURS = {
    "teacher traces (vLLM, GSM8K train + MATH train)": 1.4,
    "teacher evaluation (7B, every benchmark)": 1.0,
    "student evaluation (1.5B, every benchmark)": 0.43,
    "tuning evaluation (validation split only)": 0.02,
    "training, offline method (FSDP, 8 GPUs)": 1.0,
    "training, onpolicy_kd (vLLM rollouts, 1 GPU)": 2.0,
    "training, self_distill (vLLM rollouts, 1 GPU)": 0.7,
    "student traces (vLLM 1.5B sampling + 7B teacher scoring, 1 GPU)": 0.5,
    "trace scores (1.5B forward over the teacher traces, 1 GPU)": 0.1,
    "no GPU (world, base student download, tables, figures, report)": 0.0,
}
PASS_KINDS = {"student_traces": "student traces (vLLM 1.5B sampling + 7B teacher scoring, 1 GPU)",
              "trace_scores": "trace scores (1.5B forward over the teacher traces, 1 GPU)"}
ROLLOUT_KINDS = {"onpolicy_kd": "training, onpolicy_kd (vLLM rollouts, 1 GPU)",
                 "self_distill": "training, self_distill (vLLM rollouts, 1 GPU)"}
CPU_RULES = {"world", "base_student", "table1", "table2", "table3", "tuning", "tuning_choice", "figure", "figure_table3", "report",
             "all", "calibration", "robustness", "compare", "claims", "claims_table1"}


def dry_run(profile: str) -> str:
    """The dry run's output (``-p``: every job with its rule and wildcards), in an empty folder."""
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                                 "--directory", folder, "--cores", "1", "--config", f"profile={profile}"],
                                cwd=REPO, capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise RuntimeError(f"snakemake dry run of profile {profile} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def jobs(output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job of a dry run's output; the count is checked against its job stats."""
    found: list[tuple[str, dict]] = []
    for line in output.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line):
            found.append((match[1], {}))
        elif found and (match := re.fullmatch(r"\s+wildcards: (.*)", line)):
            found[-1][1].update(pair.split("=", 1) for pair in match[1].split(", "))
    total = re.search(r"^total\s+(\d+)$", output, re.MULTILINE)
    if total is None or int(total[1]) != len(found):
        raise RuntimeError(f"parsed {len(found)} jobs, the dry run's stats say {total[1] if total else '?'}")
    return found


def method_of(experiment: str) -> tuple[str, bool]:
    """(method name, whether it trains offline: no student rollouts and no teacher in memory)."""
    sys.path.insert(0, str(REPO / "src"))
    from dcod.config import load_experiment
    from dcod.methods import resolve

    exp = load_experiment(REPO / "experiments" / experiment / "config.yaml")
    method_class, params = resolve(exp)
    needs = method_class.needs(params)
    return exp.method, not (needs.student_rollouts or needs.teacher_model)


def kind(rule: str, wildcards: dict) -> str:
    if rule == "traces":
        return "teacher traces (vLLM, GSM8K train + MATH train)"
    if rule == "evaluate_reference" and wildcards.get("reference", "").startswith("teacher"):
        return "teacher evaluation (7B, every benchmark)"
    if rule in ("evaluate", "evaluate_reference", "evaluate_base_seed"):
        return "student evaluation (1.5B, every benchmark)"
    if rule == "tune_evaluate":
        return "tuning evaluation (validation split only)"
    if rule in ("train", "tune_train"):
        method, offline = method_of(wildcards["experiment"])
        if offline:
            return "training, offline method (FSDP, 8 GPUs)"
        if method not in ROLLOUT_KINDS:
            raise ValueError(f"experiment {wildcards['experiment']}: method {method} has no GPU-hour figure in "
                             f"bench/gpu_hours.py (HOURS)")
        return ROLLOUT_KINDS[method]
    if rule in PASS_KINDS:  # the offline student passes (docs/architecture.md), once per seed
        return PASS_KINDS[rule]
    if rule in CPU_RULES:
        return "no GPU (world, base student download, tables, figures, report)"
    raise ValueError(f"rule {rule} has no GPU-hour figure in bench/gpu_hours.py (HOURS)")


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"


def table(job_list: list[tuple[str, dict]]) -> str:
    """The markdown table: per kind and purpose (Tables 1 and 2, or the learning-rate grid) the number of
    jobs, the GPU-hours each and in all."""
    counts = Counter((kind(rule, wildcards), rule.startswith("tune_")) for rule, wildcards in job_list)
    order = list(HOURS)
    rows = ["| jobs of the DAG (`snakemake -n`) | jobs | GPU-h each | GPU-h |", "|---|---|---|---|"]
    total = 0.0
    for (name, tuning), count in sorted(counts.items(), key=lambda item: (item[0][1], order.index(item[0][0]))):
        hours = HOURS[name] * count
        total += hours
        label = f"{name}{', learning-rate grid' if tuning else ''}"
        rows.append(f"| {label} | {count} | {_number(HOURS[name])} | {hours:.1f} |")
    rows.append(f"| **total** | {len(job_list)} | | **{total:.0f}** |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- disk (smol)
# What a finished smol job leaves on disk: each job that saves a model (the base student converted from the
# GGUF file, every training run) writes SmolLM2-135M's 134,515,008 parameters in float32 (4 bytes each) plus
# its tokenizer; a run's checkpoint (model + AdamW state) is deleted when the run ends (dcod/checkpoint.py),
# so it counts only while that job runs. Everything else (world, traces, evaluations, tables) is megabytes.
SMOL_MODEL_GB = 134_515_008 * 4 / 1e9
SMOL_CHECKPOINT_GB = 4 * SMOL_MODEL_GB  # weights + AdamW's two moments + the optimiser's copy, while training
MODEL_RULES = ("base_student", "train", "tune_train")
DISK_BEGIN, DISK_END = "<!-- smol-disk:begin (bench/gpu_hours.py --write) -->", "<!-- smol-disk:end -->"
DISK_DOCUMENT = REPO / "docs" / "paper_setting.md"


def smol_disk_gb(job_list: list[tuple[str, dict]]) -> float:
    """GB the smol DAG leaves in work/smol/: one saved model per model-writing job of its dry run."""
    return sum(rule in MODEL_RULES for rule, _ in job_list) * SMOL_MODEL_GB


def disk_text(job_list: list[tuple[str, dict]]) -> str:
    models = sum(rule in MODEL_RULES for rule, _ in job_list)
    return (f"Disk: the DAG's {models} model-writing jobs (the base student and every training run) each leave a "
            f"{SMOL_MODEL_GB:.2f} GB float32 model, **{smol_disk_gb(job_list):.1f} GB** in `work/smol/` when it "
            f"ends; a training run also holds its {SMOL_CHECKPOINT_GB:.1f} GB checkpoint (with AdamW state) "
            "until it finishes.")


def replace_block(text: str, block: str, where: str, begin: str = BEGIN, end: str = END) -> str:
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"{where}: needs exactly one {begin} ... {end} block")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md and docs/paper_setting.md")
    args = parser.parse_args(argv)
    block = table(jobs(dry_run(args.profile)))
    print(block)
    if args.write:
        for path in DOCUMENTS:
            path.write_text(replace_block(path.read_text(), block, str(path)))
        disk = disk_text(jobs(dry_run("smol")))
        print(disk)
        DISK_DOCUMENT.write_text(replace_block(DISK_DOCUMENT.read_text(), disk, str(DISK_DOCUMENT), DISK_BEGIN,
                                               DISK_END))


if __name__ == "__main__":
    main()
