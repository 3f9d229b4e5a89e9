"""The machine a benchmark ran on, named in every table's setup line.

Ratios between variants of one run are what the tables compare, but how far a ratio is
from its FLOPs ideal depends on the machine (how fast its small matmuls, attention kernels and
elementwise ops run next to its large matmuls), so each figure says where it was measured:

    describe("cpu")    -> "AMD EPYC CPU (avx512_bf16; 2 threads on 2 cores)"
    describe("cuda")   -> "NVIDIA A100-SXM4-80GB (CUDA 12.4)"
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# strongest first: the instruction set a bf16 matmul can use on an x86 CPU (flags of /proc/cpuinfo)
_BF16_ISA = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_name() -> tuple[str, str | None]:
    """The CPU's model name and the strongest bf16 matmul instruction set it has (None: none of ours)."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown"
    flags = set(info.get("flags", "").split())
    return name, next((f for f in _BF16_ISA if f in flags), None)


def describe(device: str = "cpu") -> str:
    """One phrase naming the device the figures come from (the CPU with the threads torch uses, or the GPU)."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        return f"{torch.cuda.get_device_name(index)} (CUDA {torch.version.cuda})"
    name, isa = cpu_name()
    threads = torch.get_num_threads()
    cores = os.cpu_count() or threads
    return f"{name} CPU ({isa + '; ' if isa else ''}{threads} threads on {cores} cores)"
