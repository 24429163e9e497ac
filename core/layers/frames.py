"""Conversions between HxWx3 RGB arrays (uint8 or uint16) and the models' 1x3xHxW BGR float tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def check_frame(frame: np.ndarray) -> None:
    """Raise ValueError unless ``frame`` is an HxWx3 uint8 or uint16 array."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise ValueError(f"a frame must be an HxWx3 RGB array, got shape {shape}")
    if frame.dtype not in _MAX:
        raise ValueError(f"a frame must be uint8 or uint16, got {frame.dtype}")


def to_tensor(frame: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """HxWx3 RGB uint8/uint16 -> 1x3xHxW BGR in [0, 1] (the order the models were trained on)."""
    check_frame(frame)
    scale = _MAX[frame.dtype]
    bgr = np.ascontiguousarray(frame[:, :, ::-1])
    t = torch.from_numpy(bgr.astype(np.float32) if frame.dtype == np.uint16 else bgr)
    t = t.to(device=device, non_blocking=True).permute(2, 0, 1).unsqueeze(0)
    return (t.to(dtype) / scale).contiguous()


def to_array(t: torch.Tensor, out_dtype: np.dtype = np.uint8) -> np.ndarray:
    """1x3xHxW BGR float in [0, 1] -> HxWx3 RGB array of ``out_dtype``, rounded."""
    scale = _MAX[np.dtype(out_dtype)]
    x = t[0].float().clamp(0, 1).mul(scale).round_().flip(0).permute(1, 2, 0)
    return x.to("cpu").numpy().astype(out_dtype)


class Padder:
    """Pads frames on the right and bottom to a multiple of ``align`` (edge pixels repeated) and crops back.

    Padding rather than resizing keeps every source pixel exact; the padded strip only
    feeds the networks' receptive fields and is cut off on output.
    """

    def __init__(self, height: int, width: int, align: int) -> None:
        self.height, self.width = height, width
        self.pad_h = (-height) % align
        self.pad_w = (-width) % align

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        if not (self.pad_h or self.pad_w):
            return t
        return F.pad(t, (0, self.pad_w, 0, self.pad_h), mode="replicate")

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        return t[..., : self.height, : self.width]
