"""Frame sources and sinks for the pipe filter: YUV4MPEG2, NUT (through PyAV) and raw frames.

A source yields HxWx3 RGB arrays (uint8, or uint16 for deeper input) and builds the matching
sink: output in the same format as the input, at the engine's output rate.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from fractions import Fraction
from typing import BinaryIO, Protocol

import av
import numpy as np

from ...proto.wire import frame_size_problem
from ..errors import InputDataError, OutputError, UsageError
from ..media.cadence import CfrResampler, ConstantRateGuard
from ..media.colour import (
    REMEMBER_AT_MOST,
    ColourSpec,
    PlanarConverter,
    copy_sources,
    frame_to_rgb,
    matrix_for,
    rgb_format_for,
    rgb_to_frame,
)
from ..media.deinterlace import interlaced_warning
from ..rates import format_rational
from .byte_streams import read_exactly
from .y4m import Y4mReader, Y4mWriter, plane_layout

log = logging.getLogger(__name__)

RAW_RGB = {"rgb24": np.dtype(np.uint8), "rgb48le": np.dtype("<u2")}


class FrameSink(Protocol):
    def write(self, rgb: np.ndarray) -> None: ...

    def close(self) -> None: ...


class FrameSource(Protocol):
    rate: Fraction
    description: str
    width: int  # of every frame, known before the first is read
    height: int

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def sink(self, stream: BinaryIO, out_fps: Fraction) -> FrameSink: ...


class OutputStream:
    """A binary output (stdout) whose failures become OutputError: closed pipe, disk full."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def write(self, data: bytes | memoryview) -> int:
        try:
            self._stream.write(data)
        except OSError as e:
            raise output_error(e) from None
        return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            raise output_error(e) from None


def output_error(e: OSError) -> OutputError:
    if isinstance(e, BrokenPipeError) or e.errno == errno.EPIPE:
        return OutputError("output closed by the reader (broken pipe)")
    return OutputError(f"cannot write the output: {e.strerror or e}")


# -- YUV4MPEG2 ---------------------------------------------------------------------------------


class Y4mSource:
    """Frames of a YUV4MPEG2 stream, converted to RGB with the stream's matrix and range."""

    def __init__(self, stream: BinaryIO, matrix: str = "auto", in_fps: Fraction | None = None) -> None:
        self.reader = Y4mReader(stream)
        h = self.reader.header
        self.width, self.height = h.width, h.height
        self.rate = in_fps or h.rate
        self.spec = ColourSpec(matrix_for(matrix, h.width, h.height), h.color_range == "FULL")
        layout = h.layout
        self.converter = PlanarConverter(h.pix_fmt, h.width, h.height, layout.sample_bytes, self.spec,
                                         remember=REMEMBER_AT_MOST)
        self.description = (f"YUV4MPEG2 {h.width}x{h.height} {h.pix_fmt} {format_rational(self.rate)} fps "
                            f"({self.spec.matrix}, {'full' if self.spec.full_range else 'limited'} range)")
        if h.interlace not in ("p", "?"):
            log.warning("%s", interlaced_warning(f"I{h.interlace}"))

    def __iter__(self) -> Iterator[np.ndarray]:
        for data in self.reader:
            yield self.converter.to_rgb(data)

    def sink(self, stream: BinaryIO, out_fps: Fraction) -> Y4mSink:
        return Y4mSink(stream, self.reader.header.with_rate(out_fps), self.converter, Fraction(out_fps) / self.rate)


class CopiedSamples:
    """Output frames as packed planes, a copy of an input around its time written as that input's samples
    (``media.colour.copy_sources``): the same choice whenever the engine returns the output."""

    def __init__(self, converter: PlanarConverter, ratio: Fraction) -> None:
        self.converter = converter
        self.ratio = ratio
        self.step = 0

    def __call__(self, rgb: np.ndarray) -> bytes:
        data = self.converter.from_rgb(rgb, copy_sources(self.step, self.ratio))
        self.step += 1
        self.converter.forget_before(copy_sources(self.step, self.ratio)[-1])
        return data


