"""Which machine produced a number: CPU, float-kernel path, threads, torch build, accelerator.

Floats depend on the kernels a CPU runs (AVX-512 with or without AMX, AVX2) and on the thread count,
so the same seed gives bit-identical results only on the same kind of machine
(docs/reproducibility.md). Every run and evaluation records ``machine_info()``; tables carry its
one-line ``machine_label`` so that a published number always says where it came from.
"""

from __future__ import annotations

import functools
import os
import platform

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
