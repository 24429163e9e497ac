"""``mpd-demo``: render a short cel-style sample clip (drawings held on twos and threes, a scene cut),
then interpolate it to 60 fps in-process with file mode, and say where both files are.

Needs no daemon, no network and no input: only the installed package and its weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .. import __version__
from ..settings import PRECISIONS, EngineSettings
from .file.encoders import EncodeOptions
from .file.output_file import Overwrite
from .file.transcode import FileChoices, run_file
from .main import configure_logging, guarded
from .media.colour import ColourSpec, rgb_to_frame
from .media.input_options import InputOptions
from .placement import Placement
from .rates import format_rational, parse_rational

SAMPLE_RATE = Fraction(24000, 1001)
AUDIO_RATE = 48000
OUTLINE = (25, 20, 30)


def default_out_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "multipassdedup" / "demo"


def _disc(img: np.ndarray, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
    """A flat disc with a dark outline, like an inked and painted cel."""
    yy, xx = np.ogrid[: img.shape[0], : img.shape[1]]
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    img[d <= r + 2] = OUTLINE
    img[d <= r] = fill


def _box(img: np.ndarray, x: int, y: int, w: int, h: int, fill: tuple[int, int, int]) -> None:
    img[max(0, y - 2): y + h + 2, max(0, x - 2): x + w + 2] = OUTLINE
    img[y: y + h, x: x + w] = fill


def _background(width: int, height: int, sky: tuple[int, int, int], ground: tuple[int, int, int]) -> np.ndarray:
    """A painted background: sky gradient, a horizon, a ground band (wide enough to pan across)."""
    bg = np.zeros((height, width * 2, 3), np.uint8)
    ramp = np.linspace(0.75, 1.0, height)[:, None, None]
    bg[:] = (np.array(sky)[None, None, :] * ramp).astype(np.uint8)
    horizon = int(height * 0.7)
    bg[horizon:] = ground
    bg[horizon - 1: horizon + 1] = OUTLINE
    for i, x in enumerate(range(20, width * 2, 70)):  # trees, so the pan is visible
        _box(bg, x, horizon - 26 - (i % 2) * 8, 10, 26 + (i % 2) * 8, (40, 110, 50))
    return bg


def synth_clip(n_frames: int = 36, width: int = 256, height: int = 128) -> list[np.ndarray]:
    """Frames of a cel-like shot: background panning on ones, a ball drawn on twos, a box on threes; a cut at 2/3."""
    cut = n_frames * 2 // 3
    scenes = [_background(width, height, (150, 200, 245), (120, 170, 90)),
              _background(width, height, (245, 170, 120), (150, 120, 90))]
    frames = []
    for i in range(n_frames):
        scene = 0 if i < cut else 1
        local = i if scene == 0 else i - cut
        pan = local * 2 % width
        img = scenes[scene][:, pan: pan + width].copy()
        held2, held3 = local - local % 2, local - local % 3  # the drawing shown on frame i
        _disc(img, 30 + held2 * 7, height * 0.45 + 12 * np.sin(held2 / 3), 14, (230, 80, 70))
        _box(img, width - 60, int(height * 0.25 + 8 * np.sin(held3 / 2)), 24, 30, (250, 220, 90))
        frames.append(img)
    return frames


def write_sample(frames: list[np.ndarray], path: Path, rate: Fraction = SAMPLE_RATE) -> None:
    """Encode the frames as H.264 with a short AAC tone, so the demo also shows audio being carried over."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate, options={"crf": "16", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        for i, img in enumerate(frames):
            frame = rgb_to_frame(img, "yuv420p", ColourSpec("bt601"))
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(video.encode(frame))
        seconds = len(frames) / rate
        t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start: start + 1024], format="fltp", layout="mono")
            chunk.sample_rate = AUDIO_RATE
            chunk.pts = start
            out.mux(audio.encode(chunk))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mpd-demo",
        description="Render a short cel-style sample clip (drawings held on twos and threes, a scene cut), then "
                    "interpolate it to 60 fps in-process with file mode, and say where both files are. Needs no "
                    "daemon, no network and no input.")
    p.add_argument("--version", action="version", version=f"mpd-demo {__version__}")
    p.add_argument("--out-dir", type=Path, default=None, help=f"where to write (default {default_out_dir()})")
    p.add_argument("-m", "--model", default="rife", help="rife (default) or gmfss")
    p.add_argument("-fps", "--fps", default="60", help="output frame rate (default 60)")
    p.add_argument("--frames", type=int, default=36, help="length of the sample clip in frames (default 36)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--precision", type=str.lower, choices=PRECISIONS, default="auto",
                   help="arithmetic of the model calls (default auto; see mpd-client --precision)")
    p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=True,
                   help="keyframe re-timing instead of the passes (default on, as mpd-client; --no-adaptive: "
                        "the original method)")
    p.add_argument("-q", "--quiet", action="store_true", help="only the result lines")
    return p


def run(args: argparse.Namespace) -> None:
    out_dir = args.out_dir or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    sample, output = out_dir / "sample_24fps.mp4", out_dir / "sample_60fps.mp4"
    frames = synth_clip(max(4, args.frames))
    write_sample(frames, sample)
    print(f"sample: {sample} ({len(frames)} frames, {frames[0].shape[1]}x{frames[0].shape[0]}, "
          f"{format_rational(SAMPLE_RATE)} fps, drawings on twos and threes, a cut at frame "
          f"{len(frames) * 2 // 3})", flush=True)
    settings = EngineSettings(model=args.model, dst_fps=parse_rational(args.fps, "-fps"), precision=args.precision,
                              adaptive=args.adaptive)
    started = time.monotonic()
    result = run_file(sample, output, InputOptions(), settings, Placement(local=True, device=args.device),
                      EncodeOptions(preset="medium"), FileChoices(overwrite=Overwrite.ALWAYS),  # its own file
                      show_progress=sys.stderr.isatty() and not args.quiet)
    seconds = time.monotonic() - started
    s = result.stats
    print(f"output: {result.output} ({result.frames_out} frames, {format_rational(result.out_fps)} fps, "
          f"{result.codec} {result.pix_fmt}, audio copied)")
    print(f"figures: {result.frames_in} frames in -> {result.frames_out} out in {seconds:.1f} s; "
          f"{s.get('model_calls', '?')} model calls, {s.get('duplicate_skips', '?')} skipped as duplicates, "
          f"{s.get('scene_changes', '?')} scene change(s) held instead of morphed"
          + (f", {s.get('held_groups', '?')} held regions re-timed" if args.adaptive else ""))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("warning" if args.quiet else "info", command="mpd-demo")
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
