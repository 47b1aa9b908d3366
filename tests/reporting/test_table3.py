"""Table 3, prior offline methods (dcod.reporting.table3), its figure, and claim (a) read over Tables 1 and 3
(docs/claims.md, "Claim (a) over Tables 1 and 3, made operational").

Hand-made run folders (tests/test_reporting.py's fixture) plus throwaway ``table: prior`` experiments made
here: ``kd_prior`` (a copy of kd's evaluations, offline) and ``onpolicy_prior`` (online: it samples), whose
run.json records a pass before training, so the cost columns have known sums.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dcod.config import ReportConfig
from dcod.reporting import claims, cli, table3, tables
from dcod.reporting.stats import t_quantile
from test_claims import ABOVE, BELOW, CONTAINS, GOOD, row, table
from test_reporting import SEEDS, args_for, make_work

ROOT = Path(__file__).resolve().parents[2]
PASS = {"student_traces": {"tokens_generated": 300, "student_forward_tokens": 0, "teacher_forward_tokens": 310,
                           "seconds": 1.5},
        "trace_scores": {"student_forward_tokens": 200}}


def add_prior(work: Path, name: str, like: str, *, offline: bool = True, passes: dict | None = None) -> None:
    """A ``table: prior`` experiment: ``like``'s evaluations and runs, renamed, with its own needs and passes."""
    for seed in SEEDS:
        shutil.copytree(work / "eval" / like / f"seed{seed}", work / "eval" / name / f"seed{seed}")
        folder = work / "runs" / name / f"seed{seed}"
        shutil.copytree(work / "runs" / like / f"seed{seed}", folder)
        run = json.loads((folder / "run.json").read_text())
        run["experiment"].update(name=name, table="prior", description=f"{name} (prior)")
        run["needs"].update(student_rollouts=not offline)
        run["tokens_sampled"] = 0 if offline else 700
        if passes is not None:
            run["offline_passes"] = passes
        (folder / "run.json").write_text(json.dumps(run, sort_keys=True))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("table3")
    work = make_work(tmp_path)
    add_prior(work, "kd_prior", "kd", passes=PASS)
    add_prior(work, "onpolicy_prior", "sft", offline=False)
    results = tmp_path / "results"
    cli.run(args_for(tmp_path, work, "table1", results / "table1.csv"))
    published = tmp_path / "published"
    published.mkdir()
    pd.read_csv(results / "table1.csv").query("method != 'kd'").to_csv(published / "table1.csv", index=False)
    args = args_for(tmp_path, work, "table3", results / "table3.csv", ["dcod", "sft", "kd_prior", "onpolicy_prior"])
    args.published = str(published)
    cli.run(args)
    return tmp_path, work


def test_table3_rows_are_the_prior_methods_beside_the_same_table1_runs(built):
    tmp_path, _ = built
    t1 = tables.read_table(tmp_path / "results" / "table1.csv").set_index("method")
    t3 = tables.read_table(tmp_path / "results" / "table3.csv").set_index("method")
    assert list(t3.index) == ["dcod", "sft", "kd_prior", "onpolicy_prior"]
    assert list(t3["table"].astype(str)) == ["1", "1", "3", "3"]
    # the rows read against are Table 1's runs: same numbers and intervals, not recomputed differently
    for name in ("dcod", "sft"):
        for column in ("id_mean", "id_std", "delta_id_vs_sft", "delta_id_ci_low", "dcod_minus_row_long_ci_high",
                       "training_flops", "n_seeds"):
            a, b = t1.loc[name, column], t3.loc[name, column]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (name, column)
    # kd_prior answers like kd: same accuracy and the same subject − row interval as Table 1's kd row
    for column in ("id_mean", "long_mean", "dcod_minus_row_id", "dcod_minus_row_id_ci_low"):
        assert t3.loc["kd_prior", column] == t1.loc["kd", column], column
    assert bool(t3.loc["kd_prior", "offline_only"]) and not bool(t3.loc["onpolicy_prior", "offline_only"])
    assert t3.loc["kd_prior", "role"] == "method"