class Y4mSink:
    """Writes RGB frames as a YUV4MPEG2 stream in the input's layout, one flush per frame."""

    def __init__(self, stream: BinaryIO, header, converter: PlanarConverter, ratio: Fraction) -> None:
        self.writer = Y4mWriter(OutputStream(stream), header)
        self.samples = CopiedSamples(converter, ratio)

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write_frame(self.samples(rgb))

    def close(self) -> None:
        self.writer.stream.flush()


# -- NUT ---------------------------------------------------------------------------------------


class NutSource:
    """Frames of a NUT stream read through PyAV, with their timestamps checked (or resampled by --cfr)."""

    def __init__(self, stream: BinaryIO, matrix: str = "auto", in_fps: Fraction | None = None,
                 cfr: Fraction | None = None) -> None:
        try:
            self.container = av.open(stream, format="nut", mode="r")
        except av.error.FFmpegError as e:
            raise InputDataError(f"cannot read the NUT stream on stdin: {e}") from None
        if not self.container.streams.video:
            raise InputDataError("the NUT stream on stdin has no video")
        self.video = self.container.streams.video[0]
        ctx = self.video.codec_context
        self.width, self.height = ctx.width, ctx.height
        if (problem := frame_size_problem(self.width, self.height)) is not None:
            raise InputDataError(f"the NUT stream on stdin: {problem}")
        self.pix_fmt = ctx.pix_fmt or "rgb24"
        self.cfr = cfr
        rate = cfr or in_fps or self.video.average_rate or self.video.guessed_rate
        if not rate:
            raise InputDataError("the NUT stream does not say its frame rate; pass --in-fps RATE")
        self.rate = Fraction(rate)
        try:
            depth = max(c.bits for c in av.VideoFormat(self.pix_fmt).components)
        except (ValueError, av.error.FFmpegError):
            raise InputDataError(f"unsupported pixel format {self.pix_fmt} in the NUT stream") from None
        self.rgb_format = rgb_format_for(2 if depth > 8 else 1)
        self.spec = ColourSpec(matrix_for(matrix, self.width, self.height, ctx.colorspace), ctx.color_range == 2)
        self.first_time: Fraction | None = None
        self.description = f"NUT {self.width}x{self.height} {self.pix_fmt} {format_rational(self.rate)} fps"

    def _decoded(self) -> Iterator[tuple[np.ndarray, Fraction | None]]:
        try:
            for frame in self.container.decode(self.video):
                tb = frame.time_base or self.video.time_base
                time = frame.pts * tb if frame.pts is not None and tb else None
                if self.first_time is None and time is not None:
                    self.first_time = Fraction(time)
                yield frame_to_rgb(frame, self.rgb_format, self.spec), time
        except av.error.FFmpegError as e:
            raise InputDataError(f"corrupt NUT stream on stdin: {e}") from None

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.cfr is not None:
            resampler: CfrResampler[np.ndarray] = CfrResampler(self.cfr)
            for rgb, time in self._decoded():
                yield from resampler.push(rgb, time)
            yield from resampler.flush()
            return
        guard = ConstantRateGuard(self.rate)
        for rgb, time in self._decoded():
            guard.check(time)
            yield rgb

    def sink(self, stream: BinaryIO, out_fps: Fraction) -> NutSink:
        out_pix = self.pix_fmt if self.video.codec_context.name == "rawvideo" else self.rgb_format
        return NutSink(stream, self, out_fps, out_pix)


