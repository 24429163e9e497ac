"""Classic dedup, as other tools do it: drop near-duplicate frames, keep the rest at their times, interpolate.

Each kept frame stays at its original time; every output time between two kept frames is
interpolated between them at the fraction of the gap it lies at. This fixes one character on
twos, but a frame counts as a duplicate only when *nothing* moved, so characters on different
cadences or a panning background defeat it.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from ..core.models.base import Interpolator
from ..core.pipeline.scene import SceneDetector

_PEAK = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def mean_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames on a 0..255 scale, whatever their bit depth."""
    scale = 255.0 / _PEAK[a.dtype]
    return float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32)))) * scale


class ClassicDedup:
    """Drop frames within ``threshold`` (mean abs difference, 0..255) of the last kept one; re-time; interpolate."""

    def __init__(self, model: Interpolator, threshold: float = 1.0, scdet: bool = True, scdet_threshold: float = 0.3,
                 scale: float = 1.0) -> None:
        self.model = model
        self.threshold = threshold
        self.scene = SceneDetector(scdet_threshold) if scdet else None
        self.scale = scale

    def kept_indices(self, frames: Sequence[np.ndarray]) -> list[int]:
        """Indices of the frames that survive deduplication (the first frame always does)."""
        kept = [0]
        for i in range(1, len(frames)):
            if mean_abs_difference(frames[kept[-1]], frames[i]) > self.threshold:
                kept.append(i)
        return kept

    def _is_cut(self, a: np.ndarray, b: np.ndarray) -> bool:
        if self.scene is None:
            return False
        return self.scene.is_change(self.model.to_tensor(a), self.model.to_tensor(b))

    def run(self, frames: Sequence[np.ndarray], ratio: Fraction, count: int) -> list[np.ndarray]:
        """``count`` output frames, frame ``k`` at input time ``k / ratio``; after the last kept frame it is held."""
        kept = self.kept_indices(frames)
        times = [Fraction(k) / ratio for k in range(count)]
        out: list[np.ndarray] = []
        k = 0
        for a, b in zip(kept, kept[1:]):
            ts = []
            while k < count and times[k] < b:
                ts.append((times[k] - a) / (b - a))
                k += 1
            out += self._between(frames[a], frames[b], ts)
        out += [frames[kept[-1]]] * (count - k)
        return out

    def _between(self, fa: np.ndarray, fb: np.ndarray, ts: list[Fraction]) -> list[np.ndarray]:
        if not ts:
            return []
        if self._is_cut(fa, fb):
            return [fa] * len(ts)
        inner = [float(t) for t in ts if t != 0]
        made = iter(self.model.interpolate(fa, fb, inner, self.scale) if inner else [])
        return [fa if t == 0 else next(made) for t in ts]

