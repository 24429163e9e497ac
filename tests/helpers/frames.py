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


def centroid_x(frame: np.ndarray, colour: tuple[int, int, int] = (200, 40, 40)) -> float:
    """The mean column of the pixels within an RGB distance of 60 of ``colour`` (where a coloured square is)."""
    mask = np.abs(frame.astype(int) - colour).sum(axis=2) < 60
    return float(np.nonzero(mask)[1].mean())


def panning_shot(n: int, seed: int, step: int, height: int, width: int, square: int, top: int, start: int,
                 advance: int) -> list[np.ndarray]:
    """A smooth pattern (its frequencies drawn from ``seed``) panning ``step`` px a frame, with a textured square of
    ``square`` px at row ``top`` moving ``advance`` px on twos from column ``start``: a held drawing over a live
    background, one shot to the SSIM test."""
    rng = np.random.default_rng(seed)
    fx, fy = rng.uniform(1.5, 3.0), rng.uniform(1.0, 2.0)
    base, paint = rng.uniform(60, 180, 3), rng.uniform(0, 255, (square, square, 3))
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        u, v = (x + i * step) / width * 2 * np.pi, y / height * 2 * np.pi
        f = base + 50 * np.stack([np.sin(fx * u + fy * v), np.cos(fx * u - v), np.sin(u + fy * v)], -1)
        s = start + (i // 2) * advance
        f[top:top + square, s:s + square] = paint
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames
