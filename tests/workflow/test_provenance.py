"""Results follow the code and the profile (issue 29; docs/reproducibility.md, "Results follow the code and
the profile"). Fast: the fingerprints the rules carry (dcod.provenance), computed in a scratch copy of the
package after an edit. Slow: in a scratch copy of the repository with the `ci` profile, one run and its
evaluation are built for real; then a source edit, a report-code edit and profile edits are made and
Snakemake's plan (and, for the loss edit, the rerun itself) is checked."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

TARGET = "work/ci/eval/sft/seed0/metrics.csv"  # world, base student, traces, sft seed 0 trained and evaluated
UPSTREAM = {"world", "base_student", "traces"}


def _snakemake(copy, *args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}  # the copy's package, edits included
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args, "--config", "profile=ci"],
                            cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


def planned(copy, target=TARGET) -> dict[str, int]:
    """Rule name -> job count of a dry run (empty when there is nothing to be done)."""
    out = _snakemake(copy, "-n", target)
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


class edited:
    """A file of the copy edited for the duration of a with-block."""

    def __init__(self, path, old, new):
        self.path, self.old, self.new = path, old, new

    def __enter__(self):
        self.text = self.path.read_text()
        assert self.old in self.text, (self.path, self.old)
        self.path.write_text(self.text.replace(self.old, self.new, 1))

    def __exit__(self, *exc):
        self.path.write_text(self.text)


# ----------------------------------------------------------------------------- fast: the fingerprints
def _fingerprints(package_root, profile_text=None):
    """The code fingerprints of both stage groups and the profile fingerprints of every stage, computed by
    the package under ``package_root`` (a fresh interpreter: the fingerprints are cached per process)."""
    code = ("import json, sys\n"
            "from dcod.config import load_profile\n"
            "from dcod.provenance import PROFILE_IGNORED, code_fingerprint, profile_fingerprint\n"
            "out = {c: code_fingerprint(c) for c in ('pipeline', 'report', 'shipped')}\n"
            "if len(sys.argv) > 1:\n"
            "    profile = load_profile(sys.argv[1])\n"
            "    out.update({s: profile_fingerprint(profile, s) for s in PROFILE_IGNORED})\n"
            "print(json.dumps(out))\n")
    args = [sys.executable, "-c", code] + ([str(profile_text)] if profile_text else [])
    result = subprocess.run(args, env={**os.environ, "PYTHONPATH": str(package_root)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture()
def package(tmp_path):
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return tmp_path / "src"


def test_a_loss_edit_changes_the_pipeline_code_not_the_report_code_it_never_imports(package):
    before = _fingerprints(package)
    with edited(package / "dcod/objectives.py", "return -target_logprobs(logits, targets)",
                "return -2.0 * target_logprobs(logits, targets)"):
        after = _fingerprints(package)
    assert after["pipeline"] != before["pipeline"]
    # the reports import neither the method registry nor torch (a run's needs come from its run.json)
    assert after["report"] == before["report"]
    assert _fingerprints(package) == before  # a fingerprint of content: undoing the edit undoes it


def test_a_report_edit_changes_the_report_code_only(package):
    before = _fingerprints(package)
    with edited(package / "dcod/reporting/tables.py", '"""', '"""Edited. '):
        after = _fingerprints(package)
    assert after["report"] != before["report"] and after["pipeline"] == before["pipeline"]


def test_a_new_method_module_changes_the_pipeline_code(package):
    """Methods are discovered by name (dcod.methods): a new module runs without any import naming it."""
    before = _fingerprints(package)
    (package / "dcod/methods/new_method.py").write_text("X = 1\n")
    assert _fingerprints(package)["pipeline"] != before["pipeline"]


def test_a_shipped_copy_edit_changes_its_own_code_only(package):
    """The copy of the shipped base students (dcod.shipped) is a stage group of its own: an edit of it reruns
    the copy jobs, never every pre-training, world and traces job (dcod.provenance, OWN_GROUP); the reports
    read its manifest functions, so their code changes too."""
    before = _fingerprints(package)
    with edited(package / "dcod/shipped.py", '"""', '"""Edited. '):
        after = _fingerprints(package)
    assert after["shipped"] != before["shipped"] and after["pipeline"] == before["pipeline"]
    assert after["report"] != before["report"]
    # ... and a pipeline edit (the loss) leaves the copy's code alone
    with edited(package / "dcod/objectives.py", "return -target_logprobs(logits, targets)",
                "return -2.0 * target_logprobs(logits, targets)"):
        assert _fingerprints(package)["shipped"] == before["shipped"]


def test_the_report_code_is_what_the_report_modules_import():
    """Every dcod module that importing the report modules loads is in the report fingerprint."""
    from dcod.provenance import PACKAGE, stage_sources

    reporting = sorted(p for p in (PACKAGE / "reporting").rglob("*.py") if "__pycache__" not in p.parts)
    names = [".".join(("dcod", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
             for p in reporting]
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}: importlib.import_module(name)\n"
            "print(json.dumps([m.__file__ for n, m in sys.modules.items() if n.startswith('dcod') and m.__file__]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = {os.path.realpath(f) for f in json.loads(result.stdout)}
    assert loaded - {os.path.realpath(p) for p in stage_sources("report")} == set()
    assert len(loaded) > len(reporting)


def test_profile_fingerprints_ignore_exactly_the_sections_a_stage_never_reads(tmp_path):
    from dcod.config import load_profile
    from dcod.provenance import profile_fingerprint

    text = (REPO / "config/profiles/ci.yaml").read_text()

    def fingerprints(old, new):
        path = tmp_path / "ci.yaml"
        assert old in text
        path.write_text(text.replace(old, new, 1))
        profile = load_profile(path)
        return {stage: profile_fingerprint(profile, stage) for stage in ("prepare", "train", "evaluate", "report")}

    base = fingerprints("", "")
    changed = lambda old, new: {s for s, f in fingerprints(old, new).items() if f != base[s]}  # noqa: E731
    assert changed("  warmup_steps: 1\n", "  warmup_steps: 2\n") == {"train", "report"}  # train.*
    assert changed("seeds: [0, 1]\n", "seeds: [0, 1, 2]\n") == {"report"}
    assert changed("  max_new_tokens: 60\n", "  max_new_tokens: 61\n") == {"prepare", "train", "evaluate", "report"}
    assert changed("  steps: 12\n", "  steps: 13\n") == {"prepare", "train", "evaluate", "report"}
    assert changed("# Miniature", "# comment. Miniature") == set()  # the resolved profile, not its text
    # where the shipped base students lie is the DAG's and the copy's (their own fingerprints: dcod.shipped)
    assert changed("  per_seed: true", "  shipped: models/ci\n  per_seed: true") == set()


def test_every_rule_carries_its_stage_fingerprints_and_no_profile_input():
    """Each rule of workflow/rules/*.smk gets STAGE_PARAMS (code, profile sections, the profile path as a
    param); a profile file among a rule's inputs would rerun every job on any profile edit."""
    rules = {}
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=rule \w+:)", smk.read_text())[1:]:
            rules[re.match(r"rule (\w+):", block).group(1)] = block
    assert len(rules) > 15
    for name, block in rules.items():
        assert re.search(r'\*\*STAGE_PARAMS\["(prepare|train|evaluate|report|shipped)"\]', block), name
        assert "PROFILE_FILE" not in block and "input.profile" not in block, name


# ----------------------------------------------------------------------------- slow: the DAG itself
@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("code_invalidation") / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("Snakefile", "environment.yml"):
        root.mkdir(exist_ok=True)
        shutil.copy(REPO / name, root / name)
    for name in ("workflow", "src", "config", "experiments"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    # one learning rate for every method here: under the ci profile's learning_rates.source tuning, sft seed 0
    # would wait for the whole grid (and a train-only edit would rightly rerun it); the grid's own wiring is
    # tested by tests/workflow/test_tuning.py and the ci DAG run (tests/workflow/test_pipeline_ci.py)
    ci = root / "config/profiles/ci.yaml"
    assert "learning_rates:\n  source: tuning\n" in ci.read_text()
    ci.write_text(ci.read_text().replace("learning_rates:\n  source: tuning\n", ""))
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "clean"], check=True)
    _snakemake(root, TARGET)
    assert planned(root) == {}
    return root


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_a_report_code_edit_reruns_no_stage_that_does_not_run_it(copy):
    with edited(copy / "src/dcod/reporting/tables.py", '"""', '"""Edited. '):
        assert planned(copy) == {}
        # ... while the reports, which run it, get another fingerprint (Table 1 is planned anyway: not built)
        assert "Params have changed" not in _snakemake(copy, "-n", "--list-changes", "params")
    assert planned(copy) == {}


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_a_train_only_profile_edit_reruns_training_and_evaluation_only(copy):
    profile = copy / "config/profiles/ci.yaml"
    with edited(profile, "  checkpoint_every: 2\n", "  checkpoint_every: 2\n  log_every: 3\n"):
        assert planned(copy) == {"train": 1, "evaluate": 1}
    with edited(profile, "  batch_size: 8\n", "  batch_size: 4\n"):  # train.batch_size
        assert planned(copy) == {"train": 1, "evaluate": 1}
    with edited(profile, "# Miniature", "# A comment changes nothing. Miniature"):
        assert planned(copy) == {}
    # a section the world, the base student and the traces read reruns them (and what follows)
    with edited(profile, "  steps: 12\n", "  steps: 13\n"):  # pretrain.steps
        assert UPSTREAM <= set(planned(copy))


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_a_loss_edit_reruns_every_stage_and_the_run_records_the_code_that_ran(copy):
    run_dir = copy / "work/ci/runs/sft/seed0"
    losses = [row["loss"] for row in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines())]
    assert json.loads((run_dir / "run.json").read_text())["code_version"] != "unknown"
    assert not json.loads((run_dir / "run.json").read_text())["code_version"].endswith("+dirty")
    edit = edited(copy / "src/dcod/objectives.py", "return -target_logprobs(logits, targets)",
                  "return -2.0 * target_logprobs(logits, targets)")
    with edit:
        assert planned(copy) == {"world": 1, "base_student": 1, "traces": 1, "train": 1, "evaluate": 1}
        _snakemake(copy, TARGET)
        run = json.loads((run_dir / "run.json").read_text())
        rerun = [row["loss"] for row in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines())]
        # the edited loss ran (also in pre-training: the base student differs, so not exactly twice)
        assert rerun != losses and rerun[0] > 1.5 * losses[0]
        assert run["code_version"].endswith("+dirty")  # not the clean commit, which did not produce it
        metrics = (copy / TARGET).read_text()
        assert "+dirty" in metrics
        assert planned(copy) == {}
    # back to the committed code: its fingerprint again, so the results of the edit are stale
    assert planned(copy) == {"world": 1, "base_student": 1, "traces": 1, "train": 1, "evaluate": 1}