def test_table3_cost_columns_sum_training_and_passes(built):
    tmp_path, _ = built
    bare = pd.read_csv(tmp_path / "results" / "table3.csv")
    assert not set(table3.TABLE3_TIMING) & set(bare.columns)  # wall times live in the timing file
    timing = pd.read_csv(tmp_path / "results" / "table3_timing.csv").set_index("method")
    t3 = tables.read_table(tmp_path / "results" / "table3.csv").set_index("method")
    # kd_prior: 1000 trained + 200 scored by the student; teacher 0 + 310; generated 0 + 300; pass 1.5 s
    assert t3.loc["kd_prior", "student_forward_tokens"] == 1200
    assert t3.loc["kd_prior", "teacher_forward_tokens_total"] == 310
    assert t3.loc["kd_prior", "extra_generation_tokens"] == 300
    assert timing.loc["kd_prior", "extra_pass_wall_time_s"] == 1.5
    # no pass: training only (onpolicy_prior samples 700 tokens while it trains)
    assert t3.loc["onpolicy_prior", "extra_generation_tokens"] == 700
    assert t3.loc["sft", "student_forward_tokens"] == 1000 and timing.loc["sft", "extra_pass_wall_time_s"] == 0
    # the shared teacher traces are their own column, never counted as extra generation
    assert t3.loc["kd_prior", "offline_trace_tokens"] == 5000


def test_pass_cost_refuses_what_it_cannot_count():
    assert table3.pass_cost({})["tokens_generated"] == 0
    with pytest.raises(ValueError, match="'offline_passes' must map"):
        table3.pass_cost({"offline_passes": [1, 2]})
    with pytest.raises(ValueError, match="tokens_generated must be a count"):
        table3.pass_cost({"offline_passes": {"x": {"tokens_generated": -1}}})


def test_table3_markdown_marks_methods_absent_from_the_published_snapshot(built):
    tmp_path, _ = built
    text = (tmp_path / "results" / "table3.md").read_text()
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "not in the published snapshot" in lines["kd_prior"]
    assert "not in the published snapshot" not in lines["sft"]  # the snapshot's sft mean is shown instead
    assert lines["sft"].rstrip(" |").endswith("| 55.0")
    # which rows are offline (claim (a)'s baselines) is shown from the declared needs
    assert "| Table 3 | yes |" in lines["kd_prior"] and "| Table 3 | no |" in lines["onpolicy_prior"]
    # the comparison with a snapshot names a fresh method it lacks instead of dropping it silently
    published = tmp_path / "published"
    assert table3.snapshot_lines(published, tmp_path / "results") == [
        "Not in the published snapshot (no published number to compare with): `kd`.", ""]
    assert table3.snapshot_lines(tmp_path / "results", tmp_path / "results") == []


def test_table3_figure_plots_every_offline_method_of_both_tables(built):
    tmp_path, work = built
    out = tmp_path / "figures" / "offline_accuracy_vs_cost.png"
    cli.run(args_for(tmp_path, work, "figure:offline_accuracy_vs_cost", out))
    data = pd.read_csv(out.with_suffix(".csv")).set_index("method")
    # Table 1's offline methods and the subject, Table 3's offline prior method; never the online one
    assert list(data.index) == ["sft", "dcod", "kd", "kd_prior"]
    assert list(data["table"].astype(str)) == ["1", "subject", "1", "3"]
    assert data.loc["kd_prior", "forward_tokens"] == 1200 + 310
    assert data.loc["kd_prior", "generated_tokens"] == 5000 + 300
    assert data.loc["sft", "forward_tokens"] == 1000 and data.loc["sft", "generated_tokens"] == 5000
    assert out.read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- claim (a) over both tables
def prior_table(**rows) -> pd.DataFrame:
    """A Table 3: dcod and sft read against (table 1), then prior rows given as name -> row kwargs."""
    base = [{**row("dcod"), "table": "1"}, {**row("sft", ci=GOOD), "table": "1"}]
    return pd.DataFrame(base + [{**row(name, **kwargs), "table": "3"} for name, kwargs in rows.items()])


