"""Numeric precision of a model's arithmetic: fp32, bf16 or fp16, chosen once per loaded model.

Weights and the frames the pipeline holds stay fp32 in every precision; bf16 and fp16 run the
network calls under ``torch.autocast`` with the networks' weights held in that dtype (convolutions,
matmuls and what follows them compute in the lower precision), and the parts that measurably lose
quality there run as fp32 islands, chosen per model in the model code (docs/design.md, *Precision*):

- GMFSS: GMFlow's CNN backbone, its transformer at the coarse (1/8) scale and its matching head.
- Both: flow and mask accumulation between IFNet blocks, softmax splatting's weights, sums and
  normalisation, backward warping, and the final blend/clamp (outputs are cast to fp32).

fp32 is the exact mode: it reproduces the reference program (the golden cases). ``auto`` picks fp16 on
CUDA and, on a CPU, bf16 only where the CPU computes it natively (``CpuInfo``: an x86 CPU with
AVX512-BF16 or AMX-BF16) and the model's bf16 keeps its picture (``Interpolator.auto_cpu_bf16``); else
fp32. Outputs therefore differ between CPUs with and without native bf16, as between a CPU and a GPU.
"""

from __future__ import annotations

import platform
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..settings import PRECISIONS as CHOICES

PRECISIONS = CHOICES[1:]  # fp32, bf16, fp16: what "auto" resolves to
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a model runs in, and why (the log line says it once)."""

    precision: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def check_precision(text: str) -> str:
    """``text`` as one of auto, fp32, bf16, fp16; ValueError with the choices otherwise."""
    value = str(text).strip().lower()
    if value not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, got {text!r}")
    return value


# The x86 CPU flags (Linux /proc/cpuinfo names) of instructions that compute bf16 natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class CpuInfo:
    """What ``auto`` needs to know of a CPU: its architecture (``platform.machine()``) and its feature flags."""

    machine: str
    flags: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, cpuinfo: str, machine: str) -> CpuInfo:
        """From the text of Linux's /proc/cpuinfo (the first ``flags`` line; ARM calls it ``Features``)."""
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return cls(machine, frozenset(value.split()))
        return cls(machine)

    @classmethod
    def of_this_machine(cls, cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
        """This machine's CPU; no flags where ``cpuinfo`` cannot be read (not Linux)."""
        try:
            text = cpuinfo.read_text(errors="replace")
        except OSError:
            text = ""
        return cls.parse(text, platform.machine())

    def native_bf16(self) -> tuple[bool, str]:
        """Whether this CPU computes bf16 natively, and why (said in the log): an x86 CPU with one of
        ``NATIVE_BF16_FLAGS``. Elsewhere bf16 is emulated or takes other paths that were not measured."""
        if self.machine.lower() not in X86:
            return False, f"bf16 is taken as native only on x86 CPUs with AVX512-BF16 or AMX, this is {self.machine}"
        found = [f for f in NATIVE_BF16_FLAGS if f in self.flags]
        if not found:
            return False, "this CPU does not compute bf16 natively (no avx512_bf16 or amx_bf16 among its flags)"
        return True, f"this CPU computes bf16 natively ({', '.join(found)})"


def native_bf16(device: torch.device, cpu: CpuInfo | None = None) -> bool:
    """Whether ``device`` computes bf16 in hardware (on a CPU: ``CpuInfo.native_bf16``; Ampere and later on CUDA)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return (cpu or CpuInfo.of_this_machine()).native_bf16()[0]


def resolve_precision(requested: str, device: torch.device, supported: tuple[str, ...],
                      auto_cpu_bf16: tuple[bool, str], model: str = "this model",
                      cpu: CpuInfo | None = None) -> PrecisionChoice:
    """What a model runs in on ``device`` when ``requested`` (auto/fp32/bf16/fp16) is asked.

    ``supported``: the precisions the model was measured in (others raise ValueError).
    ``auto_cpu_bf16``: whether ``auto`` may pick bf16 for the model on a CPU that computes it natively, and
    the measured reason either way. ``cpu``: the CPU to decide for (default: this machine's, from its flags).
    fp16 on a CPU falls back to fp32 (as ``half`` did).
    """
    requested = check_precision(requested)
    if requested == "auto":
        if device.type == "cuda" and "fp16" in supported:
            return PrecisionChoice("fp16", "auto on CUDA")
        if device.type == "cuda" or "bf16" not in supported:
            return PrecisionChoice("fp32", f"auto: the model runs in {'/'.join(supported)} only")
        native, why = (cpu or CpuInfo.of_this_machine()).native_bf16()
        if not native:
            return PrecisionChoice("fp32", f"auto: {why}")
        allowed, because = auto_cpu_bf16
        return PrecisionChoice("bf16" if allowed else "fp32", f"auto: {why}; {because}")
    if requested not in supported:
        raise ValueError(f"{model} runs in {'/'.join(supported)} only (its quality in {requested} is not "
                         f"measured), got precision {requested}")
    if requested == "fp16" and device.type != "cuda":
        return PrecisionChoice("fp32", "fp16 runs on CUDA only; using fp32 on the CPU")
    if requested == "bf16" and not native_bf16(device, cpu):
        if device.type == "cuda":
            return PrecisionChoice("fp32", "this GPU does not compute bf16; using fp32")
        return PrecisionChoice("bf16", "asked for; this CPU has no native bf16, so it is emulated (slow)")
    return PrecisionChoice(requested, "asked for")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The context a model's network calls run in: autocast to bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])
