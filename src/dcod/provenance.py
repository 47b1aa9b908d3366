"""Which machine produced a number: CPU, float-kernel path, threads, torch build, accelerator.

Floats depend on the kernels a CPU runs (AVX-512 with or without AMX, AVX2) and on the thread count,
so the same seed gives bit-identical results only on the same kind of machine
(docs/reproducibility.md). Every run and evaluation records ``machine_info()``; tables carry its
one-line ``machine_label`` so that a published number always says where it came from.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import platform
from pathlib import Path

# CPU flags that decide which float kernels torch and oneDNN use
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", "unknown CPU", platform.processor()):
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: the model from platform, flags unknown
        pass
    return model, frozenset(flags)


def machine_info() -> dict:
    """The facts that change floats, as plain data (saved in run.json and metrics.csv). Read at call time:
    the thread count is the one the stage set."""
    import torch

    model, flags = _cpu_model_and_flags()
    info = {
        "cpu": model,
        "cpu_kernel_flags": [flag for flag in KERNEL_FLAGS if flag in flags],
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY"),
        "onednn_max_cpu_isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda_device": None,
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def machine_label(info: dict | None = None) -> str:
    """One line for a table cell, e.g. ``AMD EPYC [avx512] torch 2.13.0 AVX512 x1 cpu``."""
    info = machine_info() if info is None else info
    flags = set(info.get("cpu_kernel_flags", []))
    isa = "amx" if "amx_tile" in flags else "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "?"
    device = info.get("cuda_device") or "cpu"
    return (f"{info.get('cpu')} [{isa}] torch {info.get('torch')} {info.get('torch_cpu_capability')} "
            f"x{info.get('threads')} {device}")


# ----------------------------------------------------------------------------- what a stage depends on
# The DAG gives every rule two fingerprints as Snakemake params (workflow/rules/*.smk): the code its stage
# runs and the profile sections it reads. Snakemake's params trigger reruns a job when one changes, so a
# source edit or a profile edit redoes exactly the stages it can affect (docs/reproducibility.md, "Results
# follow the code and the profile").

PACKAGE = Path(__file__).resolve().parent
# the command line: `python -m dcod <stage>` runs these for every stage; only their module-level imports are
# shared (cli.py imports each stage's code inside that stage's command)
ENTRY_POINT = ("__init__.py", "__main__.py", "cli.py")

# Profile sections a stage's command never reads. Stages read the profile object (dcod.pipeline); these
# sections are read only by the DAG (which jobs exist, the variant roots' --set overrides and environment,
# passed as params of their own), by training, or by the reports. Everything else counts, a new section too.
DAG_ONLY = ("seeds", "ablation_seeds", "experiments", "ablations", "robustness", "calibration",
            "float_path_check", "results")
PROFILE_IGNORED = {
    "prepare": (*DAG_ONLY, "report", "train", "tuning", "learning_rates"),  # world, base student, teacher traces
    "train": (*DAG_ONLY, "report"),  # training (train_config_for, learning_rate_for) and the tuning grid
    "evaluate": (*DAG_ONLY, "report", "train", "learning_rates"),  # evaluation reads eval, tuning.split, ...
    "report": (),  # tables, figures and the report read any section
}
STAGE_CODE = {"prepare": "pipeline", "train": "pipeline", "evaluate": "pipeline", "report": "report",
              "shipped": "shipped"}
# Modules with a stage group of their own, outside ``pipeline``: the copy of the shipped base students
# (dcod.shipped) is a cheap job whose code edit must not rerun every pre-training, world and trace stage.
# Its profile fingerprint is dcod.shipped's (the sections that decide a base student); the key it reads
# (pretrain.shipped: where they lie) is in no stage's profile fingerprint (PROFILE_DAG_KEYS).
OWN_GROUP = {"shipped": "shipped.py"}
PROFILE_DAG_KEYS = {"pretrain": ("shipped",)}


def _module_file(name: str) -> Path | None:
    """The source file of module ``dcod.x.y`` (a module or a package's ``__init__``), or None."""
    parts = name.split(".")[1:]
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py") if parts else None,
                      PACKAGE.joinpath(*parts, "__init__.py")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _dcod_imports(path: Path, nested: bool = True) -> set[str]:
    """The ``dcod`` modules a source file imports: at module level, and (``nested``) inside functions too.
    ``from dcod import grading`` names the module ``dcod.grading``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(("dcod", *path.relative_to(PACKAGE).parent.parts))
    names = set()
    for node in (ast.walk(tree) if nested else tree.body):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {name for name in names if name == "dcod" or name.startswith("dcod.")}


def _closure(files: list[Path]) -> set[Path]:
    """The source files ``files`` run: what they import, transitively. A package is taken whole (its
    ``__init__`` may load its modules by name: dcod.methods discovers its methods), the entry point only
    with its module-level imports; the parent packages of a module run when it is imported."""
    todo, seen = list(files), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.name == "__init__.py" and path.parent != PACKAGE:
            todo += path.parent.rglob("*.py")
        for parent in path.relative_to(PACKAGE).parents:
            todo.append(PACKAGE / parent / "__init__.py")
        entry = path.parent == PACKAGE and path.name in ENTRY_POINT
        for name in _dcod_imports(path, nested=not entry):
            if (module := _module_file(name)) is not None:
                todo.append(module)
    return {path for path in seen if path.is_file()}


def stage_sources(code: str) -> list[Path]:
    """The package files of a stage group: ``report`` -- dcod.reporting and what it imports; a group of
    OWN_GROUP (``shipped``) -- its module and what it imports; ``pipeline`` -- every other module (a stage may
    load any of them: the methods are discovered by name) and what those import. Data files of the package
    (benchmark declarations) count for all."""
    if code not in ("pipeline", "report", *OWN_GROUP):
        raise ValueError(f"unknown stage code {code!r}: expected pipeline, report or {', '.join(OWN_GROUP)}")
    python = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    reporting = PACKAGE / "reporting"
    own = {PACKAGE / name for name in OWN_GROUP.values()}
    if code == "report":
        entries = [p for p in python if p.is_relative_to(reporting)]
    elif code in OWN_GROUP:
        entries = [PACKAGE / OWN_GROUP[code]]
    else:
        entries = [p for p in python if not p.is_relative_to(reporting) and p not in own]
    entries += [PACKAGE / name for name in ENTRY_POINT]
    data = [p for p in PACKAGE.rglob("*.yaml") if "__pycache__" not in p.parts]
    return sorted(_closure(entries) | set(data))


@functools.lru_cache(maxsize=None)
def code_fingerprint(code: str) -> str:
    """SHA-256 over a stage group's source files (relative path and content, sorted): a Snakemake param of
    every rule of that group (once per process)."""
    digest = hashlib.sha256()
    for path in stage_sources(code):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(PACKAGE).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def profile_fingerprint(profile, stage: str) -> str:
    """SHA-256 of the resolved profile (defaults filled in, comments and key order irrelevant) without the
    sections ``stage`` never reads (PROFILE_IGNORED)."""
    if stage not in PROFILE_IGNORED:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(PROFILE_IGNORED)}")
    data = {key: value for key, value in profile.model_dump(mode="json").items()
            if key not in PROFILE_IGNORED[stage]}
    for section, keys in PROFILE_DAG_KEYS.items():
        if section in data:
            data[section] = {k: v for k, v in data[section].items() if k not in keys}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
