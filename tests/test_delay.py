"""compensate_delay: motion shown at its own time, same frame count, cuts at the time of the cut."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from multipassdedup.core import MultiPassDedup

H, W, SPEED, X0 = 64, 160, 3, 20
COLOUR = np.array([200, 40, 40])


def character_on_ones(n: int) -> list[np.ndarray]:
    """A red square with a dark outline and an inner line moving SPEED px per frame over a grey texture."""
    rng = np.random.default_rng(3)
    bg = (rng.random((H // 4, W // 4, 3)) * 40 + 110).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    frames = []
    for i in range(n):
        f = bg.copy()
        x = X0 + SPEED * i
        f[20:44, x - 2:x + 22] = 20
        f[22:42, x:x + 20] = COLOUR
        f[31:33, x + 4:x + 16] = 20
        frames.append(f)
    return frames


def centroid_x(frame: np.ndarray) -> float:
    """Horizontal centre of the character, found by its colour."""
    mask = (np.abs(frame.astype(int) - COLOUR).sum(axis=2) < 60)
    ys, xs = np.nonzero(mask)
    return float(xs.mean()) if xs.size else float("nan")


def run(pipe: MultiPassDedup, frames) -> list[np.ndarray]:
    out = []
    for f in frames:
        out += pipe.push(f)
    return out + pipe.flush()


@pytest.mark.parametrize("n_pass,n_frames", [(2, 5), (3, 6), (4, 7), (3, 2)])
def test_same_frame_count_and_first_frame(rife, n_pass, n_frames) -> None:
    frames = character_on_ones(n_frames)
    kw = dict(n_pass=n_pass, src_fps=Fraction(24000, 1001), dst_fps=60, scdet=True)
    plain = run(MultiPassDedup(rife, compensate_delay=False, **kw), frames)
    comp = run(MultiPassDedup(rife, compensate_delay=True, **kw), frames)
    assert len(comp) == len(plain)
    assert np.array_equal(comp[0], frames[0])


def test_compensated_motion_matches_ideal_position(rife) -> None:
    n, n_pass, times = 12, 3, 2
    frames = character_on_ones(n)
    comp = run(MultiPassDedup(rife, n_pass=n_pass, src_fps=24, times=times, scdet=True, compensate_delay=True), frames)
    plain = run(MultiPassDedup(rife, n_pass=n_pass, src_fps=24, times=times, scdet=True), frames)
    centre0 = centroid_x(frames[0])
    # Away from the ends, where the passes see copies of the first and last frames.
    interior = range(times * n_pass, times * (n - n_pass))
    ideal = {k: centre0 + SPEED * k / times for k in interior}
    comp_err = [abs(centroid_x(comp[k]) - ideal[k]) for k in interior]
    plain_err = [abs(centroid_x(plain[k]) - ideal[k]) for k in interior]
    assert max(comp_err) <= 1.0, comp_err
    # Without compensation the picture lags by (n_pass - 1) / 2 frames: SPEED px here.
    assert np.mean(plain_err) == pytest.approx(SPEED * (n_pass - 1) / 2, abs=1.0)


def test_scene_cut_lands_at_its_time(rife) -> None:
    a = character_on_ones(6)
    b = [np.full_like(f, 30) for f in character_on_ones(5)]
    cut, times = len(a), 2
    for n_pass in (2, 3, 4):
        pipe = MultiPassDedup(rife, n_pass=n_pass, src_fps=24, times=times, scdet=True, compensate_delay=True)
        out = run(pipe, a + b)
        assert pipe.stats.scene_changes == 1
        shot_b = [bool(np.abs(f.astype(int) - 30).mean() < 1) for f in out]
        assert shot_b == [k >= cut * times for k in range(len(out))], f"n_pass={n_pass}"
