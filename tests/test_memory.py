"""Memory estimates the daemon admits sessions by: a held frame's bytes, and the pipeline's bound."""

from __future__ import annotations

import pytest
import torch

from helpers.frames import FILM, moving_clip
from helpers.pipelines import PeakHeld, storage_bytes
from multipassdedup.core import MultiPassDedup
from multipassdedup.core.layers.frames import Padder
from multipassdedup.core.models.base import ModelFrame, PairRequest


def frame_bytes(frame: ModelFrame) -> int:
    return storage_bytes(frame.tensor, frame.cache)


@pytest.mark.parametrize("name", ["rife", "gmfss"])
@pytest.mark.parametrize("height, width, scale", [(128, 256, 1.0), (100, 130, 1.0), (256, 256, 0.5), (128, 128, 2.0)])
def test_held_frame_bytes_is_what_a_frame_and_its_cached_features_take(request, name, height, width, scale) -> None:
    model = request.getfixturevalue(name)
    padder = Padder(height, width, model.alignment(scale))
    x, y = (ModelFrame(padder.pad(torch.rand(1, 3, height, width))) for _ in range(2))
    model.interpolate_batch([PairRequest(x, y, [0.5])], scale)
    assert frame_bytes(x) == model.held_frame_bytes(height, width, scale)
    assert storage_bytes(x.tensor) == model.held_frame_bytes(height, width, scale, features=False)
    if name == "gmfss":
        assert model.held_frame_bytes(height, width, scale) > 10 * storage_bytes(x.tensor)  # features dominate


@pytest.mark.parametrize("n_pass", [1, 3, 5])
@pytest.mark.parametrize("compensate_delay", [False, True])
@pytest.mark.parametrize("wavefront", [True, False])
def test_the_pipeline_never_holds_more_than_its_bound(rife, n_pass, compensate_delay, wavefront) -> None:
    h, w = 64, 128
    clip = moving_clip(2 * n_pass + 8, h, w)  # moving on ones: no pair is skipped as a duplicate
    model = PeakHeld(rife)
    pipe = MultiPassDedup(model, n_pass=n_pass, src_fps=FILM, dst_fps=60, compensate_delay=compensate_delay,
                          wavefront=wavefront)
    for f in clip:
        pipe.push(f)
        model.sample()
    pipe.flush()
    bound = pipe.memory_bound(h, w)
    assert model.peak <= bound
    if wavefront:  # the wavefront holds two frames per pass at once: the bound is near what it needs
        assert model.peak >= 0.6 * bound, (model.peak, bound)


def test_gmfss_pipeline_bound_covers_its_cached_features(gmfss) -> None:
    h, w = 64, 128
    model = PeakHeld(gmfss)
    pipe = MultiPassDedup(model, n_pass=2, src_fps=FILM, dst_fps=60, compensate_delay=True)
    for f in moving_clip(8, h, w):
        pipe.push(f)
    pipe.flush()
    assert gmfss.held_frame_bytes(h, w) < model.peak <= pipe.memory_bound(h, w)
