"""Reading a checkpoint into a state dict; torch is imported when a model loads, so ``weights`` imports without it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a ``.pkl`` state dict saved from CUDA tensors; strips a DataParallel ``module.`` prefix."""
    import torch  # the weights tools (fetch, verify, list) run without torch

    sd = torch.load(path, map_location="cpu", weights_only=True)
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items() if k.startswith("module.")}
    return sd
