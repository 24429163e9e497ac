"""adaptive=True on footage that is not clean cel animation: what moves on every frame keeps plain
interpolation's frames (through x264's noise, on a slow pan), a held drawing over a live background is
still re-timed, and the decisions can be seen (``HoldPreview``, ``mpd-client --show-holds``).

The footage is photograph-like (soft gradients, fine grain and hard-edged objects of moderate contrast,
moved by exact sub-pixel amounts) and goes through libx264 with B-frames, as a release would.
"""

from __future__ import annotations

import io
import subprocess

import av
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from helpers.frames import centroid_x
from helpers.pipelines import stream
from multipassdedup.client.main import main as client_main
from multipassdedup.core import MultiPassDedup
from multipassdedup.core.pipeline.hold_preview import HOLD_TINTS, HoldPreview, tint_holds
from multipassdedup.core.pipeline.retiming import is_hold

H, W = 96, 160
MARGIN = 40  # px of texture beyond each side, for the pan
RED = (200, 40, 40)
N = 10  # input frames per clip
RAMP = [0.1 + 0.4 * i / (N - 1) for i in range(N)]  # a slow pan speeding up from 0.1 to 0.5 px per frame


def photo_texture(seed: int = 1) -> np.ndarray:
    """A photograph-like float RGB texture ``H x (W + 2 MARGIN)``: gradients and grain at five scales, and
    hard-edged rectangles of moderate contrast (edges that move a little change a block a little)."""
    rng = np.random.default_rng(seed)
    h, w = H, W + 2 * MARGIN
    out = np.zeros((h, w, 3), np.float32)
    for cell, amplitude in ((32, 60), (16, 40), (8, 28), (4, 18), (2, 10)):
        small = torch.from_numpy(rng.random((h // cell + 2, w // cell + 2, 3)).astype(np.float32))
        big = torch.nn.functional.interpolate(small.permute(2, 0, 1)[None], scale_factor=cell, mode="bicubic",
                                              align_corners=False)[0].permute(1, 2, 0).numpy()
        out += (big[:h, :w] - 0.5) * amplitude
    for _ in range(h * w // 150):
        y, x = rng.integers(0, h), rng.integers(0, w)
        out[y:y + rng.integers(3, 14), x:x + rng.integers(3, 14)] += rng.uniform(-40, 40, 3).astype(np.float32)
    return np.clip(out + 128, 0, 255)


def panned(texture: np.ndarray, speeds: list[float] | float, n: int) -> list[np.ndarray]:
    """``n`` frames of ``texture`` moving left by ``speeds[i]`` px after frame ``i`` (exact: a Fourier shift)."""
    spectrum = np.fft.rfft(texture.astype(np.float64), axis=1)
    freqs = np.fft.rfftfreq(texture.shape[1])
    frames, x = [], 0.0
    for i in range(n):
        moved = np.fft.irfft(spectrum * np.exp(2j * np.pi * freqs * x)[None, :, None], n=texture.shape[1], axis=1)
        frames.append(np.clip(np.round(moved[:, MARGIN:MARGIN + W]), 0, 255).astype(np.uint8))
        x += speeds[i % len(speeds)] if isinstance(speeds, list) else speeds
    return frames


def x264(frames: list[np.ndarray], crf: int) -> list[np.ndarray]:
    """The frames through libx264 (preset medium: B-frames; yuv420p) at ``crf``, decoded back to RGB."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
           "-r", "24", "-i", "-", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
           "-f", "mp4", "-movflags", "frag_keyframe+empty_moov", "pipe:1"]
    data = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True, check=True).stdout
    with av.open(io.BytesIO(data)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(frames)
    return decoded


def square_over_pan(n: int, speeds: list[float] | float, hold: int = 2, speed: int = 6) -> list[np.ndarray]:
    """A red 16 px square moving ``speed`` px per frame, drawn on ``hold``s, over the texture panning on ones."""
    frames = panned(photo_texture(), speeds, n)
    for i, f in enumerate(frames):
        x = 8 + speed * (i - i % hold)
        f[36:52, x:x + 16] = RED
    return frames


def plain_and_adaptive(model, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], MultiPassDedup]:
    kw = dict(src_fps=24, dst_fps=60, scdet=True)
    plain = stream(MultiPassDedup(model, n_pass=1, compensate_delay=True, **kw), frames)  # the commands' plain timing
    pipe = MultiPassDedup(model, adaptive=True, **kw)
    return plain, stream(pipe, frames), pipe


def test_evidence_of_a_hold_is_a_plateau_then_a_jump_above_the_noise_floor() -> None:
    """Figures as measured on real footage (mean block differences, of 255): the decision rule alone."""
    level = 1 / 255
    assert is_hold(0.0, 13.2 * level, 0.0)  # a drawing held exactly (clean, or x264's skipped blocks)
    assert is_hold(1.2 * level, 39.5 * level, 0.06 * level)  # a cut-out held through x264 CRF 23
    assert is_hold(3.7 * level, 12.3 * level, 3.2 * level)  # held under grain: the plateau is the floor
    assert not is_hold(3.0 * level, 5.8 * level, 0.4 * level)  # 3D moving on ones: as much within as at the ends
    assert not is_hold(0.4 * level, 3.2 * level, 0.2 * level)  # an encoder's small update: no new drawing
    assert not is_hold(4.3 * level, 6.4 * level, 3.8 * level)  # live action with grain: jump within the noise
    assert is_hold(0.6 * level, 16.3 * level, 0.4 * level)  # a hold since the shot began, both ends ...
    assert not is_hold(1.7 * level, 16.3 * level, 0.4 * level, both_ends=False)  # ... and one: motion speeding up


@pytest.mark.parametrize("clip", ["moving on ones, x264 CRF 23", "slow pan 0.1-0.5 px per frame, x264 CRF 18"])
def test_footage_moving_on_every_frame_gives_plain_interpolations_frames(rife, clip) -> None:
    """Nothing is held, so nothing is re-timed: every output frame is plain interpolation's, bit for bit. (The
    hold map alone reads blocks whose change stays under its threshold for a frame as held: 13 and 5 regions
    here; the evidence check turns them all down.)"""
    speeds = [0.7, 1.6, 0.4, 1.2, 2.1, 0.9] if clip.startswith("moving") else RAMP
    frames = x264(panned(photo_texture(), speeds, N), 23 if clip.startswith("moving") else 18)
    plain, adaptive, pipe = plain_and_adaptive(rife, frames)
    assert pipe.stats.held_groups == 0
    assert len(adaptive) == len(plain)
    assert all(np.array_equal(a, p) for a, p in zip(adaptive, plain))


def test_held_drawing_over_a_live_background_is_re_timed_and_only_it(rife) -> None:
    """A square on twos over a slow pan on ones (x264 CRF 18): the square follows its true path, where plain
    interpolation jerks; far from the square the input frames come out as the input (plain's)."""
    frames = x264(square_over_pan(N, RAMP), 18)
    plain, adaptive, pipe = plain_and_adaptive(rife, frames)
    assert pipe.stats.held_groups > 0
    interior = range(3, 17)  # output frames between the shot's start and its last drawing (24 -> 60: 2.5 per input)
    ideal = {k: 8 + 7.5 + 6 * k / 2.5 for k in interior}
    adaptive_err = [abs(centroid_x(adaptive[k]) - ideal[k]) for k in interior]
    plain_err = [abs(centroid_x(plain[k]) - ideal[k]) for k in interior]
    assert np.mean(adaptive_err) <= 1.0 and max(adaptive_err) <= 3.0, adaptive_err
    assert max(plain_err) >= 5.0, plain_err
    # At the input instants (every 5th output), the right part of the picture, which the square never reaches,
    # is exactly the input's frame.
    assert all(np.array_equal(adaptive[k][:, 110:], plain[k][:, 110:]) for k in range(0, len(plain), 5))


def test_preview_shows_the_engines_decisions(rife) -> None:
    """``HoldPreview`` decides without a model what the engine decides with one: the same regions."""
    frames = x264(square_over_pan(8, 1.0), 18)
    _, _, pipe = plain_and_adaptive(rife, frames)
    preview = HoldPreview(0.3)
    decisions = [d for f in frames for d in preview.push(f)] + preview.flush()
    assert [d.index for d in decisions] == list(range(len(frames)))
    assert sum(len(d.groups) for d in decisions) == pipe.stats.held_groups > 0
    held = next(d for d in decisions if d.groups)
    tinted = tint_holds(frames[held.index], held.groups, held.block)
    changed = np.any(tinted != frames[held.index], axis=2)
    g = held.groups[0]
    blocks = g.blocks.numpy().repeat(held.block, 0).repeat(held.block, 1)[:H, :W]
    assert changed[blocks].mean() > 0.9 and not changed[~blocks].any()  # the group's blocks, and only they
    edge_colour = HOLD_TINTS[g.end - g.start]
    assert any(tuple(p) == edge_colour for p in tinted[blocks])  # outlined in its hold's colour


def test_show_holds_writes_the_picture_and_says_it(tmp_path, capsys) -> None:
    src, png = tmp_path / "held.mp4", tmp_path / "holds.png"
    frames = square_over_pan(8, 1.0)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                    f"{W}x{H}", "-r", "24", "-i", "-", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p",
                    str(src)], input=b"".join(f.tobytes() for f in frames), check=True)
    assert client_main(["-i", str(src), "--show-holds", str(png), "--frames", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"frame {i}" for i in range(6)]
    assert "held on twos between inputs 0 and 2" in lines[1] and lines[0].endswith("nothing re-timed")
    with av.open(str(png)) as container:
        sheet = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert sheet.shape == (6 * H + 5 * 4, 2 * W + 4, 3)  # a row per frame: the frame, a gap, the decision
    frame_1 = sheet[H + 4: 2 * H + 4]  # held: the decision half differs from the frame half (tinted) ...
    assert np.any(frame_1[:, :W] != frame_1[:, W + 4:])
    assert np.array_equal(sheet[:H, :W], sheet[:H, W + 4:])  # ... frame 0, with nothing re-timed, does not


def test_show_holds_usage(tmp_path) -> None:
    assert client_main(["--show-holds", str(tmp_path / "x.png")]) == 2  # no -i
    assert client_main(["-i", str(tmp_path / "x.mp4"), "-o", str(tmp_path / "y.mp4"),
                        "--show-holds", str(tmp_path / "x.png")]) == 2  # a picture, not a video
    assert client_main(["-i", str(tmp_path / "missing.mp4"), "--show-holds", str(tmp_path / "x.png")]) == 2
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert client_main(["-i", str(tmp_path / "junk.mp4"), "--show-holds", str(tmp_path / "x.png")]) == 65
    assert not (tmp_path / "x.png").exists()

