"""Shared fixtures: golden cases, loaded models (once per session), tiny synthetic clips."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "golden"


def load_golden(name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """(input frames, reference output frames, params) of one golden case."""
    z = np.load(GOLDEN / f"{name}.npz")
    return z["input"], z["output"], json.loads(str(z["params"]))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 frames (inf when identical)."""
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="session")
def rife():
    from multipassdedup.core import load_model

    return load_model("rife", device="cpu", precision="fp32")  # the exact mode the golden cases pin


@pytest.fixture(scope="session")
def gmfss():
    from multipassdedup.core import load_model

    return load_model("gmfss", device="cpu", precision="fp32")


def moving_clip(n: int, height: int = 64, width: int = 128, step: int = 3, seed: int = 0) -> list[np.ndarray]:
    """A textured background panning ``step`` px per frame with a dark square moving on twos."""
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


@pytest.fixture
def work_dir():
    """A fresh folder outside pytest's tmp_path (short enough for unix socket paths), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="mpd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
