"""The GPU-hour table of README.md and docs/paper_setting.md is the one bench/gpu_hours.py counts from the
paper profile's DAG (a Snakemake dry run): every job of the DAG, each at its kind's stated figure."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_hours  # noqa: E402


@pytest.fixture(scope="module")
def paper_jobs():
    return gpu_hours.jobs(gpu_hours.dry_run("paper"))  # the parse is checked against the run's job stats


@pytest.mark.parametrize("document", gpu_hours.DOCUMENTS, ids=lambda path: path.name)
def test_the_documented_table_is_the_dags(paper_jobs, document):
    text = document.read_text()
    expected = gpu_hours.replace_block(text, gpu_hours.table(paper_jobs), str(document))
    assert text == expected, f"{document.name}: rerun `python bench/gpu_hours.py --write`"


def test_every_training_job_of_the_dag_is_counted_by_its_method(paper_jobs):
    trained = [w["experiment"] for rule, w in paper_jobs if rule in ("train", "tune_train")]
    assert {"onpolicy_kd", "self_distill", "dcod", "sft"} <= set(trained)
    kinds = [gpu_hours.kind("train", {"experiment": e}) for e in trained]
    assert kinds.count(gpu_hours.ROLLOUT_KINDS["onpolicy_kd"]) == trained.count("onpolicy_kd")
    assert kinds.count(gpu_hours.ROLLOUT_KINDS["self_distill"]) == trained.count("self_distill")


def test_a_job_without_a_figure_is_an_error(monkeypatch):
    monkeypatch.setattr(gpu_hours, "method_of", lambda experiment: ("new_rollout_method", False))
    with pytest.raises(ValueError, match="method new_rollout_method has no GPU-hour figure"):
        gpu_hours.kind("train", {"experiment": "x"})
    with pytest.raises(ValueError, match="rule new_rule has no GPU-hour figure"):
        gpu_hours.kind("new_rule", {})


def test_the_documented_smol_disk_estimate_is_the_dags():
    """docs/paper_setting.md's smol disk figure counts the model-writing jobs of the smol dry run (the base
    student and six runs: seven 0.54 GB models, 3.8 GB), not a hand-typed number."""
    job_list = gpu_hours.jobs(gpu_hours.dry_run("smol"))
    text = gpu_hours.DISK_DOCUMENT.read_text()
    expected = gpu_hours.replace_block(text, gpu_hours.disk_text(job_list), "paper_setting.md", gpu_hours.DISK_BEGIN,
                                       gpu_hours.DISK_END)
    assert text == expected, "docs/paper_setting.md: rerun `python bench/gpu_hours.py --write`"
    trained = [w["experiment"] for rule, w in job_list if rule == "train"]
    assert gpu_hours.smol_disk_gb(job_list) == pytest.approx((1 + len(trained)) * 0.538, rel=1e-3)
