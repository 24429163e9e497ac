"""Resolution-independent drawing: signed distances (in pixels) and anti-aliased compositing.

Every shape is an analytic function of continuous coordinates, so a picture translated by a
fraction of a pixel is rendered exactly, which is what a ground truth for motion needs.
"""

from __future__ import annotations

import numpy as np

Colour = tuple[float, float, float]


def coverage(sd: np.ndarray, pixel: float = 1.0) -> np.ndarray:
    """Fraction of a pixel inside a shape whose signed distance (negative inside) is ``sd``."""
    return np.clip(0.5 - sd / pixel, 0.0, 1.0)


def ellipse_sd(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (first order, exact on the boundary)."""
    dx, dy = (x - cx) / a, (y - cy) / b
    f = np.sqrt(dx * dx + dy * dy)
    grad = np.sqrt((dx / a) ** 2 + (dy / b) ** 2) / np.maximum(f, 1e-6)
    return (f - 1.0) / np.maximum(grad, 1e-6)


def segment_sd(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
               half_width: float) -> np.ndarray:
    """Signed distance to a straight stroke of the given half width."""
    ax, ay = p0
    bx, by = p1
    vx, vy = bx - ax, by - ay
    h = np.clip(((x - ax) * vx + (y - ay) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(x - ax - h * vx, y - ay - h * vy) - half_width


def stroke_sd(sd: np.ndarray, half_width: float) -> np.ndarray:
    """A line of the given half width centred on the boundary of a shape."""
    return np.abs(sd) - half_width


def paint(canvas: np.ndarray, cover: np.ndarray, colour: Colour | np.ndarray) -> None:
    """Composite ``colour`` over ``canvas`` (HxWx3 float) with per-pixel coverage in [0, 1], in place."""
    cover = np.broadcast_to(cover, canvas.shape[:2])
    rows = np.flatnonzero(cover.any(axis=1))
    if rows.size == 0:
        return
    band = slice(rows[0], rows[-1] + 1)
    target = canvas[band]
    c = cover[band][..., None]
    target += c * (np.asarray(colour, dtype=canvas.dtype) - target)


class Waves:
    """A smooth 1-D curve: a sum of sines, with its derivative (for slope-corrected distances)."""

    def __init__(self, rng: np.random.Generator, count: int, amplitude: float, period_range: tuple[float, float]):
        self.amp = amplitude * rng.uniform(0.4, 1.0, count) / count ** 0.5
        self.freq = 2 * np.pi / rng.uniform(*period_range, count)
        self.phase = rng.uniform(0, 2 * np.pi, count)

    def value(self, u: np.ndarray) -> np.ndarray:
        return sum(a * np.sin(f * u + p) for a, f, p in zip(self.amp, self.freq, self.phase))

    def slope(self, u: np.ndarray) -> np.ndarray:
        return sum(a * f * np.cos(f * u + p) for a, f, p in zip(self.amp, self.freq, self.phase))


class Texture2D:
    """Band-limited 2-D brush texture: a sum of plane waves in random directions."""

    def __init__(self, rng: np.random.Generator, count: int, amplitude: float, period_range: tuple[float, float]):
        angle = rng.uniform(0, np.pi, count)
        k = 2 * np.pi / rng.uniform(*period_range, count)
        self.kx, self.ky = k * np.cos(angle), k * np.sin(angle)
        self.amp = amplitude * rng.uniform(0.5, 1.0, count) / count ** 0.5
        self.phase = rng.uniform(0, 2 * np.pi, count)

    def value(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Texture at world coordinates ``u`` (a row, 1xW) and ``v`` (a column, Hx1)."""
        out = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=np.float32)
        for kx, ky, a, p in zip(self.kx, self.ky, self.amp, self.phase):
            # sin(A + B) = sin A cos B + cos A sin B keeps the per-pixel work to products of 1-D tables
            ua, vb = kx * u + p, ky * v
            out += (a * np.sin(ua)).astype(np.float32) * np.cos(vb).astype(np.float32)
            out += (a * np.cos(ua)).astype(np.float32) * np.sin(vb).astype(np.float32)
        return out
