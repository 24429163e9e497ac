"""A description of the machine a benchmark ran on, for the result files and the docs."""

from __future__ import annotations

import os
import platform

import torch

from ..core.precision import NATIVE_BF16_FLAGS, CpuInfo


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def describe() -> dict:
    """CPU, core count, whether it computes bf16 natively, GPU (if any), library versions, threads and the
    current load average."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": CpuInfo.of_this_machine().native_bf16()[0],  # AVX512-BF16 / AMX: what auto decides by
        "cpu_bf16_flags": sorted(set(NATIVE_BF16_FLAGS) & CpuInfo.of_this_machine().flags),
        "load_average": load_average(),
    }
