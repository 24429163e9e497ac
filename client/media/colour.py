"""YUV <-> RGB through libswscale (via PyAV) with the stream's colour matrix and range.

8-bit streams become HxWx3 uint8 RGB (``rgb24``); deeper ones HxWx3 uint16 (``rgb48le``), so a
10-bit stream keeps its precision through the engine.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from ..errors import UsageError

# ffmpeg's own default: bicubic chroma resampling. Measured on testsrc2 it round-trips 4:2:0 better
# than with ACCURATE_RND, and it converts exactly as `ffmpeg -pix_fmt` does.
SCALER = Interpolation.BICUBIC
# libswscale's slice threads (PyAV's default, threads=0) sometimes return wrong samples with this
# libav (measured: a few frames in 60 differ by up to 448/1023); one thread is always right.
THREADS = 1

MATRICES = {
    "bt601": Colorspace.ITU601,
    "bt709": Colorspace.ITU709,
    "bt2020": Colorspace.BT2020,
    "smpte240m": Colorspace.SMPTE240M,
    "fcc": Colorspace.FCC,
}
MATRIX_CHOICES = ("auto", *MATRICES)

# AVColorSpace values (as streams report them) -> the libswscale matrix that decodes them.
_AVCOL_SPC = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}


def guess_matrix(width: int, height: int) -> str:
    """The usual convention for untagged video: BT.709 for HD sizes, BT.601 for SD."""
    return "bt709" if width > 1024 or height > 576 else "bt601"


def matrix_for(name: str, width: int, height: int, stream_colorspace: int | None = None) -> str:
    """Resolve ``auto``: the stream's own tag when it has one, else a guess from the frame size."""
    if name != "auto":
        if name not in MATRICES:
            raise UsageError(f"unknown colour matrix {name!r}; choose from {', '.join(MATRIX_CHOICES)}")
        return name
    if stream_colorspace is not None and int(stream_colorspace) in _AVCOL_SPC:
        return _AVCOL_SPC[int(stream_colorspace)]
    return guess_matrix(width, height)


def rgb_format_for(sample_bytes: int) -> str:
    """The RGB layout the engine works in for samples of this size."""
    return "rgb48le" if sample_bytes > 1 else "rgb24"


@dataclass
class ColourSpec:
    """How YUV samples of a stream map to RGB: matrix name and full (JPEG) or limited (MPEG) range."""

    matrix: str = "bt601"
    full_range: bool = False

    @property
    def sws_colorspace(self) -> Colorspace:
        return MATRICES[self.matrix]

    @property
    def sws_range(self) -> ColorRange:
        return ColorRange.JPEG if self.full_range else ColorRange.MPEG


def frame_to_rgb(frame: VideoFrame, rgb_format: str, spec: ColourSpec) -> np.ndarray:
    """A decoded frame in any pixel format -> HxWx3 RGB array (uint8 for rgb24, uint16 for rgb48le)."""
    if frame.format.name == rgb_format:
        return frame.to_ndarray()
    if frame.format.name.startswith(("rgb", "bgr", "gbr", "argb", "abgr", "pal")):
        rgb = frame.reformat(format=rgb_format, interpolation=SCALER, threads=THREADS)
    else:
        rgb = frame.reformat(format=rgb_format, src_colorspace=spec.sws_colorspace,
                             src_color_range=spec.sws_range, interpolation=SCALER, threads=THREADS)
    return rgb.to_ndarray()


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, spec: ColourSpec) -> VideoFrame:
    """HxWx3 RGB array -> a frame in ``pix_fmt`` (YUV with the given matrix and range, or RGB as is)."""
    src = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
    if pix_fmt == src.format.name:
        return src
    if pix_fmt.startswith(("rgb", "bgr", "gbr")):
        return src.reformat(format=pix_fmt, interpolation=SCALER, threads=THREADS)
    return src.reformat(format=pix_fmt, dst_colorspace=spec.sws_colorspace, dst_color_range=spec.sws_range,
                        interpolation=SCALER, threads=THREADS)


