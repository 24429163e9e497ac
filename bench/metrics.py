"""Picture metrics against a known ideal: PSNR, SSIM, and the constant time shift that fits best."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 100.0  # identical frames have infinite PSNR; averages use this instead


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical frames."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def mean_psnr(values: Sequence[float]) -> float:
    """Mean of per-frame PSNRs, each capped at ``PSNR_CAP``."""
    return float(np.mean([min(v, PSNR_CAP) for v in values])) if values else math.nan


class SSIM:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, per RGB channel, averaged."""

    def __init__(self, window: int = 11, sigma: float = 1.5, peak: float = 255.0) -> None:
        x = torch.arange(window, dtype=torch.float64) - window // 2
        g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
        self.kernel = (g / g.sum()).float()
        self.c1, self.c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2

    def _blur(self, v: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        v = F.conv2d(v, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        return F.conv2d(v, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)

    @torch.inference_mode()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        if a.shape != b.shape:
            raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
        # Centred values keep the float32 variances (E[x^2] - E[x]^2) free of cancellation error.
        x = torch.from_numpy(a.astype(np.float32) - 128.0).permute(2, 0, 1).unsqueeze(0)
        y = torch.from_numpy(b.astype(np.float32) - 128.0).permute(2, 0, 1).unsqueeze(0)
        mx, my = self._blur(x), self._blur(y)
        vx = self._blur(x * x) - mx * mx
        vy = self._blur(y * y) - my * my
        cov = self._blur(x * y) - mx * my
        mx, my = mx + 128.0, my + 128.0  # the luminance term needs the true means
        s = ((2 * mx * my + self.c1) * (2 * cov + self.c2)) / ((mx * mx + my * my + self.c1) * (vx + vy + self.c2))
        return float(s.mean())


def shift_grid(lo: float = -1.0, hi: float = 3.0, step: float = 0.25) -> list[float]:
    """Candidate delays in input frames: ``lo, lo + step, ..., hi``."""
    n = int(round((hi - lo) / step))
    return [lo + i * step for i in range(n + 1)]


@dataclass
class ShiftFit:
    """PSNR/SSIM against the ideal, at zero shift and at the constant delay that maximises mean PSNR."""

    psnr: float
    ssim: float
    best_shift: float
    psnr_at_best: float
    ssim_at_best: float
    psnr_by_shift: dict[float, float]
    frame_psnr: list[float]  # per output frame, zero shift
    frame_psnr_at_best: list[float]


def fit_shift(outputs: Sequence[np.ndarray], times: Sequence[float], ideal: Callable[[float], np.ndarray],
              shifts: Sequence[float], ssim: SSIM | None = None) -> ShiftFit:
    """Compare output frame ``k`` with ``ideal(times[k] - s)`` for every shift ``s`` (a delay, input frames).

    A positive best shift means the output shows motion that late. Ties go to the smallest
    absolute shift.
    """
    if len(outputs) != len(times):
        raise ValueError("one time per output frame")
    ssim = ssim or SSIM()
    per_shift = {s: [psnr(o, ideal(t - s)) for o, t in zip(outputs, times)] for s in shifts}
    means = {s: mean_psnr(v) for s, v in per_shift.items()}
    best = max(sorted(means, key=abs), key=lambda s: means[s])
    zero = per_shift[0.0] if 0.0 in per_shift else [psnr(o, ideal(t)) for o, t in zip(outputs, times)]
    ssim0 = float(np.mean([ssim(o, ideal(t)) for o, t in zip(outputs, times)]))
    ssim_best = ssim0 if best == 0.0 else float(np.mean([ssim(o, ideal(t - best)) for o, t in zip(outputs, times)]))
    return ShiftFit(mean_psnr(zero), ssim0, best, means[best], ssim_best, means, zero, per_shift[best])
