"""PSNR, SSIM and the time-shift search give the known answers on trivial inputs."""

import math

import numpy as np

from multipassdedup.bench.clips import make_clip
from multipassdedup.bench.metrics import PSNR_CAP, SSIM, fit_shift, mean_psnr, psnr, shift_grid


def test_psnr_identical_is_infinite_and_capped_in_means():
    a = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert psnr(a, a) == math.inf
    assert mean_psnr([math.inf, 40.0]) == (PSNR_CAP + 40.0) / 2


def test_psnr_known_value():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert abs(psnr(a, a + 1) - 10 * math.log10(255 ** 2)) < 1e-9  # MSE 1
    assert abs(psnr(a, a + 10) - 10 * math.log10(255 ** 2 / 100)) < 1e-9


def test_ssim_identical_is_one_and_drops_with_noise():
    rng = np.random.default_rng(1)
    a = np.broadcast_to(np.linspace(20, 230, 50)[None, :, None], (40, 50, 3)).astype(np.uint8)
    ssim = SSIM()
    assert abs(ssim(a, a) - 1.0) < 1e-6
    noisy = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, noisy) < 0.5


def test_ssim_of_flat_frames_is_the_luminance_term():
    x, y = np.full((20, 20, 3), 100, np.uint8), np.full((20, 20, 3), 150, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1)
    assert abs(SSIM()(x, y) - expected) < 1e-5


def test_shift_grid():
    assert shift_grid(-0.5, 1.0, 0.25) == [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]


def test_shift_search_recovers_a_known_delay():
    clip = make_clip("ones_pan", 128, 72, 8)
    times = [k * 0.4 for k in range(14)]
    delayed = [clip.ideal_frame(t - 0.75) for t in times]
    fit = fit_shift(delayed, times, clip.ideal_frame, shift_grid(-0.5, 1.5, 0.25))
    assert fit.best_shift == 0.75
    assert fit.psnr_at_best == PSNR_CAP and fit.ssim_at_best > 0.999999
    assert fit.psnr < 40 and fit.psnr_by_shift[0.5] < PSNR_CAP


def test_shift_search_prefers_zero_on_ties():
    frame = np.full((12, 12, 3), 50, np.uint8)
    fit = fit_shift([frame] * 3, [0.0, 1.0, 2.0], lambda t: frame, [-0.25, 0.0, 0.25])
    assert fit.best_shift == 0.0
