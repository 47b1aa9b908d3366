"""bench/method_cost.py and bench/ceiling.py run end to end on the ci profile (a world, traces and a
2-step base student built in a temporary folder) and print what docs/benchmarks.md reads from them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI = str(ROOT / "config" / "profiles" / "ci.yaml")


def run(tmp_path, *argv, **extra_env) -> str:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT / "src"), **extra_env}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_method_cost_prints_every_method_per_float_path(tmp_path):
    out = run(tmp_path, "bench/method_cost.py", "--profile", CI, "--pretrain-steps", "2", "--steps", "2",
              "--start", "1", "--methods", "sft,dcod,kd", "--float-paths", "default,avx2", "--subnormals",
              ATEN_CPU_CAPABILITY="avx2")  # set by the caller: the default path must drop it
    sections = re.split(r"^float path ", out, flags=re.M)[1:]
    assert [s.split()[0] for s in sections] == ["'default'", "'avx2'"]
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    native = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                            env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert f"cpu capability {native})" in sections[0]  # this machine's own kernels
    assert "cpu capability AVX2)" in sections[1]  # the subprocess ran on the AVX2 kernels
    for section in sections:
        rows = {m.group(1): [float(v) for v in m.group(2).split()]
                for m in re.finditer(r"^(sft|dcod|kd)\s+([\d.\s]+)$", section, flags=re.M)}
        assert set(rows) == {"sft", "dcod", "kd"}
        assert rows["sft"][1:] == [1.0, 1.0, 1.0, 1.0]  # SFT against itself, each round
        assert all(v > 0 for values in rows.values() for v in values)
        assert len(re.findall(r"subnormal gradients entering lm_head: \d", section)) == 3


@pytest.mark.slow
def test_ceiling_prints_shares_of_the_measured_ceiling(tmp_path):
    out = run(tmp_path, "bench/ceiling.py", "--profile", CI, "--pretrain-steps", "2", "--steps", "2",
              "--start", "1", "--eval-prompts", "8", "--eval-repeats", "2")
    assert re.search(r"^ceiling, 1 thread\(s\): training shapes \(\d+ rows\) [\d.]+ GFLOP/s", out, flags=re.M)
    rows = {m.group(1).strip(): [float(v) for v in m.groups()[1:]] for m in re.finditer(
        r"^(training step, sft|training step, dcod|pre-training step|greedy generation, 8 id prompts)"
        r"\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)%-([\d.]+)%$", out, flags=re.M)}
    assert len(rows) == 4, out
    for seconds, gflop, rate, ceiling, share, low, high in rows.values():
        # the rate is the FLOPs over the median time (up to the printed roundings: 4 decimals of seconds
        # and GFLOP, 2 of GFLOP/s); the share a median of per-round shares, inside their printed range
        slack = 5e-5 / gflop + 5e-5 / seconds
        assert abs(gflop / seconds - rate) <= rate * slack + 0.005
        assert 0 < low <= share <= high and ceiling > 0


def test_teacher_term_screens_a_design(tmp_path):
    """bench/teacher_term.py (docs/toy_world.md, "Calibration of the next world") samples the profile's teacher and
    prints the spread of its per-trace mean log-prob; registers and layout (given by --set) widen it."""
    import json

    def screen(*sets):
        out = run(tmp_path, "bench/teacher_term.py", "--profile", CI, "--prompts", "40", *sets)
        return json.loads(out.strip().splitlines()[-1])

    plain = screen()
    assert plain["prompts"] == 40 and 35 <= plain["kept"] <= 40 and "ratio" not in plain
    free = screen("--set", "teacher.registers=[{weight: 1}, {weight: 1, p_space: 0.5, p_low_first: 0.5}]")
    assert free["teacher_std"] > 2 * plain["teacher_std"] and free["teacher_mean"] < plain["teacher_mean"]
