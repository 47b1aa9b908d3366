"""``python -m dcod inspect``: id lookup, filters, output formats and errors, on the fake ci work folder of
test_traces.py (four models; who is right on problem i is RIGHT[model](i))."""

import json

import pytest

from dcod.cli import main
from test_traces import N, RIGHT, write_work


def run(capsys, *argv):
    main(["inspect", *argv])
    return capsys.readouterr().out


def as_json(capsys, work, *argv):
    return json.loads(run(capsys, "--work", str(work), "--json", *argv))


def test_id_lookup_shows_every_model_and_seed(tmp_path, capsys):
    work = write_work(tmp_path)
    (problem,) = as_json(capsys, work, "long-00002")
    assert (problem["id"], problem["split"], problem["gold"]) == ("long-00002", "long", "28")
    models = {m["model"]: m for m in problem["models"]}
    assert sorted(models) == ["base_student/seed0", "dcod/seed0", "sft/seed0", "teacher"]
    assert {name: m["correct"] for name, m in models.items()} == \
        {"base_student/seed0": RIGHT["base_student"](2), "dcod/seed0": RIGHT["dcod"](2),
         "sft/seed0": RIGHT["sft"](2), "teacher": True}
    assert models["dcod/seed0"]["answer"] == "29" and models["dcod/seed0"]["first_wrong"] == "step 2 (direct)"
    assert [s["correct"] for s in models["dcod/seed0"]["steps"]] == [True, False]
    assert models["sft/seed0"]["first_wrong"] == "none"


@pytest.mark.parametrize("argv, keep", [
    (["--split", "long", "--incorrect", "dcod", "--correct", "sft"], lambda i: not RIGHT["dcod"](i) and RIGHT["sft"](i)),
    (["--split", "id", "--disagree", "sft,dcod"], lambda i: RIGHT["dcod"](i) != RIGHT["sft"](i)),
    (["--split", "id", "--incorrect", "base_student", "--correct", "dcod/seed0"],
     lambda i: not RIGHT["base_student"](i) and RIGHT["dcod"](i)),
])
def test_filters_keep_exactly_the_matching_problems(tmp_path, capsys, argv, keep):
    work = write_work(tmp_path)
    split = argv[1]
    got = [p["id"] for p in as_json(capsys, work, "--limit", "0", *argv)]
    assert got == [f"{split}-{i:05d}" for i in range(N) if keep(i)]
    limited = [p["id"] for p in as_json(capsys, work, "--limit", "2", *argv)]
    assert limited == got[:2]


def test_text_is_side_by_side_within_the_width(tmp_path, capsys):
    work = write_work(tmp_path)
    for width in (70, 140):
        text = run(capsys, "--work", str(work), "id-00002", "--width", str(width))
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= width
        assert "✗ 14*2=29 (direct ← first wrong)" in text and "1 of 1 matching problems" in text
    # 140 columns hold all four models in one band (two bands at 70)
    assert sum(" │ " in line and line.count(" │ ") == 3 for line in lines) > 0


def test_markdown_and_html(tmp_path, capsys):
    work = write_work(tmp_path)
    md = run(capsys, "--work", str(work), "id-00002", "--format", "md")
    assert "## `id-00002` (id)" in md and "**`14*2=29;` direct ✗ ← first wrong**" in md
    out = tmp_path / "page.html"
    run(capsys, "--work", str(work), "id-00002", "--format", "html", "--out", str(out))
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<code>14*2=29</code> direct ✗" in page


@pytest.mark.parametrize("argv, message", [
    (["id-99999"], "unknown problem id(s) id-99999"),
    (["--split", "nope"], "unknown split 'nope'"),
    (["--correct", "grpo"], "unknown model 'grpo'"),
    (["--disagree", "sft"], "--disagree takes two model names"),
])
def test_bad_input_exits_2_naming_it(tmp_path, capsys, argv, message):
    work = write_work(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["inspect", "--work", str(work), *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_missing_folder_and_empty_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["inspect", "--work", str(tmp_path / "work" / "absent")])
    assert stop.value.code == 2 and "work/absent does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "eval").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        main(["inspect", "--work", str(tmp_path / "empty")])
    assert stop.value.code == 2 and "no samples.jsonl" in capsys.readouterr().err
