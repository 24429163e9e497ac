"""The pipe filter: frames from stdin through the engine to stdout, each output frame written as soon as it exists."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

import numpy as np

from ..settings import EngineSettings
from .engines import Engine, Placement, abandon_on_error, open_engine
from .pipe_io import FrameSink, FrameSource, NutSource, RawSource, Y4mSource
from .progress import Progress
from .rates import format_rational
from .sniff import sniff

log = logging.getLogger(__name__)


@dataclass
class PipeInput:
    """How to read stdin: sniffed (Y4M or NUT) unless ``raw_size`` says raw frames."""

    raw_size: tuple[int, int] | None = None
    pix_fmt: str = "rgb24"
    in_fps: Fraction | None = None
    cfr: Fraction | None = None
    matrix: str = "auto"


def open_source(stdin: BinaryIO, spec: PipeInput) -> FrameSource:
    """The frame source for stdin, by ``--raw`` or by its first bytes."""
    if spec.raw_size is not None:
        return RawSource(stdin, spec.raw_size, spec.pix_fmt, spec.cfr or spec.in_fps, spec.matrix)
    kind, stream = sniff(stdin)
    if kind == "y4m":
        return Y4mSource(stream, spec.matrix, spec.cfr or spec.in_fps)
    return NutSource(stream, spec.matrix, spec.in_fps, spec.cfr)


def output_frames_for(n_in: int, src_fps: Fraction, out_fps: Fraction) -> int:
    """Output frames that cover ``n_in`` input frames' duration: those presented before the input ends."""
    return math.ceil(n_in * Fraction(out_fps) / Fraction(src_fps))


def pump(frames: Iterable[np.ndarray], engine: Engine, src_fps: Fraction, emit: Callable[[np.ndarray], None],
         progress: Progress) -> tuple[int, int]:
    """Push every frame through the engine, handing each output frame to ``emit`` at once.

    The engine closes the stream with a frame at the input's end time (and, for some rates, one
    more); frames presented at or after the end are dropped so the output lasts as long as the input.
    """
    n_in = n_out = 0
    for frame in frames:
        n_in += 1
        for out in engine.push(frame):
            emit(out)
            n_out += 1
        progress.update(n_in, n_out)
    limit = output_frames_for(n_in, src_fps, engine.out_fps)
    for out in engine.flush():
        if n_out >= limit:
            break
        emit(out)
        n_out += 1
        progress.update(n_in, n_out)
    return n_in, n_out


def run_pipe(stdin: BinaryIO, stdout: BinaryIO, spec: PipeInput, settings: EngineSettings, placement: Placement,
             show_progress: bool) -> None:
    """Read stdin, interpolate, write stdout in the input's format at the new rate."""
    source = open_source(stdin, spec)
    log.info("input: %s", source.description)
    progress = Progress(show_progress)
    with abandon_on_error(open_engine(settings, source.rate, placement, progress.waiting)) as engine:
        sink: FrameSink = source.sink(stdout, engine.out_fps)
        n_in, n_out = pump(source, engine, source.rate, sink.write, progress)
        sink.close()
        progress.close()
    log.info("done: %d frames in, %d frames out at %s fps", n_in, n_out, format_rational(engine.out_fps))
