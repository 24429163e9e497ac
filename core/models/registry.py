"""``load_model``: build a network, load its weights from the weight store, put it on a device."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ...weights import WeightStore
from .base import Interpolator

log = logging.getLogger(__name__)


class UnknownModelError(ValueError):
    """The requested model name is not one this engine provides."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present; a CUDA request on a machine without it falls back to the CPU."""
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA requested but not available; running on the CPU")
        return torch.device("cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")
    return dev


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pkl`` state dict saved from CUDA tensors; strips a DataParallel ``module.`` prefix."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items() if k.startswith("module.")}
    return sd


def _build_rife(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> Interpolator:
    from .rife import RifeInterpolator

    return RifeInterpolator.from_files(files, device, dtype)


def _build_gmfss(files: dict[str, Path], device: torch.device, dtype: torch.dtype) -> Interpolator:
    from .gmfss import GmfssInterpolator

    return GmfssInterpolator.from_files(files, device, dtype)


MODEL_BUILDERS: dict[str, Callable[[dict[str, Path], torch.device, torch.dtype], Interpolator]] = {
    "rife": _build_rife,
    "gmfss": _build_gmfss,
}


def available_models() -> list[str]:
    return sorted(MODEL_BUILDERS)


def load_model(name: str, device: str | torch.device = "cpu", weights_dir: str | Path | None = None,
               half: bool = False) -> Interpolator:
    """Load ``rife`` or ``gmfss`` with the default weights (or those in ``weights_dir``).

    ``half`` (fp16) is honoured on CUDA only; the CPU always runs fp32.
    """
    if name not in MODEL_BUILDERS:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    dev = resolve_device(device)
    dtype = torch.float16 if (half and dev.type == "cuda") else torch.float32
    if half and dev.type != "cuda":
        log.warning("fp16 requested on %s; using fp32", dev)
    store = WeightStore(Path(weights_dir)) if weights_dir is not None else WeightStore()
    files = store.files_for(name)
    return MODEL_BUILDERS[name](files, dev, dtype)
