"""Numeric precision of a model's arithmetic: fp32, bf16 or fp16, chosen once per loaded model.

Weights and the frames the pipeline holds stay fp32 in every precision; bf16 and fp16 run the
network calls under ``torch.autocast`` (convolutions, matmuls and what follows them in the lower
precision), and the parts that measurably lose quality there run as fp32 islands
(``fp32_island``), chosen per model in the model code (docs/studies/bf16-precision.md):

- GMFSS: all of GMFlow (backbone, transformer, matching; alone in bf16 each fails the golden pairs).
- RIFE: IFNet blocks 0-2 (in bf16 they fail the golden run that interpolates across a cut).
- Both: flow and mask accumulation between IFNet blocks, softmax splatting's weights, sums and
  normalisation, backward warping, and the final blend/clamp (outputs are cast to fp32).

``auto`` picks fp16 on CUDA and, on a CPU, bf16 only for a model whose bf16 passes the golden
pipeline runs *and* gains speed there (``Interpolator.auto_cpu_bf16``); else fp32, with the reason.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (AVX512-BF16/AMX on a CPU; Ampere and later on CUDA)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(requested: str, device: torch.device, supported: tuple[str, ...],
                      auto_cpu_bf16: str, model: str = "this model") -> PrecisionChoice:
    """What a model runs in on ``device`` when ``requested`` (auto/fp32/bf16/fp16) is asked.

    ``supported``: the precisions the model was measured in (others raise ValueError).
    ``auto_cpu_bf16``: empty when the model's bf16 holds the quality bar and gains speed on a CPU,
    else the reason auto keeps it in fp32 there. fp16 on a CPU falls back to fp32 (as ``half`` did).
    """
    requested = check_precision(requested)
    if requested == "auto":
        if device.type == "cuda" and "fp16" in supported:
            return PrecisionChoice("fp16", "auto on CUDA")
        if device.type == "cuda":
            return PrecisionChoice("fp32", f"auto: the model runs in {'/'.join(supported)} only")
        if "bf16" not in supported:
            return PrecisionChoice("fp32", f"auto: the model runs in {'/'.join(supported)} only")
        if not native_bf16(device):
            return PrecisionChoice("fp32", "auto: this CPU does not compute bf16 natively")
        if auto_cpu_bf16:
            return PrecisionChoice("fp32", f"auto: {auto_cpu_bf16}")
        return PrecisionChoice("bf16", "auto: this CPU computes bf16 natively")
    if requested not in supported:
        raise ValueError(f"{model} runs in {'/'.join(supported)} only (its quality in {requested} is not "
                         f"measured), got precision {requested}")
    if requested == "fp16" and device.type != "cuda":
        return PrecisionChoice("fp32", "fp16 runs on CUDA only; using fp32 on the CPU")
    if requested == "bf16" and not native_bf16(device):
        if device.type == "cuda":
            return PrecisionChoice("fp32", "this GPU does not compute bf16; using fp32")
        return PrecisionChoice("bf16", "asked for; this CPU has no native bf16, so it is emulated (slow)")
    return PrecisionChoice(requested, "asked for")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The context a model's network calls run in: autocast to bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def fp32_island(device: torch.device) -> AbstractContextManager:
    """Autocast off: what runs inside computes in the dtype of its inputs (pass them ``.float()``)."""
    return torch.autocast(device.type, enabled=False)
