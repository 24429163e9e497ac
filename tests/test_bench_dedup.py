"""Classic dedup (the benchmark's stand-in for other tools) keeps timing and interpolates only the gaps."""

from fractions import Fraction

import numpy as np
import pytest

from multipassdedup.bench.classic_dedup import ClassicDedup, mean_abs_difference
from multipassdedup.bench.clips import make_clip
from multipassdedup.bench.methods import Method, run_method
from multipassdedup.bench.synthetic import Character, Clip, MotionPath, PaintedBackground, Shot
from multipassdedup.core import load_model

W, H = 128, 64
SRC = Fraction(24000, 1001)


@pytest.fixture(scope="module")
def rife():
    return load_model("rife", device="cpu")


def twos_clip() -> Clip:
    ch = Character("A", (225.0, 40.0, 170.0), 6.0, MotionPath((30.0, 40.0), (4.0, 0.0)), hold=2)
    return Clip("twos", W, H, 8, (Shot(0, PaintedBackground(3, W, H), (ch,)),))


def test_mean_abs_difference_is_on_a_255_scale_for_any_depth():
    a = np.zeros((4, 4, 3), np.uint8)
    assert mean_abs_difference(a, a + 2) == 2.0
    b = np.zeros((4, 4, 3), np.uint16)
    assert abs(mean_abs_difference(b, b + 514) - 2.0) < 1e-6


def test_held_drawings_are_dropped_but_a_panning_background_defeats_dedup(rife):
    frames = twos_clip().frames()
    assert ClassicDedup(rife).kept_indices(frames) == [0, 2, 4, 6]
    pan = make_clip("mixed_pan", W, H, 8).frames()
    assert ClassicDedup(rife).kept_indices(pan) == list(range(8))


def test_kept_frames_stay_at_their_times_and_gaps_are_interpolated(rife):
    frames = twos_clip().frames()
    calls = rife.stats.model_calls
    out = run_method(Method("dedup"), rife, frames, SRC, 2 * SRC)
    assert len(out.frames) == 17 and out.out_fps == 2 * SRC  # output k at input time k / 2, up to 8
    assert out.model_calls == rife.stats.model_calls - calls == 9  # 0.5 .. 5.5 except the kept 2 and 4
    for k, i in ((0, 0), (4, 2), (8, 4), (12, 6)):
        assert np.array_equal(out.frames[k], frames[i])
    assert all(np.array_equal(f, frames[6]) for f in out.frames[13:])  # held after the last kept frame
    mid = rife.interpolate(frames[0], frames[2], [0.25])[0]
    assert np.array_equal(out.frames[1], mid)


def test_repeat_method_shows_the_latest_input_frame():
    frames = twos_clip().frames()
    out = run_method(Method("repeat"), None, frames, SRC, Fraction(5, 2) * SRC)
    assert [next(i for i, f in enumerate(frames) if f is o) for o in out.frames[:6]] == [0, 0, 0, 1, 1, 2]
