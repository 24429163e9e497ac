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


def unreadable_reason(path: Path) -> str | None:
    """Why ``path`` is not a checkpoint torch can read safely (empty, not a torch file, no tensors), None if it is.

    Reads the whole file (``torch.load`` with ``weights_only``); says nothing of whether a model accepts it.
    """
    import torch  # the weights tools (fetch, verify, list) run without torch

    if path.stat().st_size == 0:
        return "the file is empty"
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors alike: the file is not usable
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:120] or type(e).__name__
        return f"not a checkpoint torch can read ({first})"
    tensors = data.values() if isinstance(data, dict) else []
    if not any(isinstance(v, (torch.Tensor, dict)) for v in tensors):
        return "holds no weights (no tensors in it)"
    return None
