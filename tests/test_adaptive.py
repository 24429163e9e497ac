"""adaptive=True (keyframe re-timing): the hold map, the streaming contract, and the setting end to end."""

from __future__ import annotations

import gc
from fractions import Fraction

import numpy as np
import pytest
import torch

from helpers.frames import centroid_x
from helpers.pipelines import stream
from multipassdedup.client.engine_flags import client_args, settings_args, settings_from_options
from multipassdedup.core import MultiPassDedup, TimestampMapper
from multipassdedup.core.layers.frames import to_tensor
from multipassdedup.core.pipeline.retiming import (
    MAX_HOLD,
    NONE,
    block_changes,
    block_size,
    held_groups,
    large_components,
)
from multipassdedup.proto import mpd_pb2
from multipassdedup.proto.wire import PixelFormat, SessionSettings, session_config, session_settings
from multipassdedup.settings import EngineSettings, SettingsError

H, W = 64, 160
BLOCK = block_size(H)
SQUARE = 16  # px: 4x4 = 16 blocks of BLOCK, above the 6-block minimum
SPEED = 6  # px per input frame, true motion of the held square


def background(seed: int = 3) -> np.ndarray:
    """A grey texture of 4x4 cells."""
    rng = np.random.default_rng(seed)
    return (rng.random((H // 4, W // 4, 3)) * 40 + 110).astype(np.uint8).repeat(4, 0).repeat(4, 1)


def held_square_clip(n: int, hold: int = 2, size: int = SQUARE, speed: int = SPEED, pan: int = 0,
                     textured: bool = False) -> list[np.ndarray]:
    """A square moving ``speed`` px per frame drawn on ``hold``s over a texture panning ``pan`` px per frame:
    red, or ``textured`` (a flat colour's inside would not change from frame to frame: see the module notes)."""
    rng = np.random.default_rng(5)
    wide = (rng.random((H // 4, (W + pan * n) // 4 + 1, 3)) * 40 + 110).astype(np.uint8).repeat(4, 0).repeat(4, 1)
    paint = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) if textured else np.array((200, 40, 40), np.uint8)
    frames = []
    for i in range(n):
        f = wide[:, pan * i: pan * i + W].copy() if pan else background()
        x = 8 + speed * (i - i % hold)
        f[24:24 + size, x:x + size] = paint
        frames.append(np.ascontiguousarray(f))
    return frames


def keyframes(frames: list[np.ndarray]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per frame and block: the last frame where the block changed, the next one (NONE: never), computed whole."""
    tensors = [to_tensor(f, torch.device("cpu")) for f in frames]
    changed = [block_changes(a, b, BLOCK) for a, b in zip(tensors, tensors[1:])]
    last = [torch.zeros(changed[0].shape, dtype=torch.int64)]
    for k, c in enumerate(changed, 1):
        last.append(torch.where(c, k, last[-1]))
    nxt = [torch.full(changed[0].shape, NONE, dtype=torch.int64)]
    for k in range(len(changed), 0, -1):
        nxt.insert(0, torch.where(changed[k - 1], k, nxt[0]))
    return last, nxt


# -- the hold map --------------------------------------------------------------------------


def test_hold_map_finds_the_held_square_not_the_one_on_ones_nor_the_still_background() -> None:
    frames = held_square_clip(10, hold=2, speed=12)  # 24 px per drawing: old and new places do not overlap
    texture = np.random.default_rng(7).integers(0, 256, (SQUARE, SQUARE, 3), dtype=np.uint8)
    for i, f in enumerate(frames):  # a second, textured square moving on ones in another band
        f[46:46 + SQUARE, 8 + 5 * i: 8 + 5 * i + SQUARE] = texture
    last, nxt = keyframes(frames)
    assert BLOCK == 4  # the squares' places below are counted in blocks of 4 px
    # From frame 5 on: before, the still background the squares reach within 4 frames of the shot's start
    # counts as held since that start (a region's hold is known only from its first change on).
    for j in (5, 7):  # held frames: drawing shown since j - 1, replaced at j + 1
        groups = held_groups(j, last[j], nxt[j])
        assert [(g.start, g.end) for g in groups] == [(j - 1, j + 1)]
        x = 8 + 12 * (j - 1)
        expected = torch.zeros_like(groups[0].blocks)
        expected[24 // BLOCK:(24 + SQUARE) // BLOCK, x // BLOCK:(x + SQUARE + BLOCK - 1) // BLOCK] = True
        assert torch.equal(groups[0].blocks, expected)
        assert groups[0].time(j) == 0.5
    for j in (4, 6):  # a fresh drawing (first shown at j) is not held at j
        assert held_groups(j, last[j], nxt[j]) == []


def test_hold_map_ignores_small_regions_long_holds_and_unchanging_frames() -> None:
    small = held_square_clip(8, hold=2, size=8, speed=12)  # 2x2..3x3 blocks: under the minimum
    last, nxt = keyframes(small)
    assert all(held_groups(j, last[j], nxt[j]) == [] for j in range(8))
    fives = held_square_clip(12, hold=MAX_HOLD + 1, speed=4)  # held longer than fours: a still
    last, nxt = keyframes(fives)
    assert all(held_groups(j, last[j], nxt[j]) == [] for j in range(12))
    threes = held_square_clip(12, hold=3, speed=8)
    last, nxt = keyframes(threes)
    assert [(g.start, g.end) for g in held_groups(4, last[4], nxt[4])] == [(3, 6)]
    assert [(g.start, g.end) for g in held_groups(5, last[5], nxt[5])] == [(3, 6)]


def test_large_components_keeps_connected_regions_of_the_minimum_size() -> None:
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[0, 0] = mask[0, 2] = mask[2, 0] = True  # scattered single cells
    mask[3:5, 4:7] = True  # 6 cells, connected
    mask[5, 7] = True  # joined to them diagonally: 7
    assert torch.equal(large_components(mask, 6), mask & (torch.arange(6)[:, None] >= 3))
    assert not large_components(mask, 8).any()


# -- the streaming contract (RIFE, small frames) -----------------------------------------------


@pytest.mark.parametrize("rate", [dict(dst_fps=60), dict(times=2.5)])
def test_output_count_and_look_ahead(rife, rate) -> None:
    """The same number of outputs as plain interpolation, and outputs leave at most MAX_HOLD frames after
    their time: after input m, every step before input time m - MAX_HOLD + 1 is out, none after."""
    frames = held_square_clip(11)
    kw = dict(src_fps=Fraction(24000, 1001), scdet=True, **rate)
    plain = stream(MultiPassDedup(rife, n_pass=1, **kw), frames)
    pipe = MultiPassDedup(rife, adaptive=True, **kw)
    mapper = TimestampMapper(pipe.ratio)
    out: list[np.ndarray] = []
    for m, f in enumerate(frames):
        out += pipe.push(f)
        assert len(out) == max(0, mapper.step_at_or_after(Fraction(m - MAX_HOLD + 1))), m
        assert len(pipe.strategy.frames) <= 2 * MAX_HOLD - 1 and len(pipe.strategy.retimed) <= 2
    out += pipe.flush()
    assert len(out) == len(plain) == pipe.stats.frames_out
    assert pipe.out_fps == MultiPassDedup(rife, n_pass=1, **kw).out_fps
    assert np.array_equal(out[0], frames[0])
    assert pipe.stats.held_groups > 0


def test_held_square_is_re_timed_its_judder_drops(rife) -> None:
    n, times = 12, 2
    frames = held_square_clip(n, hold=2)
    kw = dict(src_fps=24, times=times, scdet=True)
    plain = stream(MultiPassDedup(rife, n_pass=1, **kw), frames)
    adaptive = stream(MultiPassDedup(rife, adaptive=True, **kw), frames)
    interior = range(times, times * (n - 2) + 1)  # up to the shot's last drawing (frame 10, held to frame 11)
    ideal = {k: centroid_x(frames[0]) + SPEED * k / times for k in interior}
    plain_err = [abs(centroid_x(plain[k]) - ideal[k]) for k in interior]
    adaptive_err = [abs(centroid_x(adaptive[k]) - ideal[k]) for k in interior]
    assert max(adaptive_err) <= 1.5, adaptive_err
    assert max(plain_err) >= 4, plain_err  # plain shows the held drawing, then moves it twice as fast
    # The last drawing has no next one: where it would go is not in the input, so it is shown as drawn, on
    # its own frame and on the one that repeats it, as plain interpolation shows it (nothing is guessed).
    assert np.array_equal(adaptive[times * 10], frames[10]) and np.array_equal(adaptive[times * 11], frames[11])
    assert np.array_equal(adaptive[times * 10], plain[times * 10])
    # Only the held region is re-drawn: on the input instants the far corner is the input's, exactly.
    assert all(np.array_equal(adaptive[k][:, -32:], frames[0][:, -32:]) for k in range(0, len(adaptive), times))


@pytest.mark.parametrize("clip", ["static", "held_long", "ones"])
def test_nothing_held_gives_plain_interpolation_exactly(rife, clip) -> None:
    """A still picture, one held longer than fours, and a pan with a square on ones: no region is re-timed,
    so the output is plain interpolation's, bit for bit, with the same model calls."""
    frames = {"static": [background()] * 7, "held_long": held_square_clip(10, hold=5, speed=4),
              "ones": held_square_clip(9, hold=1, pan=3, textured=True)}[clip]
    kw = dict(src_fps=Fraction(24000, 1001), dst_fps=60, scdet=True)
    # n_pass=1 with the commands' timing: cuts end shots and the closing copies are copies, as here
    plain_pipe = MultiPassDedup(rife, n_pass=1, compensate_delay=True, **kw)
    adaptive_pipe = MultiPassDedup(rife, adaptive=True, **kw)
    plain, adaptive = stream(plain_pipe, frames), stream(adaptive_pipe, frames)
    assert adaptive_pipe.stats.held_groups == 0
    assert len(adaptive) == len(plain)
    assert all(np.array_equal(a, b) for a, b in zip(adaptive, plain))
    assert adaptive_pipe.stats.model_calls == plain_pipe.stats.model_calls


def test_scene_cut_ends_the_shot_no_group_spans_it(rife) -> None:
    a = held_square_clip(7, hold=2)
    b = [np.full_like(a[0], 30) for _ in range(5)]
    cut, times = len(a), 2
    pipe = MultiPassDedup(rife, adaptive=True, src_fps=24, times=times, scdet=True)
    out = stream(pipe, a + b)
    assert pipe.stats.scene_changes == 1 and pipe.stats.held_groups > 0
    distance_to_b = [float(np.abs(f.astype(int) - 30).mean()) for f in out]
    assert all(d < 1 for d in distance_to_b[cut * times:])
    assert all(d > 80 for d in distance_to_b[:cut * times])  # shot A only: nothing of B mixed in


def test_a_session_that_starts_at_a_cut_gives_the_whole_sessions_frames(rife) -> None:
    """What ``mpd-client --jobs`` relies on: a chunk from a cut (``first_index``) is that part of the whole run."""
    a = held_square_clip(12, hold=3, speed=4, pan=2, textured=True)
    b = held_square_clip(8, hold=2)
    kw = dict(adaptive=True, src_fps=Fraction(24000, 1001), dst_fps=60)
    whole_pipe, part_pipe = MultiPassDedup(rife, **kw), MultiPassDedup(rife, first_index=len(a), **kw)
    whole, part = stream(whole_pipe, a + b), stream(part_pipe, b)
    assert whole_pipe.stats.scene_changes == 1 and part_pipe.stats.held_groups > 0
    first = TimestampMapper(whole_pipe.ratio).step_at_or_after(Fraction(len(a)))
    assert len(part) == len(whole) - first
    assert all(np.array_equal(x, y) for x, y in zip(part, whole[first:]))


def test_the_pipeline_never_holds_more_than_its_bound(rife) -> None:
    from helpers.pipelines import PeakHeld

    gc.collect()
    model = PeakHeld(rife)
    pipe = MultiPassDedup(model, adaptive=True, src_fps=Fraction(24000, 1001), dst_fps=60)
    for f in held_square_clip(12, hold=3, speed=4, pan=2, textured=True) + held_square_clip(6, hold=2):
        pipe.push(f)
        model.sample()
    pipe.flush()
    assert pipe.stats.held_groups > 0 and pipe.stats.scene_changes == 1  # the second clip is a new shot
    bound = pipe.memory_bound(H, W)
    assert model.peak <= bound
    assert model.peak >= 0.5 * bound, (model.peak, bound)  # the bound is near what it needs


# -- the setting end to end ------------------------------------------------------------------


def test_setting_is_validated_once_and_off_by_default() -> None:
    assert EngineSettings(dst_fps=60).adaptive is False
    assert EngineSettings.from_keywords(dst_fps=60, adaptive=True).engine_keywords()["adaptive"] is True
    with pytest.raises(SettingsError, match="adaptive must be true or false"):
        EngineSettings(dst_fps=60, adaptive="yes")


def test_flags_and_config_key() -> None:
    """The commands' default is adaptive (the library's stays off), unless the options ask for the passes."""
    on = settings_from_options({"adaptive": True})
    assert on.adaptive is True and settings_from_options({}).adaptive is True
    assert settings_from_options({"n_pass": 3}).adaptive is False  # -np asks for the passes
    assert settings_from_options({"compensate_delay": False}).adaptive is False  # so does the original timing
    assert settings_from_options({"n_pass": 3, "adaptive": True}).adaptive is True
    assert settings_from_options({"adaptive": False}).adaptive is False
    assert client_args({"adaptive": True}) == ["--adaptive"] and client_args({"adaptive": False}) == ["--no-adaptive"]
    assert client_args({}) == []  # not given: the child resolves the same default from the same flags
    assert "--adaptive" in settings_args(on) and "--no-adaptive" in settings_args(EngineSettings(dst_fps=60))


def test_a_watch_folder_left_on_the_default_is_not_a_duplicate_of_work_done_with_the_passes(tmp_path) -> None:
    import hashlib
    import json

    from multipassdedup.client.watch.config import build_folder

    def digests(**options) -> tuple[str, str]:
        """The folder's digest now, and as it was before adaptive became the default (its arguments only)."""
        folder = build_folder({"in": str(tmp_path), "out": str(tmp_path / "out"), **options}, "t")
        before = json.dumps({"args": folder.processing_args(), "container": folder.container})
        return folder.options_digest(), hashlib.sha256(before.encode()).hexdigest()[:16]

    now, before = digests()  # same arguments, different method now: not a duplicate of earlier work
    assert now != before
    for passes in ({"n_pass": 3}, {"adaptive": False}, {"compensate_delay": False}):
        now, before = digests(**passes)  # the method did not change: earlier work still counts
        assert now == before, passes
    with pytest.raises(SettingsError):
        settings_from_options({"adaptive": "sometimes"})


def test_wire_carries_it_and_unset_takes_the_default() -> None:
    engine = EngineSettings(src_fps=24, dst_fps=60, adaptive=True)
    cfg = session_config(SessionSettings(engine, W, H, PixelFormat.of_proto(mpd_pb2.RGB24)))
    assert cfg.HasField("adaptive") and session_settings(cfg).engine.adaptive is True
    cfg.ClearField("adaptive")
    assert session_settings(cfg).engine.adaptive is EngineSettings.adaptive is False


def test_daemon_session_runs_it_and_announces_it(rife) -> None:
    from multipassdedup.client.remote.session import RemoteEngine
    from multipassdedup.daemon.options import DaemonOptions
    from multipassdedup.daemon.server import DaemonServer

    frames = held_square_clip(9, hold=2)
    local = stream(MultiPassDedup(rife, adaptive=True, src_fps=24, dst_fps=60), frames)
    daemon = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start()
    try:
        engine = RemoteEngine(daemon.addresses[0], src_fps=24, dst_fps=60, adaptive=True)
        remote = stream(engine, frames)
        assert engine.start.adaptive is True and engine.adaptive is True and engine.start.n_pass == 0
        assert len(remote) == len(local)
        assert all(np.array_equal(a, b) for a, b in zip(remote, local))
    finally:
        daemon.stop(0)
