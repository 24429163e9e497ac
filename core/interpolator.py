"""The model-facing interface the pipeline uses: frames in, frames at times ``ts`` out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .frames import Padder, check_frame, to_array, to_tensor

ALLOWED_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def check_scale(scale: float) -> float:
    """The flow scale must be one the networks' strides can divide evenly."""
    if float(scale) not in ALLOWED_SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(str, ALLOWED_SCALES))}, got {scale}")
    return float(scale)


@dataclass
class CallStats:
    """Counters the benchmarks and tests read: model evaluations and pairs seen."""

    model_calls: int = 0  # one per interpolated output frame
    pairs: int = 0  # one per (x, y) pair handed to the model


class Interpolator(ABC):
    """A loaded frame-interpolation network on one device.

    Tensors are 1x3xHxW BGR float in [0, 1] with H and W a multiple of ``alignment(scale)``;
    ``interpolate`` is the array-level convenience that pads and crops itself.
    """

    name: str = ""
    base_alignment: int = 64

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device = device
        self.dtype = dtype
        self.stats = CallStats()

    def alignment(self, scale: float = 1.0) -> int:
        """Frame sizes the network accepts at this flow scale are multiples of this."""
        return max(32, int(self.base_alignment / check_scale(scale)))

    def to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        return to_tensor(frame, self.device, self.dtype)

    @torch.inference_mode()
    def interpolate_tensors(self, x: torch.Tensor, y: torch.Tensor, ts: Sequence[float],
                            scale: float = 1.0) -> list[torch.Tensor]:
        """Model output at each t in ``ts`` (0 < t < 1 is typical; 0 and 1 are evaluated, not copied)."""
        if not ts:
            return []
        self.stats.pairs += 1
        self.stats.model_calls += len(ts)
        return self._infer(x, y, list(ts), check_scale(scale))

    @abstractmethod
    def _infer(self, x: torch.Tensor, y: torch.Tensor, ts: list[float], scale: float) -> list[torch.Tensor]:
        """Run the network for one pair at several times."""

    def interpolate(self, f0: np.ndarray, f1: np.ndarray, ts: Sequence[float], scale: float = 1.0) -> list[np.ndarray]:
        """HxWx3 uint8/uint16 RGB frames in, one frame of the same size and dtype per t out."""
        check_frame(f0)
        check_frame(f1)
        if f0.shape != f1.shape or f0.dtype != f1.dtype:
            raise ValueError(f"frames differ: {f0.shape} {f0.dtype} vs {f1.shape} {f1.dtype}")
        padder = Padder(f0.shape[0], f0.shape[1], self.alignment(scale))
        x = padder.pad(self.to_tensor(f0))
        y = padder.pad(self.to_tensor(f1))
        outs = self.interpolate_tensors(x, y, ts, scale)
        return [to_array(padder.crop(o), f0.dtype) for o in outs]
