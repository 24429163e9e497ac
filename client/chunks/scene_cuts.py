"""Scene cuts found on the client, without torch: the engine's test (core/pipeline/scene.py) in numpy.

The engine calls a pair a cut when the SSIM of the two frames, shrunk bilinearly to 32x32 and
compared through an 11x11x11 Gaussian window that treats colour as depth, falls below the
threshold. This module computes the same number in float64 (the engine computes it in float32,
or on a GPU): a chunked job splits only where this SSIM is below the threshold by ``margin``,
so that the engine certainly sees a cut there too. A cut it misses costs nothing (the session
sees it itself); a cut the engine did not see would change the output, and the margin rules it out.
"""

from __future__ import annotations

import numpy as np

SSIM_SIZE = 32
WINDOW = 11
SIGMA = 1.5
C1, C2 = 0.01 ** 2, 0.03 ** 2
#: How far below the threshold a pair's SSIM must be for a chunked job to split there.
CUT_MARGIN = 0.02


def _gaussian() -> np.ndarray:
    x = np.arange(WINDOW, dtype=np.float64) - WINDOW // 2
    g = np.exp(-(x ** 2) / (2 * SIGMA ** 2))
    return g / g.sum()


def _source_index(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear (align_corners=False, no antialias) sample positions: lower index, upper index, weight."""
    scale = in_size / out_size
    src = np.maximum((np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, src - lo


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8/uint16 RGB frame as the engine's 3x32x32 image in [0, 1] (float64)."""
    top = 65535.0 if frame.dtype == np.uint16 else 255.0
    h, w = frame.shape[:2]
    y0, y1, wy = _source_index(SSIM_SIZE, h)
    x0, x1, wx = _source_index(SSIM_SIZE, w)
    rows = frame[y0].astype(np.float64) * (1 - wy)[:, None, None] + frame[y1].astype(np.float64) * wy[:, None, None]
    img = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.ascontiguousarray(img.transpose(2, 0, 1)) / top


def _blur(v: np.ndarray) -> np.ndarray:
    """The 3-D Gaussian blur with replicate padding, separably (the engine's 11x11x11 kernel is their product):
    along each axis every window of 11 samples times the (symmetric) kernel, as one matrix product."""
    p = WINDOW // 2
    g = _gaussian()
    v = np.pad(v, p, mode="edge")
    for axis in range(3):
        v = np.lib.stride_tricks.sliding_window_view(v, WINDOW, axis=axis) @ g
    return v


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The engine's SSIM of two thumbnails."""
    mu_a, mu_b = _blur(a), _blur(b)
    var_a = _blur(a * a) - mu_a ** 2
    var_b = _blur(b * b) - mu_b ** 2
    cov = _blur(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2))
    return float(m.mean())


class CutFinder:
    """Feed frames in order; ``cuts`` are the indices of the frames that certainly start a new shot."""

    def __init__(self, threshold: float, margin: float = CUT_MARGIN) -> None:
        self.limit = threshold - margin
        self.cuts: list[int] = []
        self.frames = 0
        self._previous: np.ndarray | None = None

    def push(self, frame: np.ndarray) -> None:
        thumb = thumbnail(frame)
        if self._previous is not None and ssim(self._previous, thumb) < self.limit:
            self.cuts.append(self.frames)
        self._previous = thumb
        self.frames += 1