def test_claim_a_reads_table3_and_names_the_strongest_offline_method_from_either_table():
    t1 = table()
    t1.loc[t1["method"] == "kd", "validation_mean"] = 61.0
    t3 = prior_table(asft={"ci": GOOD, "validation_mean": 64.0},
                     online={"ci": {"id": BELOW, "long": BELOW}, "offline": False, "validation_mean": 90.0})
    claim = claims.accuracy_claim(t1, ReportConfig(), t3)
    assert claim.title == claims.TITLE_A_TABLES and claim.verdict == "supported"
    assert "Table 1: sft, kd; Table 3: asft" in claim.sentence  # online prior method never a baseline
    assert "strongest prior offline method (highest `validation` mean) is `asft` (Table 3, 64.0%)" in claim.sentence
    assert claim.numbers[0] == "strongest prior offline method: asft (Table 3; validation 64.0%)"
    assert "m = 6 comparisons" in claim.sentence and "no evidence for" not in claim.sentence
    # the strongest moves to Table 1 when a Table 1 method leads on validation
    t1.loc[t1["method"] == "kd", "validation_mean"] = 70.0
    assert "is `kd` (Table 1, 70.0%)" in claims.accuracy_claim(t1, ReportConfig(), t3).sentence
    # a Table 3 baseline alone decides: its id interval containing 0 makes (a) inconclusive, "no evidence for"
    weak = prior_table(asft={"ci": {**GOOD, "id": CONTAINS}, "validation_mean": 64.0})
    claim = claims.accuracy_claim(t1, ReportConfig(), weak)
    assert claim.verdict == "inconclusive" and "The results give no evidence for claim (a)." in claim.sentence
    # without prior rows the claim is Table 1's, with its own title
    assert claims.accuracy_claim(t1, ReportConfig(), prior_table()).title == claims.TITLE_A


def test_claim_a_refutes_only_at_the_bonferroni_level():
    """m = 6 (sft, kd, asft x id, long): a 95% CI below 0 refutes only if the 1 − 0.05/6 one is below too."""
    t1 = table()
    scale = t_quantile(1 - 0.025 / 6, 2) / t_quantile(0.975, 2)  # 3 seeds: 2 degrees of freedom
    near = (-5.0, -9.0, -1.0)  # 95% CI below 0; widened: upper end -5 + 4 * scale > 0
    far = (-20.0, -24.0, -16.0)
    assert -5.0 + 4.0 * scale > 0 and -20.0 + 4.0 * scale < 0
    claim = claims.accuracy_claim(t1, ReportConfig(), prior_table(asft={"ci": {**GOOD, "long": near}}))
    assert claim.verdict == "inconclusive" and "no evidence for claim (a)." in claim.sentence
    wide = claims.widened(near, 3, 1 - 0.05 / 6)
    assert wide[2] == pytest.approx(-5.0 + 4.0 * scale) and wide[1] == pytest.approx(-5.0 - 4.0 * scale)
    assert f"99.17%: {claims.interval_text(wide)}" in "\n".join(claim.numbers)
    claim = claims.accuracy_claim(t1, ReportConfig(), prior_table(asft={"ci": {**GOOD, "long": far}}))
    assert claim.verdict == "not supported"
    assert "DCOD trails asft on `long` at the 99.17% level" in claim.sentence


def test_claim_a_intervals_over_fewer_than_three_seeds_decide_nothing():
    t3 = prior_table(asft={"ci": {**GOOD, "id": (-30.0, -40.0, -20.0)}, "n_seeds": 2})
    claim = claims.accuracy_claim(table(), ReportConfig(), t3)
    assert claim.verdict == "inconclusive"
    assert "DCOD − asft (Table 3) on id: -30.0 over 2 seed(s): no interval, decides nothing" in claim.numbers


def test_claims_file_reads_table3_and_records_the_strongest(tmp_path):
    import argparse

    results = tmp_path / "results"
    results.mkdir()
    t1 = table()
    t1.loc[:, "validation_mean"] = 50.0
    t1.to_csv(results / "table1.csv", index=False)
    prior_table(asft={"ci": {**GOOD, "long": (-20.0, -24.0, -16.0)}, "validation_mean": 80.0}).to_csv(
        results / "table3.csv", index=False)
    claims.write_claims(argparse.Namespace(profile=str(ROOT / "config" / "profiles" / "ci.yaml"),
                                           results_dir=str(results), out=str(results / claims.CLAIMS_FILE)))
    frame = pd.read_csv(results / claims.CLAIMS_FILE, dtype=str, keep_default_na=False).set_index("claim")
    assert frame.loc["a", "title"] == claims.TITLE_A_TABLES and frame.loc["a", "verdict"] == "not supported"
    assert frame.loc["a", "numbers"].splitlines()[0] == "strongest prior offline method: asft (Table 3; validation 80.0%)"