# An output frame identical to one of the inputs around its time (a held drawing, a frame the engine copied) is
# written as that input's samples: YUV -> RGB -> YUV is not lossless. The inputs it may copy are the one at or
# before its time, COPY_BEFORE before that and COPY_AFTER after it, the latest first: inputs every engine has read
# when it returns that output (plain interpolation needs the pair around it), so which one is copied does not depend
# on when the output arrives -- a daemon's arrive a few frames after the in-process engine's, and the VapourSynth
# filter makes them in any order.
COPY_BEFORE, COPY_AFTER = 6, 1
REMEMBER_AT_MOST = 64  # inputs a pipe's converter keeps while outputs lag behind (a daemon's frames in flight)


def copy_sources(step: int, ratio: Fraction) -> range:
    """The input indices output ``step`` may be a copy of, the latest first (``ratio``: output frames per input)."""
    at = math.floor(Fraction(step) / ratio)
    return range(at + COPY_AFTER, at - COPY_BEFORE - 1, -1)


class PlanarConverter:
    """Packed plane bytes of one planar YUV format (as in Y4M or raw pipes) <-> RGB arrays.

    The last ``remember`` inputs are kept by index (0, 1, ... in the order converted) so that an output identical
    to one of them is written as that input's original samples (``from_rgb``; ``copy_sources`` says which).
    """

    def __init__(self, pix_fmt: str, width: int, height: int, sample_bytes: int, spec: ColourSpec,
                 remember: int = 8) -> None:
        self.pix_fmt = pix_fmt
        self.width, self.height = width, height
        self.sample_dtype = np.dtype("<u2") if sample_bytes == 2 else np.dtype(np.uint8)
        self.rgb_format = rgb_format_for(sample_bytes)
        self.spec = spec
        self.remember = remember
        self.recent: OrderedDict[int, tuple[np.ndarray, bytes]] = OrderedDict()  # input index -> (RGB, samples)
        self.frames_in = 0
        self.passed_through = 0

    def to_rgb(self, data: bytes) -> np.ndarray:
        """One frame's packed planes -> HxWx3 RGB."""
        frame = VideoFrame(self.width, self.height, self.pix_fmt)
        offset = 0
        for plane in frame.planes:
            n = plane.width * plane.height
            samples = np.frombuffer(data, self.sample_dtype, n, offset).reshape(plane.height, plane.width)
            offset += n * self.sample_dtype.itemsize
            view = np.frombuffer(plane, self.sample_dtype).reshape(plane.height, -1)
            view[:, : plane.width] = samples
        rgb = frame_to_rgb(frame, self.rgb_format, self.spec)
        if self.remember:
            self.recent[self.frames_in] = (rgb, bytes(data))
            while len(self.recent) > self.remember:
                self.recent.popitem(last=False)
        self.frames_in += 1
        return rgb

    def from_rgb(self, rgb: np.ndarray, sources: Iterable[int] | None = None) -> bytes:
        """HxWx3 RGB -> one frame's packed planes: the samples of the first input of ``sources`` (indices, the
        latest first: ``copy_sources``; None: every input kept, the latest first) that it is identical to, else
        the conversion."""
        for index in reversed(list(self.recent)) if sources is None else sources:
            seen = self.recent.get(index)
            if seen is not None and np.array_equal(seen[0], rgb):
                self.passed_through += 1
                return seen[1]
        frame = rgb_to_frame(rgb, self.pix_fmt, self.spec)
        parts = []
        for plane in frame.planes:
            view = np.frombuffer(plane, self.sample_dtype).reshape(plane.height, -1)
            parts.append(np.ascontiguousarray(view[:, : plane.width]).tobytes())
        return b"".join(parts)

    def forget_before(self, index: int) -> None:
        """Drop the inputs before ``index`` (no later output may copy them)."""
        while self.recent and next(iter(self.recent)) < index:
            self.recent.popitem(last=False)
