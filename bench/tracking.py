"""Follow a character through frames by its unique body colour, and measure how evenly it moves."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .synthetic import Colour

Point = tuple[float, float]


@dataclass(frozen=True)
class Sighting:
    """Where a colour patch was found (centroid, px) and how many pixels' worth of it there was."""

    x: float
    y: float
    weight: float


def track_colour(frame: np.ndarray, colour: Colour, tolerance: float = 40.0,
                 min_weight: float = 20.0) -> Sighting | None:
    """Centroid of the pixels close to ``colour`` (RGB distance below ``tolerance``), or None if too few.

    Each pixel counts with weight ``1 - distance / tolerance``: an anti-aliased edge pixel then
    counts roughly by how much of it the colour covers, which keeps the centroid sub-pixel accurate.
    """
    diff = frame.astype(np.float32) - np.asarray(colour, np.float32)
    distance = np.sqrt((diff * diff).sum(axis=2))
    w = np.clip(1.0 - distance / tolerance, 0.0, None)
    total = float(w.sum())
    if total < min_weight:
        return None
    ys, xs = np.indices(w.shape, dtype=np.float64)
    return Sighting(float((w * xs).sum() / total), float((w * ys).sum() / total), total)


@dataclass(frozen=True)
class MotionScore:
    """Judder and lag of one character over one sequence of output frames."""

    judder_px: float  # std of (measured - ideal) per-frame displacement, px
    lag_frames: float  # constant delay (input frames) that best aligns tracked and ideal positions
    position_rms_px: float  # RMS distance from the ideal position at zero delay
    coverage: float  # mean tracked weight / ideal weight (below 1: ghosted or blurred)
    pairs: int  # consecutive frame pairs that entered the judder figure
    lost: int  # frames where the character should be visible but was not found


def judder(measured: Sequence[Point | None], ideal: Sequence[Point], segment: Sequence[int]) -> tuple[float, int]:
    """Spread of the per-frame displacement error; pairs that cross a segment boundary or lack a sighting are skipped.

    The ideal displacement is subtracted first, so a path whose speed varies smoothly scores 0.
    """
    errors = []
    for k in range(len(measured) - 1):
        a, b = measured[k], measured[k + 1]
        if a is None or b is None or segment[k] != segment[k + 1]:
            continue
        errors.append((b[0] - a[0] - (ideal[k + 1][0] - ideal[k][0]), b[1] - a[1] - (ideal[k + 1][1] - ideal[k][1])))
    if len(errors) < 2:
        return math.nan, len(errors)
    e = np.asarray(errors)
    spread = e - e.mean(axis=0)
    return float(np.sqrt((spread ** 2).sum(axis=1).mean())), len(errors)


def best_lag(measured: Sequence[Point | None], times: Sequence[float], ideal_at, lags: Sequence[float]) -> float:
    """The constant delay ``s`` minimising the distance between sightings and ``ideal_at(t - s)``."""
    found = [(m, t) for m, t in zip(measured, times) if m is not None]
    if not found:
        return math.nan
    pts = np.asarray([m for m, _ in found])
    best, best_err = math.nan, math.inf
    for s in lags:
        ref = np.asarray([ideal_at(t - s) for _, t in found])
        err = float(((pts - ref) ** 2).sum())
        if err < best_err - 1e-9:
            best, best_err = float(s), err
    return best
