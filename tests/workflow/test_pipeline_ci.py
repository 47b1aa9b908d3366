"""The whole DAG on the `ci` profile, end to end through Snakemake: schemas and sanity, not accuracies."""

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ci_dag")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
               "--config", "profile=ci"]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=2700)
    if result.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in (workdir / "work/ci/logs").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\n{logs[-8000:]}")
    return workdir


@pytest.mark.slow
@pytest.mark.timeout(3000)  # the module fixture runs the whole ci DAG (~5 min idle, far more under load)
def test_table1_schema_and_sanity(ci_run):
    from dcod.reporting.tables import read_table

    table = read_table(ci_run / "results/ci/table1.csv")
    methods = list(table["method"])
    assert methods[:2] == ["teacher", "base_student"]  # references first, then the experiments
    # every Table 1 experiment, derived from experiments/*/config.yaml (the profile lists only its ablations)
    from dcod.config import discover_experiments, load_experiment, load_profile

    names = discover_experiments(REPO / "experiments", load_profile(REPO / "config/profiles/ci.yaml"))
    main = [n for n in names if load_experiment(REPO / "experiments" / n / "config.yaml").table == "main"]
    assert sorted(methods[2:]) == sorted(main)
    assert {"dcod", "dft", "kd", "onpolicy_kd", "self_distill", "sft", "iw_sft", "skew_kd"} <= set(main)
    for split in ("validation", "id", "long", "retention"):
        values = table[f"{split}_mean"]
        assert values.between(0, 100).all(), split
    trained = table.set_index("method").loc[["sft", "kd", "dft", "onpolicy_kd", "self_distill", "dcod"]]
    assert (trained["n_seeds"] == 2).all()
    assert (trained["wall_time_s"] > 0).all()
    # self_distill may train on nothing: the ci student solves few problems, so rounds can keep no sample
    assert (trained.drop(index="self_distill")["student_tokens_trained"] > 0).all()
    assert trained.loc["onpolicy_kd", "tokens_sampled"] > 0 and trained.loc["onpolicy_kd", "teacher_forward_tokens"] > 0
    assert trained.loc["self_distill", "tokens_sampled"] > 0
    assert trained.loc["sft", "tokens_sampled"] == 0 and trained.loc["sft", "teacher_forward_tokens"] == 0
    assert {"delta_id_vs_sft", "delta_id_ci_low", "delta_id_ci_high"} <= set(table.columns)
    assert table.set_index("method").loc["teacher", "id_mean"] > 90  # the exact teacher is reliable


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_every_other_output_exists(ci_run):
    table2 = pd.read_csv(ci_run / "results/ci/table2.csv")
    assert {"dcod_kd", "sft", "dcod"} <= set(table2["method"])
    calibration = pd.read_csv(ci_run / "results/ci/calibration.csv")
    assert {"teacher", "teacher_direct", "teacher_decomposed", "base_student", "sft"} <= set(calibration["model"])
    for name in ("accuracy_per_split", "accuracy_vs_length", "dcod_diagnostics", "accuracy_vs_cost",
                 "trace_stability"):
        assert (ci_run / f"figures/ci/{name}.png").stat().st_size > 1000
    report = (ci_run / "paper/ci/report.md").read_text()
    assert "## Claims" in report or "Claims" in report
    # Table 3: every prior offline method (derived from the experiments) beside the runs it is read against,
    # its accuracy-versus-cost figure, and claim (a) naming the strongest prior offline method
    from dcod.config import discover_experiments, load_experiment, load_profile

    names = discover_experiments(REPO / "experiments", load_profile(REPO / "config/profiles/ci.yaml"))
    prior = {n for n in names if load_experiment(REPO / "experiments" / n / "config.yaml").table == "prior"}
    table3 = pd.read_csv(ci_run / "results/ci/table3.csv")
    assert prior and prior | {"dcod", "sft"} == set(table3["method"])
    assert (ci_run / "figures/ci/offline_accuracy_vs_cost.png").stat().st_size > 1000
    assert "## Table 3: prior offline methods" in report
    claim_a = pd.read_csv(ci_run / "results/ci/claims.csv").iloc[0]
    assert "strongest prior offline method" in str(claim_a["sentence"]) + str(claim_a.get("numbers", ""))
    log = [line for line in (ci_run / "work/ci/runs/dcod/seed0/train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and '"ess_fraction"' in log[0]


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_rerun_is_a_no_op(ci_run):
    """Finished outputs are never redone: a second invocation has nothing to do."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
               "--config", "profile=ci", "-n"]
    result = subprocess.run(command, cwd=ci_run, capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in result.stdout + result.stderr


def test_dry_run_and_lint_are_clean():
    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    dry = subprocess.run(snakemake + ["-n", "results/table1.csv"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    lint = subprocess.run(snakemake + ["--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert lint.returncode == 0 and "Lints for" not in lint.stdout + lint.stderr, (lint.stdout + lint.stderr)[-3000:]


def test_paper_profile_launches_training_through_accelerate(tmp_path):
    """The paper profile's accelerate config reaches the train jobs: offline methods start with
    `accelerate launch --config_file config/accelerate/fsdp.yaml` and ask for its 8 GPUs; on-policy KD and
    self-distillation (vLLM rollouts in the training process) start as one process on one GPU. The toy
    profile starts every job as one plain process."""
    import re

    snakemake = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "-p",
                 "--directory", str(tmp_path)]
    paper = subprocess.run(snakemake + ["--config", "profile=paper", "--", "results/paper/table1.csv"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert paper.returncode == 0, paper.stderr[-2000:]
    jobs = {}
    for block in paper.stdout.split("\nrule ")[1:]:
        if block.startswith("train:"):
            experiment = re.search(r"experiment=(\w+)", block).group(1)
            gpus = int(re.search(r"gpu=(\d+)", block).group(1))
            command = re.search(r"(?:python|accelerate launch[^\n]*?) -m dcod train", block).group(0)
            jobs.setdefault(experiment, set()).add((command, gpus))
    fsdp = f"accelerate launch --config_file {REPO / 'config' / 'accelerate' / 'fsdp.yaml'} -m dcod train"
    assert {e: j for e, j in jobs.items() if e in ("sft", "kd", "dft", "dcod")} == \
        {e: {(fsdp, 8)} for e in ("sft", "kd", "dft", "dcod")}
    assert jobs["onpolicy_kd"] == jobs["self_distill"] == {("python -m dcod train", 1)}
    toy = subprocess.run(snakemake + ["results/table1.csv"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert toy.returncode == 0, toy.stderr[-2000:]
    assert "accelerate launch" not in toy.stdout and toy.stdout.count("python -m dcod train") >= 18


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_report_trace_examples_are_the_rule_s(ci_run):
    """paper/ci/report.md shows, per claim split, exactly the problems select_examples picks from the
    subject's and the baseline's samples.jsonl of seed 0 (dcod/reporting/traces.py)."""
    import re

    from dcod.reporting.traces import read_sample_rows, select_examples

    report = (ci_run / "paper/ci/report.md").read_text()
    subject = read_sample_rows(ci_run / "work/ci/eval/dcod/seed0/samples.jsonl")
    baseline = read_sample_rows(ci_run / "work/ci/eval/sft/seed0/samples.jsonl")
    for split in ("id", "long"):
        part = report.split(f"### Traces on `{split}`")[1].split("\n### ")[0].split("\n## ")[0]
        chosen = [i for i, _ in select_examples(subject, baseline, split)]
        assert re.findall(r"^#### `([^`]+)`", part, flags=re.M) == chosen
        for problem in chosen:  # the subject's row says what its samples.jsonl says
            row = next(line for line in part.split(f"#### `{problem}`")[1].splitlines()
                       if line.startswith("| dcod (seed 0) |"))
            assert ("| correct |" in row) == bool(subject[(split, problem)]["correct"])
    assert "### Where the teacher was uncertain (training traces)" in report


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_inspect_and_snakemake_html_report(ci_run, capsys):
    """`dcod inspect` reads every model and seed of the finished run; `snakemake --report` writes one HTML
    file that names every figure and table the DAG made."""
    import json

    from dcod.cli import main

    main(["inspect", "--work", str(ci_run / "work/ci"), "--json", "id-00000"])
    (problem,) = json.loads(capsys.readouterr().out)
    models = {m["model"] for m in problem["models"]}
    assert {f"{e}/seed{s}" for e in ("sft", "kd", "dft", "onpolicy_kd", "self_distill", "dcod") for s in (0, 1)} <= models
    assert {"teacher", "teacher_direct", "teacher_decomposed", "base_student/seed0", "base_student/seed1"} <= models
    html = ci_run / "snakemake_report.html"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--config", "profile=ci",
               "--report", str(html)]
    result = subprocess.run(command, cwd=ci_run, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = html.read_text()
    names = [f"{n}.png" for n in ("accuracy_per_split", "accuracy_vs_length", "dcod_diagnostics", "accuracy_vs_cost",
                                  "trace_stability")]
    names += ["table1.csv", "table1_timing.csv", "table2.csv", "table2_timing.csv", "calibration.csv",
              "calibration.md", "tuning.csv", "report.md"]
    missing = [name for name in names if name not in text]
    assert not missing, f"{html} does not name {missing}"
    for category in ("Table 1", "Table 2", "calibration", "figures", "traces"):
        assert category in text