def test_report_shows_table3_and_compares_claim_a_across_float_paths_on_table1_alone(tmp_path):
    from dcod.reporting import paper

    t1 = table()
    alone = claims.accuracy_claim(t1, ReportConfig())
    both = claims.accuracy_claim(t1, ReportConfig(), prior_table(asft={"ci": {**GOOD, "id": CONTAINS}}))
    assert (alone.verdict, both.verdict) == ("supported", "inconclusive")
    assert paper.table1_reading([both], t1, ReportConfig()).verdict == "supported"
    assert paper.table1_reading([alone], t1, ReportConfig()) is None
    # the float path's Table 1 reads (a) inconclusive: its Table 1 reading flipped, so (a) is not settled
    lines = "\n".join(paper.claims_section([both], ReportConfig(), None,
                                           ("avx2", {claims.TITLE_A: "inconclusive"}), table1_alone=alone))
    assert "not settled" in lines and "Judged on Table 1 alone" in lines
    lines = "\n".join(paper.claims_section([both], ReportConfig(), None, ("avx2", {claims.TITLE_A: "supported"}),
                                           table1_alone=alone))
    assert "not settled" not in lines
    shown = prior_table(asft={"ci": GOOD})
    shown = shown.assign(**{f"{s}_std": 1.0 for s in ("id", "long", "retention")})
    section = "\n".join(paper.table3_section(shown, "dcod"))
    assert "## Table 3: prior offline methods" in section and "| asft" in section and "| Table 3 |" in section
    assert "50.0 ± 1.0" in section and "+5.0 [+1.0, +9.0]" in section
    assert "Not produced" in "\n".join(paper.table3_section(None, "dcod"))


# ----------------------------------------------------------------------------- the DAG
def test_table3_is_in_all_and_not_upstream_of_table1(tmp_path):
    """A throwaway ``table: prior`` experiment in a copy of the workflow: `snakemake -n` plans Table 3 (its
    runs, the table, the figure) for the default target, and none of it for Table 1's target."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("Snakefile", "workflow", "config", "schemas", "environment.yml", "experiments", "paper"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name)
        elif source.is_file():
            shutil.copy2(source, checkout / name)
    kd = (ROOT / "experiments" / "kd" / "config.yaml").read_text()
    assert "table: main" in kd
    (checkout / "experiments" / "kd_prior_tmp").mkdir()
    (checkout / "experiments" / "kd_prior_tmp" / "config.yaml").write_text(kd.replace("table: main", "table: prior"))

    def plan(*targets) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "-n", "-p",
                               "--directory", str(tmp_path / "run"), "--cores", "2", *targets],
                              cwd=checkout, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return [line for line in done.stdout.splitlines() if " -m dcod " in line]

    everything = plan()
    table3_commands = [c for c in everything if "dcod report table3 " in c]
    assert len(table3_commands) == 1
    listed = re.search(r"--experiment-list (\S+)", table3_commands[0]).group(1).split(",")
    assert listed[:2] == ["dcod", "sft"] and "kd_prior_tmp" in listed
    assert f"--published {checkout / 'paper' / 'published' / 'results'} " in table3_commands[0]
    assert any("figure:offline_accuracy_vs_cost" in c for c in everything)
    assert any(re.search(r"dcod train .*--out work/toy/runs/kd_prior_tmp/seed0/", c) for c in everything)
    claims_command = next(c for c in everything if "dcod report claims " in c)
    assert "--results-dir results/table1.csv" in claims_command
    # Table 1 and `make reproduce`'s comparison with the snapshot (claims on Table 1 alone) never wait for Table 3
    first = plan("results/table1.csv", "results/comparison.md")
    assert any("dcod report table1 " in c for c in first) and any("report claims_table1 " in c for c in first)
    upstream = [c for c in first if re.search(r"report table3 |/kd_prior_tmp/|figure:offline_accuracy_vs_cost", c)]
    assert not upstream, upstream[:3]
