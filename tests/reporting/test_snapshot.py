"""The published snapshot and the comparison of a fresh run with it (dcod.reporting.snapshot), machine
provenance in the tables, and the literal reproduce command in a fresh folder."""

import json
import re
import subprocess
import sys
from argparse import Namespace

import pandas as pd
import pytest
from test_reporting import RULES, build_all, make_work

from conftest import REPO
from dcod.provenance import machine_info, machine_label
from dcod.reporting import cli
from dcod.reporting.snapshot import check_publishable, publish, table_machines


def compare(tmp_path, fresh, published):
    out = tmp_path / "comparison.md"
    cli.run(Namespace(what="compare", results_dir=str(fresh), published=str(published / "table1.csv"),
                               work=None, figures_dir="figures", out=str(out)))
    return out.read_text(), pd.read_csv(out.with_suffix(".csv"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A run as published, the same run again, and a run where DCOD loses (flipped verdicts)."""
    runs = {}
    flipped = {**RULES, ("dcod", 0): lambda i, n: False, ("dcod", 1): lambda i, n: i == 0}
    for name, rules in (("published", RULES), ("again", RULES), ("flipped", flipped)):
        root = tmp_path_factory.mktemp(name)
        build_all(root, make_work(root, rules), figures=name == "published")
        runs[name] = root
    return runs


def test_same_results_compare_identical(two_runs, tmp_path):
    text, differences = compare(tmp_path, two_runs["again"] / "results", two_runs["published"] / "results")
    assert "Every compared number is identical." in text
    assert "Claim verdicts: 4 of 4 agree between run A and run B" in text
    assert (differences["difference"].fillna(0) == 0).all() and len(differences) > 20


def without_paired_columns(results, tmp_path, name):
    """A copy of a results folder whose Table 1 lacks the seed-paired columns, as the published snapshot's
    does: its claims are judged on the bootstrap intervals (two seeds of paired differences decide nothing)."""
    out = tmp_path / name
    out.mkdir()
    for path in results.glob("*.csv"):
        table = pd.read_csv(path)
        if path.name == "table1.csv":
            table = table[[c for c in table.columns if "_paired" not in c and not c.startswith("base_ratio_")]]
        table.to_csv(out / path.name, index=False)
    return out


def test_flipped_verdicts_and_differences_are_reported(two_runs, tmp_path):
    text, differences = compare(tmp_path, without_paired_columns(two_runs["flipped"] / "results", tmp_path, "a"),
                                without_paired_columns(two_runs["published"] / "results", tmp_path, "b"))
    row = differences[(differences["method"] == "dcod") & (differences["column"] == "id_mean")].iloc[0]
    # published: dcod answers all 40 id problems; flipped: none (seed 0) and one (seed 1) -> 1.25%
    assert row["run_a"] == 100.0 and row["run_b"] == pytest.approx(1.25)
    assert row["difference"] == pytest.approx(-98.75)
    assert ("| (c) DCOD preserves instruction following (retention of the base student's second skill) | supported "
            "| not supported | **no** |") in text
    # two seeds: claim (a) decides nothing in either run (docs/claims.md, "Claim (a) over Tables 1 and 3")
    assert "| (a) DCOD reaches higher accuracy than every offline baseline | inconclusive | inconclusive | yes |" in text
    assert re.search(r"Claim verdicts: [0-3] of 4 agree", text)
    assert "Largest accuracy difference: -98.8 points (dcod, id)" in text


def test_publish_refuses_uncommitted_code(two_runs, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    table = pd.read_csv(two_runs["published"] / "results" / "table1.csv")
    table.loc[0, "code_version"] = "abc123+dirty"
    table.to_csv(results / "table1.csv", index=False)
    with pytest.raises(ValueError, match=r"refusing to publish .*abc123\+dirty"):
        check_publishable(results)
    table["code_version"] = ["abc123", "def456"] + ["abc123"] * (len(table) - 2)
    table.to_csv(results / "table1.csv", index=False)
    with pytest.raises(ValueError, match="mix code versions abc123, def456"):
        check_publishable(results)
    # a commit made of digits and one 'e' reads as a number unless the column is read as text
    table["code_version"] = "992e093"
    table.to_csv(results / "table1.csv", index=False)
    assert check_publishable(results) == "992e093"
    # the float-path rerun's Table 1 is published too: it must come from the same commit
    (results / "float_paths" / "avx2").mkdir(parents=True)
    table["code_version"] = "abc123"
    table.to_csv(results / "float_paths" / "avx2" / "table1.csv", index=False)
    with pytest.raises(ValueError, match="mix code versions 992e093, abc123"):
        check_publishable(results)


def test_provenance_machines_include_the_float_path_rerun(tmp_path):
    table = pd.DataFrame({"method": ["sft"], "code_version": ["abc123"], "machine": ["cpu AVX512 x1"]})
    table.to_csv(tmp_path / "table1.csv", index=False)
    (tmp_path / "float_paths" / "avx2").mkdir(parents=True)
    table.assign(machine="cpu AVX2 x1").to_csv(tmp_path / "float_paths" / "avx2" / "table1.csv", index=False)
    assert table_machines(tmp_path) == ["cpu AVX2 x1", "cpu AVX512 x1"]
    assert check_publishable(tmp_path) == "abc123"


def test_publish_copies_results_and_regenerates_the_report_with_its_own_links(two_runs, tmp_path):
    source = two_runs["published"]
    out = tmp_path / "paper" / "published"
    publish(str(REPO / "config" / "profiles" / "ci.yaml"), source / "results", source / "figures", out)
    assert (out / "results" / "table1.csv").read_bytes() == (source / "results" / "table1.csv").read_bytes()
    report = (out / "report.md").read_text()
    links = re.findall(r"\]\((figures/[a-z_]+\.png)\)", report)
    assert links and all((out / link).is_file() for link in links)
    assert ".published." not in report  # no path of the temporary folder it was built in
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["code_version"] == "abc123"
    # the resolved versions beside the commit: the lock's hash and every installed package
    import hashlib

    from dcod.io import installed_packages

    environment = provenance["environment"]
    assert environment["lock_sha256"] == hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    assert environment["installed"] == dict(sorted(installed_packages().items()))
    assert environment["installed"]["torch"].startswith("2.13.0")


def test_table_records_the_machine_of_every_run(tmp_path):
    work = make_work(tmp_path)
    for run_json in (work / "runs").rglob("run.json"):
        run = json.loads(run_json.read_text())
        run_json.write_text(json.dumps({**run, "machine": machine_info()}))
    build_all(tmp_path, work, figures=False)
    table = pd.read_csv(tmp_path / "results" / "table1.csv")
    rows = table.set_index("method")
    assert rows.loc["dcod", "machine"] == machine_label()
    assert "x" in machine_label() and machine_info()["torch_cpu_capability"] in machine_label()
    assert pd.isna(rows.loc["teacher", "machine"])  # references evaluated before machines were recorded


def test_literal_command_builds_everything_in_a_fresh_folder(tmp_path):
    """`snakemake --cores all results/table1.csv` where nothing was built yet (a fresh clone: the DAG's
    outputs are not committed) plans the whole DAG, from the world to the table."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                             "--directory", str(tmp_path), "--cores", "all", "results/table1.csv"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    for rule in ("world", "base_student", "traces", "traces_student_style", "train", "evaluate", "table1"):
        assert int(counts.get(rule, 0)) >= 1, (rule, result.stdout[-3000:])
    assert int(counts["train"]) >= 18  # six methods x three seeds at least
