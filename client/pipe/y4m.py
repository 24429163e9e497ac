"""YUV4MPEG2 streams: header parsing, a frame-by-frame reader and a writer (the format ffmpeg's yuv4mpegpipe speaks).

A stream is one header line ``YUV4MPEG2 W.. H.. F.. I.. A.. C.. X..`` and then, per frame,
``FRAME[ params]\\n`` followed by the raw planes (Y, then U and V; 16-bit samples little-endian).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

from ...proto.wire import frame_size_problem
from ..errors import InputDataError
from .byte_streams import read_exactly

MAGIC = b"YUV4MPEG2"
FRAME = b"FRAME"
MAX_HEADER = 4096

# Y4M colour tags -> libav pixel formats (the ones ffmpeg reads and writes).
_COLOUR_TAGS = {
    "mono": "gray", "mono9": "gray9le", "mono10": "gray10le", "mono12": "gray12le", "mono16": "gray16le",
    "411": "yuv411p",
    "420": "yuv420p", "420jpeg": "yuv420p", "420mpeg2": "yuv420p", "420paldv": "yuv420p",
    "422": "yuv422p", "444": "yuv444p",
}
for _family in ("420", "422", "444"):
    for _bits in (9, 10, 12, 14, 16):
        _COLOUR_TAGS[f"{_family}p{_bits}"] = f"yuv{_family}p{_bits}le"


@dataclass
class PlaneLayout:
    """Where the samples of one frame are: per plane (width, height), and bytes per sample."""

    planes: list[tuple[int, int]]
    sample_bytes: int

    @property
    def frame_bytes(self) -> int:
        return sum(w * h for w, h in self.planes) * self.sample_bytes


def plane_layout(pix_fmt: str, width: int, height: int) -> PlaneLayout:
    """Plane sizes of a planar YUV or grey format named like libav does (``yuv420p10le``, ``gray``)."""
    bits = 8
    name = pix_fmt
    if name.endswith("le"):
        name = name[:-2]
        digits = "".join(c for c in name[-2:] if c.isdigit())
        bits = int(digits)
        name = name[: -len(digits)]
    sample = 1 if bits <= 8 else 2
    if name == "gray":
        return PlaneLayout([(width, height)], sample)
    sub = {"yuv420p": (1, 1), "yuv422p": (1, 0), "yuv444p": (0, 0), "yuv411p": (2, 0)}.get(name)
    if sub is None:
        raise ValueError(f"not a planar YUV format: {pix_fmt}")
    cw, ch = -(-width >> sub[0]), -(-height >> sub[1])
    return PlaneLayout([(width, height), (cw, ch), (cw, ch)], sample)


@dataclass
class Y4mHeader:
    """The stream header; ``tokens`` keeps every parameter as read so a writer can pass them through."""

    width: int
    height: int
    rate: Fraction
    colour: str = "420jpeg"
    interlace: str = "p"
    color_range: str | None = None  # "FULL" or "LIMITED" from ffmpeg's XCOLORRANGE extension
    tokens: list[str] = field(default_factory=list)

    @property
    def pix_fmt(self) -> str:
        try:
            return _COLOUR_TAGS[self.colour]
        except KeyError:
            supported = ", ".join(sorted(_COLOUR_TAGS))
            raise InputDataError(f"unsupported YUV4MPEG2 colour space C{self.colour} "
                                 f"(supported: {supported})") from None

    @property
    def layout(self) -> PlaneLayout:
        return plane_layout(self.pix_fmt, self.width, self.height)

    @classmethod
    def parse(cls, line: bytes) -> Y4mHeader:
        """Parse a header line (with or without its newline)."""
        if not line.startswith(MAGIC + b" "):
            raise InputDataError("input is not a YUV4MPEG2 stream")
        try:
            tokens = line[len(MAGIC):].decode("ascii").split()
        except UnicodeDecodeError:
            raise InputDataError("YUV4MPEG2 header is not ASCII") from None
        values: dict[str, str] = {}
        for tok in tokens:
            if tok[0] == "X":
                if tok.startswith("XCOLORRANGE="):
                    values["range"] = tok.split("=", 1)[1].upper()
            else:
                values[tok[0]] = tok[1:]
        try:
            width, height = int(values["W"]), int(values["H"])
            num, den = values.get("F", "25:1").split(":")
            rate = Fraction(int(num), int(den))
        except (KeyError, ValueError, ZeroDivisionError):
            raise InputDataError(f"bad YUV4MPEG2 header: {line.decode('ascii', 'replace').strip()}") from None
        if width <= 0 or height <= 0 or rate <= 0:
            raise InputDataError(f"bad YUV4MPEG2 header: {line.decode('ascii', 'replace').strip()}")
        if (problem := frame_size_problem(width, height)) is not None:  # decided before any frame is allocated
            raise InputDataError(f"YUV4MPEG2 header: {problem}")
        header = cls(width, height, rate, values.get("C", "420jpeg"), values.get("I", "p"), values.get("range"),
                     tokens)
        header.layout  # noqa: B018 -- reject unsupported colour spaces up front
        return header

    def with_rate(self, rate: Fraction) -> Y4mHeader:
        """The same stream description at another frame rate (every other parameter passed through)."""
        rate = Fraction(rate)
        token = f"F{rate.numerator}:{rate.denominator}"
        tokens = [token if t.startswith("F") else t for t in self.tokens]
        if token not in tokens:
            tokens.insert(min(2, len(tokens)), token)
        return Y4mHeader(self.width, self.height, rate, self.colour, self.interlace, self.color_range, tokens)

    def encode(self) -> bytes:
        tokens = self.tokens or [f"W{self.width}", f"H{self.height}", f"F{self.rate.numerator}:{self.rate.denominator}",
                                 f"I{self.interlace}", "A1:1", f"C{self.colour}"]
        return MAGIC + b" " + " ".join(tokens).encode("ascii") + b"\n"


class Y4mReader:
    """Reads one YUV4MPEG2 stream from a binary file object, frame by frame (never more than one frame held)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        line = stream.readline(MAX_HEADER)
        if not line:
            raise InputDataError("no input: stdin is empty")
        if not line.endswith(b"\n"):
            raise InputDataError("input is not a YUV4MPEG2 stream" if not line.startswith(MAGIC)
                                 else "YUV4MPEG2 header is truncated or too long")
        self.header = Y4mHeader.parse(line)
        self.frame_bytes = self.header.layout.frame_bytes
        self.frames_read = 0

    def read_frame(self) -> bytearray | None:
        """The next frame's plane data, or None at the end of the stream."""
        line = self.stream.readline(MAX_HEADER)
        if not line:
            return None
        if not line.startswith(FRAME) or not line.endswith(b"\n"):
            raise InputDataError(f"corrupt YUV4MPEG2 stream: no FRAME marker before frame {self.frames_read}")
        data = read_exactly(self.stream, self.frame_bytes)
        if len(data) != self.frame_bytes:
            raise InputDataError(f"YUV4MPEG2 stream ends inside frame {self.frames_read} "
                                 f"({len(data)} of {self.frame_bytes} bytes)")
        self.frames_read += 1
        return data

    def __iter__(self) -> Iterator[bytearray]:
        while (data := self.read_frame()) is not None:
            yield data


class Y4mWriter:
    """Writes a YUV4MPEG2 stream, flushing after every frame so the reader downstream sees it at once."""

    def __init__(self, stream: BinaryIO, header: Y4mHeader) -> None:
        self.stream = stream
        self.header = header
        self.frame_bytes = header.layout.frame_bytes
        stream.write(header.encode())
        stream.flush()

    def write_frame(self, data: bytes | memoryview) -> None:
        if len(data) != self.frame_bytes:
            raise ValueError(f"a frame of this stream has {self.frame_bytes} bytes, got {len(data)}")
        self.stream.write(FRAME + b"\n")
        self.stream.write(data)
        self.stream.flush()
