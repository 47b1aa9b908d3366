"""Every shell command in README.md, docs/*.md and the Snakefile header runs as written (issue 29).

Commands are taken from fenced ``bash``/``sh`` blocks, indented code blocks, the Snakefile's header comment
and inline code spans that start with ``snakemake``, ``make`` or ``python -m dcod``. Each kind is checked:

- ``snakemake ...``: fast, parsed by Snakemake's own argument parser (a target after ``--config`` is
  swallowed: "Invalid config definition") with every target kept; slow, dry-run (``-n``) in a fresh folder.
- ``make <target>``: ``make -n`` knows the target.
- ``python -m dcod <subcommand>``: ``--help`` of each subcommand named.
- ``python bench/<script>.py``: the script exists (slow: ``--help``).
- what installs packages, downloads models or needs GPUs is listed in SKIPPED with the reason.
"""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

SOURCES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "Snakefile"]
SKIPPED = {  # first word(s) -> why the command is not run here
    "pip": "installs packages (network)",
    "hf": "downloads models from the hub (network)",
    "python -m venv": "creates an environment",
    "python3 -m venv": "creates an environment",
    "python -m nltk.downloader": "downloads data (network)",
    "conda": "creates an environment",
    "accelerate launch": "the paper profile's training on 8 GPUs (its --config_file is checked to exist)",
    "/work/venv-vllm/bin/pip": "installs packages (network)",
    "python -m pytest": "the test suite itself",
    "pytest": "the test suite itself",
    ". .venv/bin/activate": "activates an environment",
    "/work/venv-vllm/bin/python": "the vLLM environment of docs/vllm.md (make test-vllm)",
    "snakemake --sdm conda": "documented as unsupported (README, environment.yml); no conda here",
    "snakemake --config profile=ci --report": "needs a finished run: tests/workflow/test_pipeline_ci.py builds the ci report",
}
ABBREVIATED = "…"  # an example with arguments left out (docs/toy_world.md): not runnable as written
PLACEHOLDERS = {"<name>": "ci", "<subcommand>": "world", "<what>": "table1"}


