"""Frames the tests feed and compare: the test clips' size and rate, PSNR, a moving clip, the golden cases."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FILM = Fraction(24000, 1001)  # the usual source rate of anime: 23.976 fps
H, W = 64, 128  # the small frames most tests use: large enough for every model's alignment, fast on one core


def psnr(a: np.ndarray, b: np.ndarray, peak: float | None = None) -> float:
    """PSNR in dB of two frames (inf when identical). The peak is the largest value of the frames' type (65535
    for uint16, 255 otherwise) unless given, e.g. 1023 for 10-bit samples stored in 16 bits."""
    if peak is None:
        peak = 65535.0 if a.dtype == np.uint16 else 255.0
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def moving_clip(n: int, height: int = H, width: int = W, step: int = 3, seed: int = 0) -> list[np.ndarray]:
    """``n`` rgb24 frames: a textured background panning ``step`` px per frame with a dark square moving on twos."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((height, width * 3, 3)) * 60 + 120).astype(np.uint8)
    bg = np.repeat(np.repeat(bg[::4, ::4], 4, 0), 4, 1)[:height]
    frames = []
    for i in range(n):
        f = bg[:, i * step: i * step + width].copy()
        x = 10 + (i // 2) * 8
        f[height // 3: height // 3 + 16, x: x + 16] = (30, 40, 200)
        frames.append(np.ascontiguousarray(f))
    return frames


def load_golden(name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(input frames, reference output frames, params) of one golden case in ``tests/golden/``."""
    z = np.load(GOLDEN / f"{name}.npz")
    return z["input"], z["output"], json.loads(str(z["params"]))