class NutSink:
    """Writes RGB frames as rawvideo in a NUT stream (PyAV), timestamps ``start + k / out_fps``."""

    def __init__(self, stream: BinaryIO, source: NutSource, out_fps: Fraction, pix_fmt: str) -> None:
        self.output = OutputStream(stream)
        self.source = source
        self.out_fps = Fraction(out_fps)
        self.pix_fmt = pix_fmt
        self.container = None
        self.stream = None
        self.index = 0

    def _open(self) -> None:
        # Opened at the first frame: the stream's first timestamp is known by then.
        try:
            self.container = av.open(self.output, mode="w", format="nut", container_options={"flush_packets": "1"})
            self.stream = self.container.add_stream("rawvideo", rate=self.out_fps)
        except av.error.FFmpegError as e:
            raise OutputError(f"cannot start the NUT output: {e}") from None
        self.stream.width, self.stream.height = self.source.width, self.source.height
        self.stream.pix_fmt = self.pix_fmt
        self.stream.time_base = 1 / self.out_fps
        self.stream.codec_context.time_base = 1 / self.out_fps
        first = self.source.first_time or Fraction(0)
        self.offset = round(first * self.out_fps)

    def write(self, rgb: np.ndarray) -> None:
        if self.container is None:
            self._open()
        frame = rgb_to_frame(rgb, self.pix_fmt, self.source.spec)
        frame.pts = self.offset + self.index
        frame.time_base = self.stream.codec_context.time_base
        self.index += 1
        self._mux(self.stream.encode(frame))

    def _mux(self, packets) -> None:
        try:
            self.container.mux(packets)
        except OutputError:
            raise
        except OSError as e:
            raise output_error(e) from None
        except av.error.FFmpegError as e:
            raise OutputError(f"cannot write the NUT output: {e}") from None

    def close(self) -> None:
        if self.container is None:
            self._open()
        self._mux(self.stream.encode(None))
        try:
            self.container.close()
        except OSError as e:
            raise output_error(e) from None
        except av.error.FFmpegError as e:
            raise OutputError(f"cannot finish the NUT output: {e}") from None
        self.output.flush()


# -- raw ---------------------------------------------------------------------------------------


class RawSource:
    """Headerless frames of a fixed size and pixel format (``--raw WxH --pix-fmt``), at ``--in-fps``."""

    def __init__(self, stream: BinaryIO, size: tuple[int, int], pix_fmt: str, rate: Fraction | None,
                 matrix: str = "auto") -> None:
        if rate is None:
            raise UsageError("--raw needs --in-fps RATE (raw frames carry no frame rate)")
        self.stream = stream
        self.width, self.height = size
        self.pix_fmt = pix_fmt
        self.rate = Fraction(rate)
        if pix_fmt in RAW_RGB:
            self.dtype = RAW_RGB[pix_fmt]
            self.frame_bytes = self.width * self.height * 3 * self.dtype.itemsize
            self.converter = None
        else:
            try:
                layout = plane_layout(pix_fmt, self.width, self.height)
            except ValueError:
                raise UsageError(f"--pix-fmt must be rgb24, rgb48le or a planar YUV format, got {pix_fmt}") from None
            spec = ColourSpec(matrix_for(matrix, self.width, self.height))
            self.converter = PlanarConverter(pix_fmt, self.width, self.height, layout.sample_bytes, spec,
                                             remember=REMEMBER_AT_MOST)
            self.frame_bytes = layout.frame_bytes
        self.description = f"raw {self.width}x{self.height} {pix_fmt} {format_rational(self.rate)} fps"
        self.frames_read = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            data = read_exactly(self.stream, self.frame_bytes)
            if not data:
                return
            if len(data) != self.frame_bytes:
                raise InputDataError(f"raw input ends inside frame {self.frames_read} ({len(data)} of "
                                     f"{self.frame_bytes} bytes); check --raw and --pix-fmt")
            self.frames_read += 1
            if self.converter is not None:
                yield self.converter.to_rgb(bytes(data))
            else:
                yield np.frombuffer(data, self.dtype).reshape(self.height, self.width, 3).astype(
                    self.dtype.newbyteorder("="), copy=False)

    def sink(self, stream: BinaryIO, out_fps: Fraction) -> RawSink:
        return RawSink(stream, self, Fraction(out_fps) / self.rate)


class RawSink:
    """Writes frames back in the raw input's pixel format, one flush per frame."""

    def __init__(self, stream: BinaryIO, source: RawSource, ratio: Fraction) -> None:
        self.output = OutputStream(stream)
        self.source = source
        self.samples = None if source.converter is None else CopiedSamples(source.converter, ratio)

    def write(self, rgb: np.ndarray) -> None:
        if self.samples is not None:
            self.output.write(self.samples(rgb))
        else:
            self.output.write(np.ascontiguousarray(rgb, dtype=self.source.dtype).tobytes())
        self.output.flush()

    def close(self) -> None:
        self.output.flush()