def _lines(path: Path) -> list[str]:
    """The command lines of one file (continuations joined, comments dropped)."""
    text = path.read_text()
    if path.name == "Snakefile":  # the header: "#   snakemake ..." lines
        blocks = [[line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#\s{2,}\S", line)]]
    else:
        blocks = [b.splitlines() for b in re.findall(r"(?ms)^```(?:bash|sh)\n(.*?)^```", text)]
        blocks += [[m.group(1)] for m in re.finditer(r"(?m)^(?:\n)    ((?:python|snakemake|make) .*)$", text)]
        blocks += [[" ".join(span.split())] for span in re.findall(r"`((?:snakemake|make|python -m dcod) [^`]*)`", text)]
    commands = []
    for block in blocks:
        joined = "\n".join(block).replace("\\\n", " ")
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


def documented() -> list[tuple[str, str]]:
    seen, out = set(), []
    for path in SOURCES:
        for command in _lines(path):
            if command not in seen:
                seen.add(command)
                out.append((path.name, command))
    return out


def _skip_reason(command: str) -> str | None:
    if ABBREVIATED in command:
        return "an abbreviated example (…)"
    return next((why for prefix, why in SKIPPED.items() if command == prefix or command.startswith(prefix + " ")),
                None)


def _fill(command: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    return command


def _snakemake_args(command: str) -> tuple[list[str], str | None]:
    """The arguments of a documented snakemake command as they can run here: without the Slurm executor
    plugin (not a dependency) `--profile config/slurm` becomes `--cores 1`."""
    args = shlex.split(_fill(command))[1:]
    note = None
    if "--profile" in args and args[args.index("--profile") + 1] == "config/slurm":
        i = args.index("--profile")
        assert (REPO / "config/slurm/config.yaml").is_file()
        args[i:i + 2] = ["--cores", "1"]
        note = "--profile config/slurm replaced by --cores 1 (no Slurm executor plugin here)"
    return [a for a in args if a != "-n"], note


COMMANDS = documented()
SNAKEMAKE = [c for _, c in COMMANDS if (c.startswith("snakemake ") or c == "snakemake") and not _skip_reason(c)]


def test_the_extraction_finds_the_documented_commands():
    commands = [c for _, c in COMMANDS]
    assert "snakemake --cores all results/table1.csv" in commands
    assert "make resume" in commands  # the Snakefile header and docs/reproducibility.md
    assert any(c.startswith("snakemake --profile config/slurm results/paper/table1.csv") for c in commands)
    assert len(SNAKEMAKE) >= 10


def test_every_command_is_checked_or_skipped_with_a_reason():
    for source, command in COMMANDS:
        known = (command.startswith(("snakemake", "make", "python -m dcod", "python bench/"))
                 or _skip_reason(command) is not None)
        assert known, f"{source}: {command!r} is neither checked nor skipped with a reason"


@pytest.mark.parametrize("command", SNAKEMAKE)
def test_snakemake_commands_parse_with_every_target(command):
    from snakemake.cli import get_argument_parser, parse_config

    args, _ = _snakemake_args(command)
    parsed = get_argument_parser().parse_args(args)
    parse_config(parsed.config or [])  # "Invalid config definition" when --config swallowed a target
    valued = {"--report", "--profile", "--workflow-profile", "--configfile", "--directory", "-d", "--snakefile", "-s"}
    targets = [a for i, a in enumerate(args) if "/" in a and not a.startswith("-") and "=" not in a
               and not a.startswith("config/") and (i == 0 or args[i - 1] not in valued)]
    assert sorted(parsed.targets) == sorted(targets), command


@pytest.mark.parametrize("command", sorted({c for _, c in COMMANDS if c.startswith("make ")}))
def test_make_commands_name_existing_targets(command):
    result = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", sorted({c for _, c in COMMANDS if c.startswith("python -m dcod") and not _skip_reason(c)}))
def test_dcod_subcommands_exist(command):
    words = shlex.split(_fill(command))[3:]
    subcommands = words[0].split("|") if words else []
    assert subcommands, command
    for name in subcommands:
        argv = [name, *words[1:2]] if name == "report" and len(words) > 1 else [name]
        result = subprocess.run([sys.executable, "-m", "dcod", *argv[:1], "--help"], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, (command, result.stderr[-1000:])


def test_skipped_commands_point_at_files_that_exist():
    for _, command in COMMANDS:
        if command.startswith("accelerate launch"):
            config = shlex.split(command)[shlex.split(command).index("--config_file") + 1]
            assert (REPO / config).is_file(), command
        if command.startswith("python bench/"):
            assert (REPO / shlex.split(command)[1]).is_file(), command


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("command", SNAKEMAKE)
def test_snakemake_commands_dry_run(command, tmp_path):
    args, _ = _snakemake_args(command)
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (command, (result.stdout + result.stderr)[-3000:])


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", sorted({c for _, c in COMMANDS if c.startswith("python bench/")}))
def test_bench_scripts_start(command):
    result = subprocess.run([sys.executable, shlex.split(command)[1], "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (command, result.stderr[-1000:])


# ----------------------------------------------------------------------------- recovery after a kill
def _resume_commands(target: str) -> list[list[str]]:
    """What `make resume TARGET=<target> PROFILE=ci` runs, as argument lists after `snakemake`."""
    out = subprocess.run(["make", "-n", "resume", f"TARGET={target}", "PROFILE=ci", "CORES=2"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    commands = [shlex.split(line.split("snakemake", 1)[1]) for line in out.splitlines() if "bin/snakemake " in line]
    return commands


def test_make_resume_unlocks_then_reruns_the_incomplete_jobs_of_the_same_target():
    unlock, rerun = _resume_commands("results/ci/table1.csv")
    assert unlock[0] == "--unlock"
    assert "--rerun-incomplete" in rerun and rerun.index("results/ci/table1.csv") < rerun.index("--config")
    assert rerun[-2:] == ["--config", "profile=ci"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_after_a_sigkill_make_resume_finishes_in_one_step(tmp_path):
    """A killed snakemake leaves a lock and an incomplete job: the plain rerun refuses, the commands of
    `make resume` finish the target."""
    import os
    import signal
    import time

    target = "work/ci/base_student"
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    job = subprocess.Popen([*base, "--cores", "1", target, "--config", "profile=ci"], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not (tmp_path / "work/ci/logs/base_student.log").exists():  # the world is done, pre-training runs
        assert time.time() < deadline and job.poll() is None, "the base student job never started"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    plain = subprocess.run([*base, "--cores", "1", target, "--config", "profile=ci"], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert plain.returncode != 0 and "lock" in (plain.stdout + plain.stderr).lower()
    for args in _resume_commands(target):
        result = subprocess.run([*base, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (tmp_path / target / "model.safetensors").is_file() or any((tmp_path / target).iterdir())
