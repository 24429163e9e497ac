"""The pipe filter: frames from stdin through the engine to stdout, each output frame written as soon as it exists."""

from __future__ import annotations

import logging
from typing import BinaryIO

from ...settings import EngineSettings
from ..engine import Engine, abandon_on_error, pump
from ..errors import InputDataError
from ..media.input_options import InputOptions
from ..placement import Placement, daemon_frame_limit, open_engine
from ..progress import Progress
from ..rates import format_rational
from .formats import FrameSink, FrameSource, NutSource, RawSource, Y4mSource
from .sniff import sniff

log = logging.getLogger(__name__)


def open_source(stdin: BinaryIO, spec: InputOptions) -> FrameSource:
    """The frame source for stdin, by ``--raw`` or by its first bytes."""
    if spec.raw_size is not None:
        return RawSource(stdin, spec.raw_size, spec.pix_fmt, spec.cfr or spec.in_fps, spec.matrix)
    kind, stream = sniff(stdin)
    if kind == "y4m":
        return Y4mSource(stream, spec.matrix, spec.cfr or spec.in_fps)
    return NutSource(stream, spec.matrix, spec.in_fps, spec.cfr)


def check_frame_limit(source: FrameSource, engine: Engine, placement: Placement) -> None:
    """Refuse a stream whose frames are larger than the daemon serves before the first one is read (InputDataError,
    exit 65, as the daemon's own refusal would be): a header may announce 16384x16384 16-bit frames."""
    limit = daemon_frame_limit(engine, placement)
    if limit is not None and source.width * source.height > limit[1]:
        raise InputDataError(f"the input's frames are {source.width}x{source.height}, more than the "
                             f"{limit[1]} pixels the daemon at {limit[0]} serves (its --max-frame-pixels)")


def run_pipe(stdin: BinaryIO, stdout: BinaryIO, spec: InputOptions, settings: EngineSettings, placement: Placement,
             show_progress: bool) -> None:
    """Read stdin, interpolate, write stdout in the input's format at the new rate."""
    source = open_source(stdin, spec)
    log.info("input: %s", source.description)
    progress = Progress(show_progress)
    with abandon_on_error(open_engine(settings, source.rate, placement, progress.waiting)) as engine:
        check_frame_limit(source, engine, placement)
        sink: FrameSink = source.sink(stdout, engine.out_fps)
        n_in, n_out = pump(source, engine, source.rate, sink.write, progress)
        sink.close()
        progress.close()
    log.info("done: %d frames in, %d frames out at %s fps", n_in, n_out, format_rational(engine.out_fps))
