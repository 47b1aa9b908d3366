"""A smoke profile's report (ProfileConfig.results: smoke; docs/reproducibility.md, "Smoke profiles"): it says at its
top that the numbers test the code path only, judges no claim, shows the share of generations cut at the token
cap per model and split, and draws no empty figure. Built on the ci profile with the smoke flag
(``--set results=smoke``) from the hand-made work folder of tests/reporting/test_reporting.py."""

import json

import pandas as pd
import pytest

from dcod.config import load_profile
from dcod.reporting import cli
from dcod.reporting.claims import NOT_JUDGED, SUPPORTED
from dcod.reporting.figures import FIGURE_NAMES, trace_stability

from conftest import REPO
from test_reporting import EXPERIMENTS, SEEDS, args_for, make_work

SMOKE = ["results=smoke"]


def cut_at_the_cap(work, name, seed, split, share):
    """Mark the first ``share`` of ``name``'s samples on ``split`` as cut at the cap (finish_reason length)."""
    path = work / "eval" / name / (f"seed{seed}" if seed is not None else "") / "samples.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    on_split = [row for row in rows if row["split"] == split]
    for row in on_split[: round(share * len(on_split))]:
        row["finish_reason"] = "length"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def build(tmp_path, sets):
    """Tables, claims, figures and the report of the ci profile, the profile overridden by ``sets``."""
    work = make_work(tmp_path, stability=False)  # the smoke profiles sample no stability traces
    cut_at_the_cap(work, "sft", 0, "id", 0.5)
    cut_at_the_cap(work, "sft", 1, "id", 1.0)
    cut_at_the_cap(work, "teacher", None, "long", 0.25)
    results = tmp_path / "results"

    def run(what, out, **extra):
        args = args_for(tmp_path, work, what, out, **extra)
        args.set = sets
        cli.run(args)

    run("table1", results / "table1.csv")
    run("table2", results / "table2.csv", experiments=["sft", "dcod", "dcod_prefix"], seeds=[0])
    run("claims", results / "claims.csv")
    pd.DataFrame([{"experiment": name, "lr": 1e-3, "validation_accuracy": 50.0, "seed": 0, "chosen": True}
                  for name in ("sft", "dcod", "kd")]).to_csv(results / "tuning.csv", index=False)
    shown = {}
    original = trace_stability.empty_figure

    def recorded():
        shown["figure"] = original()
        return shown["figure"]

    trace_stability.empty_figure = recorded
    try:
        for name in FIGURE_NAMES:  # the one that may lack data is drawn, the others are placeholders
            png = tmp_path / "figures" / f"{name}.png"
            if name == trace_stability.NAME:
                run(f"figure:{name}", png)
            else:
                png.parent.mkdir(exist_ok=True)
                png.write_bytes(b"")
    finally:
        trace_stability.empty_figure = original
    run("paper", tmp_path / "paper" / "report.md")
    return work, (tmp_path / "paper" / "report.md").read_text(), pd.read_csv(results / "claims.csv"), shown


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return build(tmp_path_factory.mktemp("smoke"), SMOKE)


def test_the_shipped_smoke_profiles_say_so():
    for name in ("smol", "paper_smoke"):
        assert load_profile(REPO / "config" / "profiles" / f"{name}.yaml").results == "smoke", name
    for name in ("toy", "ci", "paper"):
        assert load_profile(REPO / "config" / "profiles" / f"{name}.yaml").results == "meaningful", name
    assert load_profile(REPO / "config" / "profiles" / "ci.yaml", SMOKE).results == "smoke"


def test_a_smoke_report_says_so_before_any_number(smoke):
    _, report, _, _ = smoke
    warning = report.index("**Smoke run: these numbers test the code path only.**")
    assert warning < report.index("## Setup") < report.index("## Table 1")


def test_a_smoke_run_judges_no_claim(smoke):
    _, report, claims, _ = smoke
    assert len(claims) == 4 and (claims["verdict"] == NOT_JUDGED).all() and claims["numbers"].isna().all()
    section = report.split("## Claims")[1]
    assert section.count(f"**{NOT_JUDGED}**") == 4
    assert f"**{SUPPORTED}**" not in report and ": supported" not in report


def test_the_same_run_without_the_flag_is_judged(tmp_path):
    """The control: the flag, not the fixture's data, is what withholds the verdicts."""
    _, report, claims, _ = build(tmp_path, None)
    assert (claims["verdict"] == SUPPORTED).any() and NOT_JUDGED not in set(claims["verdict"])
    assert "Smoke run" not in report and "## Generations cut at the token cap" not in report


def test_the_cap_share_per_model_and_split(smoke):
    _, report, _, _ = smoke
    section = report.split("## Generations cut at the token cap")[1].split("\n## ")[0]
    assert "| model | validation | id | long | retention |" in section
    # sft: 50% of id on seed 0, 100% on seed 1 -> 75; the teacher a quarter of long; everything else ended
    assert "| sft | 0 | 75 | 0 | 0 |" in section
    assert "| teacher | 0 | 0 | 25 | 0 |" in section
    for name in ("base_student", *[e for e in EXPERIMENTS if e != "sft"]):
        assert f"| {name} | 0 | 0 | 0 | 0 |" in section
    assert f"seeds {SEEDS}" not in section  # a table, not prose


def test_a_figure_without_data_says_why(smoke):
    _, _, _, shown = smoke
    figure = shown.get("figure")
    assert figure is not None, "trace_stability drew bars from no stability samples"
    assert figure.axes[0].texts[0].get_text() == f"{trace_stability.EMPTY}."
