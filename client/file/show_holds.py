"""``mpd-client -i IN --show-holds PNG``: a picture of what adaptive re-timing decides on a stretch of the input.

Each input frame of the stretch (from ``-ss``, ``--frames`` of them) becomes one row of the PNG:
the frame as decoded, and beside it the same frame with the regions adaptive re-timing re-draws
tinted by their hold (twos green, threes yellow, fours red). A line
per frame on stdout says the same in words. The decision is the engine's own (``core``'s
``HoldPreview``: the same hold map and evidence check), made in this process without a model, so it
needs the engine extra but no daemon and no weights. Nothing is interpolated and no video is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ...engine_extra import ENGINE_EXTRA, engine_installed
from ...escaping import escaped
from ..errors import EngineNotInstalledError, InputDataError, OutputError, UsageError
from ..media.colour import ColourSpec, frame_to_rgb, matrix_for
from .transcode import check_paths, main_video, open_input

DEFAULT_FRAMES = 24  # rows of the picture when --frames is not given ...
MAX_FRAMES = 120  # ... and at most
SHEET_WIDTH = 960  # a row (frame and decision side by side) is scaled down to at most this many pixels
GAP = 4  # px between the two pictures of a row and between rows
HOLD_WORDS = {2: "twos", 3: "threes", 4: "fours"}


def decoded_frames(path: Path, start: Fraction | None, count: int) -> Iterator[np.ndarray]:
    """``count`` RGB frames of the input's video from ``start`` seconds (from its first frame)."""
    with open_input(path) as container:
        video = main_video(container)
        video.thread_type = "AUTO"
        base = video.start_time or 0
        spec = None
        if start:
            container.seek(int(base + start / video.time_base), stream=video, backward=True)
        shown = 0
        for frame in container.decode(video):
            if start and frame.pts is not None and (frame.pts - base) * video.time_base < start:
                continue
            if spec is None:
                spec = ColourSpec(matrix_for("auto", frame.width, frame.height, frame.colorspace),
                                  frame.color_range == 2)
            yield frame_to_rgb(frame, "rgb24", spec)
            shown += 1
            if shown == count:
                return


def shrink(picture: np.ndarray, factor: int) -> np.ndarray:
    """Box-average an HxWx3 uint8 picture down by an integer ``factor``."""
    if factor <= 1:
        return picture
    h, w = picture.shape[0] // factor * factor, picture.shape[1] // factor * factor
    boxes = picture[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).astype(np.float32)
    return np.round(boxes.mean(axis=(1, 3))).astype(np.uint8)


def png_bytes(picture: np.ndarray) -> bytes:
    """An HxWx3 uint8 picture encoded as PNG (libav's encoder)."""
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = picture.shape[1], picture.shape[0], "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
    return b"".join(bytes(p) for p in codec.encode(frame)) + b"".join(bytes(p) for p in codec.encode(None))


def describe(index: int, groups: list, block: int, height: int, width: int) -> str:
    """One line on a frame's decision: which regions, how long each drawing is held, share of the picture."""
    if not groups:
        return f"frame {index}: nothing re-timed"
    parts = []
    for g in groups:
        kind = f"held on {HOLD_WORDS.get(g.end - g.start, '?')}"
        share = float(g.blocks.sum()) * block * block / (height * width)
        parts.append(f"{kind} between inputs {g.start} and {g.end} ({share:.0%} of the picture)")
    return f"frame {index}: " + "; ".join(parts)


def write_hold_sheet(src: Path, dst: Path, start: Fraction | None, frames: int | None,
                     scdet_threshold: float | None, log=print) -> int:
    """Write the picture of the decisions on ``frames`` input frames from ``start`` to ``dst``; the frames shown."""
    if not engine_installed():
        raise EngineNotInstalledError(f"--show-holds runs the engine's hold map in this process, and the engine is "
                                      f"not installed: install {ENGINE_EXTRA}")
    check_paths(src, dst)
    if dst.suffix.lower() != ".png":
        raise UsageError(f"--show-holds writes a PNG picture: name it .png, got {escaped(dst)}")
    count = DEFAULT_FRAMES if frames is None else frames
    if not 1 <= count <= MAX_FRAMES:
        raise UsageError(f"--show-holds shows 1 to {MAX_FRAMES} frames, --frames asked for {count}")
    from ...core.pipeline.hold_preview import HoldPreview, tint_holds

    preview = HoldPreview(scdet_threshold)
    pictures: list[np.ndarray] = []
    rows: dict[int, np.ndarray] = {}
    for picture in decoded_frames(src, start, count):
        pictures.append(picture)
        decisions = preview.push(picture)
        for d in decisions:
            rows[d.index] = _row(pictures[d.index], tint_holds(pictures[d.index], d.groups, d.block))
            log(describe(d.index, d.groups, d.block, *pictures[d.index].shape[:2]))
    if not pictures:
        raise InputDataError(f"{escaped(src)} has no video frame" + (f" after -ss {float(start):g}" if start else ""))
    for d in preview.flush():
        rows[d.index] = _row(pictures[d.index], tint_holds(pictures[d.index], d.groups, d.block))
        log(describe(d.index, d.groups, d.block, *pictures[d.index].shape[:2]))
    sheet = _stack([rows[i] for i in sorted(rows)])
    try:
        dst.write_bytes(png_bytes(sheet))
    except OSError as e:
        raise OutputError(f"cannot write {escaped(dst)}: {e.strerror or e}") from None
    return len(rows)


def _row(picture: np.ndarray, tinted: np.ndarray) -> np.ndarray:
    height, width = picture.shape[:2]
    factor = max(1, math.ceil((2 * width + GAP) / SHEET_WIDTH))
    gap = np.full((height, GAP * factor, 3), 255, np.uint8)
    return shrink(np.concatenate([picture, gap, tinted], axis=1), factor)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    out = []
    for r in rows:
        out.append(np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(out, axis=0)[:-GAP]
