"""Timestamp mapping, scene detection, the pipeline's contracts and its errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from helpers.frames import FILM, moving_clip
from multipassdedup.core import (
    Interpolator,
    MultiPassDedup,
    SceneDetector,
    TimestampMapper,
    UnknownModelError,
    auto_passes,
    load_model,
    to_fraction,
)
from multipassdedup.weights import WeightsMissingError


def run(pipe: MultiPassDedup, frames) -> list[np.ndarray]:
    out = []
    for f in frames:
        out += pipe.push(f)
    return out + pipe.flush()


# -- timestamps ---------------------------------------------------------------------------


def test_mapper_1000_frames_film_to_60() -> None:
    m = TimestampMapper(Fraction(60) / FILM)
    ts = [m.range(i, i + 1, True, i == 999) for i in range(1000)]
    assert sum(map(len, ts)) == m.count(1000) == 2504  # ceil(1000 * 2.5025) + 1
    assert ts[0] == [0, Fraction(400, 1001), Fraction(800, 1001)]  # output step i sits at input time i * 400/1001
    assert ts[1] == [Fraction(199, 1001), Fraction(599, 1001), Fraction(999, 1001)]
    assert all(0 <= t < 1 for row in ts[:-1] for t in row)
    assert ts[-1][-1] > 1  # the closed last interval reaches past the last frame, as the reference did


def test_mapper_exact_rationals() -> None:
    assert to_fraction("60000/1001") == Fraction(60000, 1001)
    assert to_fraction(2.5) == Fraction(5, 2)
    assert FILM * to_fraction("2.5") == Fraction(60000, 1001)
    with pytest.raises(ValueError, match="rational"):
        to_fraction("sixty")


@pytest.mark.parametrize("fps,passes", [(FILM, 2), (24, 2), (25, 2), (Fraction(30000, 1001), 4),
                                        (Fraction(60000, 1001), 6)])
def test_auto_passes(fps, passes) -> None:
    assert auto_passes(Fraction(fps)) == passes


# -- scene detection ----------------------------------------------------------------------


def _tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame.astype(np.float32) / 255).permute(2, 0, 1).unsqueeze(0)


def test_scene_detector_cut_and_pan() -> None:
    det = SceneDetector(0.3)
    a, b = moving_clip(2, 128, 256, step=4, seed=1)
    other = moving_clip(1, 128, 256, seed=7)[0][::-1].copy() // 3
    assert not det.is_change(_tensor(a), _tensor(b)), "a pan is not a cut"
    assert det.ssim(_tensor(a), _tensor(a)) == pytest.approx(1.0, abs=1e-6)
    assert det.is_change(_tensor(a), _tensor(other)), "a different shot is a cut"


# -- pipeline -----------------------------------------------------------------------------


def test_odd_size_in_equals_out(rife) -> None:
    frames = moving_clip(4, 130, 250)
    out = run(MultiPassDedup(rife, n_pass=2, src_fps=FILM, dst_fps=60, scdet=True), frames)
    assert len(out) == TimestampMapper(Fraction(60) / FILM).count(4)
    assert all(f.shape == (130, 250, 3) and f.dtype == np.uint8 for f in out)
    assert np.array_equal(out[0], frames[0])


def test_sixteen_bit_stays_sixteen_bit(rife) -> None:
    frames = [f.astype(np.uint16) * 257 for f in moving_clip(3)]
    out = run(MultiPassDedup(rife, n_pass=2, src_fps=24, times=2, scdet=False), frames)
    assert len(out) == 7 and all(f.dtype == np.uint16 for f in out)
    assert np.array_equal(out[0], frames[0])
    assert (out[1] % 257 != 0).any(), "interpolated frames use the full 16-bit range"


def test_auto_pass_count_used(rife) -> None:
    assert MultiPassDedup(rife, n_pass=0, src_fps=FILM).n_pass == 2
    assert MultiPassDedup(rife, n_pass=0, src_fps=Fraction(30000, 1001)).n_pass == 4


def test_duplicate_pairs_skip_the_model(rife) -> None:
    """A still clip: every pair is two identical frames, so no model call is needed."""
    still = [moving_clip(1)[0]] * 5
    pipe = MultiPassDedup(rife, n_pass=3, src_fps=24, dst_fps=60, scdet=True, compensate_delay=True)
    out = run(pipe, still)
    assert len(out) == TimestampMapper(Fraction(60, 24)).count(5)
    assert pipe.stats.model_calls == 0 and pipe.stats.duplicate_skips > 0
    assert all(np.array_equal(f, still[0]) for f in out)


def test_scene_cut_is_not_morphed(rife) -> None:
    """Across a cut every output is a copy of a real frame, never a blend of two shots."""
    a = moving_clip(4, seed=1)
    b = [f[::-1].copy() // 3 for f in moving_clip(4, seed=5)]
    out = run(MultiPassDedup(rife, n_pass=1, src_fps=24, times=2, scdet=True), a + b)
    cut = out[6:10]  # outputs around the pair (a[3], b[0])
    assert any(np.array_equal(f, a[3]) for f in cut)
    for f in cut:
        assert min(np.abs(f.astype(int) - g.astype(int)).mean() for g in a + b) < 4


def test_streaming_output_starts_before_end(rife) -> None:
    pipe = MultiPassDedup(rife, n_pass=2, src_fps=FILM, dst_fps=60, scdet=False)
    early = []
    for f in moving_clip(6):
        early += pipe.push(f)
    assert early, "outputs come out while input is still arriving"


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    (dict(dst_fps=24), "must exceed"),
    (dict(dst_fps=20), "must exceed"),
    (dict(n_pass=-1), "n_pass"),
    (dict(n_pass=1.5), "n_pass"),
    (dict(times=1), "times must exceed"),
    (dict(scale=0.3), "scale"),
    (dict(scdet_threshold=2), "threshold"),
])
def test_bad_parameters(rife, kw, match) -> None:
    args = dict(n_pass=2, src_fps=24, dst_fps=60) | kw
    with pytest.raises(ValueError, match=match):
        MultiPassDedup(rife, **args)


def test_frame_size_change_is_an_error(rife) -> None:
    pipe = MultiPassDedup(rife, n_pass=2, src_fps=24, dst_fps=60)
    pipe.push(moving_clip(1)[0])
    with pytest.raises(ValueError, match="stream started with"):
        pipe.push(moving_clip(1, 32, 64)[0])


def test_bad_frames_are_errors(rife) -> None:
    pipe = MultiPassDedup(rife, n_pass=2, src_fps=24, dst_fps=60)
    with pytest.raises(ValueError, match="HxWx3"):
        pipe.push(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        pipe.push(np.zeros((8, 8, 3), np.float32))


def test_unknown_model() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'nope'.*rife"):
        load_model("nope")


def test_a_model_registers_once_under_its_name() -> None:
    from multipassdedup.core.models.registry import ModelRegistry
    from multipassdedup.weights import WeightFiles

    registry, files = ModelRegistry(), WeightFiles(roles={"net": "blend.pt"}, source="tests")

    class Blend(Interpolator):
        name = "blend"

        def _infer_batch(self, requests, scale):
            raise AssertionError("not run")

    assert registry.register(files)(Blend) is Blend
    assert registry.names() == ["blend"] and registry.get("blend").weights is files
    with pytest.raises(ValueError, match="'blend' is already registered"):
        registry.register(files)(Blend)
    with pytest.raises(UnknownModelError, match="unknown model 'rife'; available: blend"):
        registry.get("rife")


def test_missing_weights_names_file_and_command(tmp_path) -> None:
    with pytest.raises(WeightsMissingError, match=r"rife\.pkl.*mpd-weights fetch"):
        load_model("rife", weights_dir=tmp_path)
