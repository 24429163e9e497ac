"""Interlaced input: the warning both modes give, and file mode's --deinterlace (libavfilter's bwdif via PyAV).

Interpolating woven fields as if they were frames smears the combing across the new frames;
bwdif rebuilds whole frames first. ``frame`` runs it with ``mode=send_frame``: one frame out per frame
in, so the frame rate (and everything timed from it) stays as it was. ``field`` runs it with
``mode=send_field``: one frame out per field, at twice the rate, so the motion each field caught (50
instants a second in 25 fps PAL) reaches the interpolation instead of being averaged away.
"""

from __future__ import annotations

from fractions import Fraction

import av
import av.filter

from ..errors import InputDataError

# AVFieldOrder values as streams report them (0 unknown, 1 progressive).
FIELD_ORDERS = {2: "top field first", 3: "bottom field first", 4: "top coded first, bottom shown first",
                5: "bottom coded first, top shown first"}
PROGRESSIVE = 1
DEINTERLACE_MODES = {"frame": "send_frame", "field": "send_field"}  # --deinterlace MODE -> bwdif's mode


def interlaced_warning(detail: str) -> str:
    """The one warning for interlaced input, with what the input says about its fields."""
    return f"the input is interlaced ({detail}); deinterlace it first for good results"


def field_order_text(field_order: int) -> str | None:
    """How an interlaced stream orders its fields, None for progressive or unknown."""
    return FIELD_ORDERS.get(int(field_order or 0))


class Deinterlacer:
    """Decoded frames in, deinterlaced frames out, built on the first frame: ``frame`` mode gives the same count at
    the same timestamps, ``field`` mode two per frame, each at its field's time (in a time base half the input's)."""

    def __init__(self, mode: str = "frame") -> None:
        if mode not in DEINTERLACE_MODES:
            raise ValueError(f"deinterlace mode must be one of {', '.join(DEINTERLACE_MODES)}, got {mode!r}")
        self.mode = mode
        self.graph: av.filter.Graph | None = None

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or Fraction(1, 1000))
        bwdif = graph.add("bwdif", f"mode={DEINTERLACE_MODES[self.mode]}:parity=auto:deint=all")
        sink = graph.add("buffersink")
        source.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()
        self.graph = graph

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        """Feed one decoded frame; returns the frames bwdif has finished (it holds one back)."""
        if self.graph is None:
            self._build(frame)
        try:
            self.graph.push(frame)
        except (av.error.FFmpegError, ValueError) as e:
            raise InputDataError(f"deinterlacing failed (the video changed size or format?): {e}") from None
        return self._drain()

    def flush(self) -> list[av.VideoFrame]:
        """The frame still held at the end of the input."""
        if self.graph is None:
            return []
        self.graph.push(None)
        return self._drain()

    def _drain(self) -> list[av.VideoFrame]:
        out = []
        while True:
            try:
                out.append(self.graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
