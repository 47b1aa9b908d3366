"""Faults of the grader (issue 11, item 5): a killed `dcod grade` leaves no process behind, bad
timeouts and bad input files are refused with the value, file, line and key named, and the
summary is JSON. The process checks read /proc, so they run on Linux only."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcod import cli, grading
from dcod.grading import grade, grade_file

from conftest import REPO

SLOW = "\\boxed{" + "{" * 1000 + "1" + "}" * 1000 + "}"  # math-verify parses this for minutes, in C code
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, ...), or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the command name in (...) may hold spaces


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has finished running


def _descendants(pid: int) -> dict[int, int]:
    """{pid: parent pid} of every live process below `pid`."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] not in ("Z", "X"):
            parents[int(entry.name)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found.update((child, parents[child]) for child in frontier)
    return found


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _survivors(pids, within: float) -> list[int]:
    deadline = time.monotonic() + within
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def busy_grader(tmp_path):
    """`python -m dcod grade` with both workers inside math-verify on items that take minutes.
    Yields the process and its descendants (resource tracker, forkserver, workers) as {pid: ppid};
    anything still alive at the end is killed, so a failing test leaves nothing running either."""
    in_path = _write_jsonl(tmp_path / "slow.jsonl", [{"gold": "5", "prediction": SLOW}] * 4)
    command = [sys.executable, "-m", "dcod", "grade", str(in_path), str(tmp_path / "out.jsonl"),
               "--timeout", "300", "--workers", "2"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # our signals reach the grader only, as `kill PID`
    family: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while True:  # workers are the grandchildren; busy once they burn CPU (an idle one waits on recv)
            family = _descendants(process.pid)
            workers = [pid for pid, parent in family.items() if parent != process.pid]
            if len(workers) == 2 and all(_cpu_seconds(pid) > 0.3 for pid in workers):
                break
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, f"the workers never got busy: {family}"
            time.sleep(0.1)
        yield process, family
    finally:
        for pid in [process.pid, *family]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.communicate()


@linux_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_grader_kills_its_workers_and_says_so(busy_grader, tmp_path, signum):
    process, family = busy_grader
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err
    assert _survivors(family, within=10) == [], family
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.tmp").exists()


@linux_only
def test_a_killed_grader_takes_its_workers_along(busy_grader):
    """SIGKILL runs no handler: the kernel's parent-death signal chain (grader -> forkserver -> workers)."""
    process, family = busy_grader
    process.kill()
    process.wait(timeout=30)
    assert _survivors(family, within=10) == [], family


def report_pid_then_hang(gold_text, prediction_text, boxed):
    """Test hook (runs in a worker): write the worker's pid to the file named by the box, then hang."""
    Path(boxed).write_text(str(os.getpid()))
    time.sleep(3600)


@linux_only
def test_an_interrupted_grade_kills_its_workers_at_once(tmp_path):
    """An exception in the parent (here Ctrl-C) kills busy workers instead of asking each to stop
    and waiting a second for it (two workers: two seconds before this fix)."""
    markers, raised = [tmp_path / f"worker{index}" for index in range(2)], []

    def interrupt_when_both_hang(signum, frame):
        if not raised and all(marker.exists() for marker in markers):  # once: the cleanup runs undisturbed
            raised.append(time.monotonic())
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt_when_both_hang)
    signal.setitimer(signal.ITIMER_REAL, 0.2, 0.2)
    try:
        with pytest.raises(KeyboardInterrupt):
            grade(["5", "5"], [f"\\boxed{{{marker}}}" for marker in markers], timeout=300, workers=2,
                  _item_grader=report_pid_then_hang)
        cleanup_seconds = time.monotonic() - raised[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    pids = [int(marker.read_text()) for marker in markers]
    assert _survivors(pids, within=5) == [], pids
    assert cleanup_seconds < 1.5, cleanup_seconds


# --- the timeout: a finite number of seconds > 0 ---------------------------------------------------

BAD_TIMEOUTS = ["nan", "NaN", "inf", "-inf", "0", "-1"]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS + ["1e300"])
def test_grade_and_grade_file_refuse_a_bad_timeout(tmp_path, timeout):
    in_path = _write_jsonl(tmp_path / "in.jsonl", [{"gold": "2", "prediction": "\\boxed{2}"}])
    value = re.escape(repr(float(timeout)))
    with pytest.raises(ValueError, match=f"timeout must be a finite number.*got {value}$"):
        grade(["2"], ["\\boxed{2}"], timeout=float(timeout))
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        grade_file(in_path, tmp_path / "out.jsonl", timeout=float(timeout))
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS)
def test_the_command_lines_refuse_a_bad_timeout(tmp_path, capsys, timeout):
    in_path = _write_jsonl(tmp_path / "in.jsonl", [{"gold": "2", "prediction": "\\boxed{2}"}])
    for run in (cli.main, grading.main):
        argv = [str(in_path), str(tmp_path / "out.jsonl"), f"--timeout={timeout}"]
        with pytest.raises(SystemExit) as stop:
            run(["grade", *argv] if run is cli.main else argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "argument --timeout" in err and repr(timeout) in err, err


def test_a_timeout_over_a_day_is_refused_by_dcod_grade(tmp_path, capsys):
    in_path = _write_jsonl(tmp_path / "in.jsonl", [{"gold": "2", "prediction": "\\boxed{2}"}])
    with pytest.raises(SystemExit) as stop:
        cli.main(["grade", str(in_path), str(tmp_path / "out.jsonl"), "--timeout", "1e300"])
    assert stop.value.code == 2
    assert "got 1e+300" in capsys.readouterr().err


# --- bad input files: refused, naming the file, the line and the key -----------------------------

def test_json_nested_200k_deep_is_refused_with_its_line(tmp_path):
    in_path = tmp_path / "in.jsonl"
    deep = '{"gold": "1", "prediction": ' + "[" * 200_000 + "]" * 200_000 + "}"
    in_path.write_text(json.dumps({"gold": "1", "prediction": "1"}) + "\n\n" + deep + "\n", encoding="utf-8")
    message = re.escape(f"{in_path}: line 3 is JSON nested deeper than 64 levels")
    with pytest.raises(ValueError, match=f"^{message}$"):
        grade_file(in_path, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_json_that_parses_but_nests_deeply_is_refused_and_shallow_nesting_is_kept(tmp_path):
    deep = {"gold": "1", "prediction": "1"}
    for _ in range(500):  # json.loads copes, str() and json.dumps() are left close to the recursion limit
        deep = {"gold": "1", "prediction": "1", "meta": deep}
    in_path = _write_jsonl(tmp_path / "in.jsonl", [deep])
    with pytest.raises(ValueError, match="line 1 is JSON nested deeper than 64 levels"):
        grade_file(in_path, tmp_path / "out.jsonl")
    shallow = {"gold": "7", "prediction": "\\boxed{7}", "meta": [[[[{"a": [1]}]]]]}
    summary = grade_file(_write_jsonl(tmp_path / "ok.jsonl", [shallow]), tmp_path / "out.jsonl")
    assert summary["accuracy"] == 1.0


@pytest.mark.parametrize("text", ["", "\n", "  \n\n\t\n"])
def test_an_empty_input_is_refused(tmp_path, text):
    in_path = tmp_path / "in.jsonl"
    in_path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(in_path))}: no records to grade"):
        grade_file(in_path, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "line 3 is not valid JSON: Expecting property name enclosed in double quotes (column 2)"),
    (json.dumps({"gold": "1"}), "line 3 has no 'prediction' field"),
    (json.dumps({"prediction": "1"}), "line 3 has no 'gold' field"),
    ("null", "line 3 is not a JSON object"),
])
def test_dcod_grade_names_the_file_line_and_key(tmp_path, capsys, bad_line, message):
    in_path = tmp_path / "in.jsonl"
    good = json.dumps({"gold": "1", "prediction": "1"})
    in_path.write_text(f"{good}\n\n{bad_line}\n", encoding="utf-8")  # a blank line still counts
    with pytest.raises(SystemExit) as stop:
        cli.main(["grade", str(in_path), str(tmp_path / "out.jsonl")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"dcod grade: error: {in_path}: {message}\n"


def test_unreadable_input_and_missing_output_folder_are_named(tmp_path):
    in_path = _write_jsonl(tmp_path / "in.jsonl", [{"gold": "2", "prediction": "\\boxed{2}"}])
    missing, out_path = tmp_path / "nothing.jsonl", tmp_path / "no" / "out.jsonl"
    with pytest.raises(ValueError, match=f"^{re.escape(str(missing))}: cannot read the input"):
        grade_file(missing, tmp_path / "out.jsonl")
    folder = re.escape(f"{out_path}: the output folder {out_path.parent} does not exist")
    with pytest.raises(ValueError, match=f"^{folder}$"):
        grade_file(in_path, out_path)


# --- the summary is one JSON object on stdout --------------------------------------------------------

def test_dcod_grade_prints_the_summary_as_json(tmp_path, capsys):
    rows = [{"id": "a", "gold": "2", "prediction": "\\boxed{2}"},
            {"id": "b", "gold": "3", "prediction": "\\boxed{4}"}]
    in_path = _write_jsonl(tmp_path / "in.jsonl", rows)
    cli.main(["grade", str(in_path), str(tmp_path / "out.jsonl"), "--timeout", "7"])
    summary = json.loads(capsys.readouterr().out)
    assert (summary["n"], summary["correct"], summary["accuracy"]) == (2, 1, 0.5)
    assert summary["grader"]["timeout_s"] == 7.0
