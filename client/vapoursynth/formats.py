"""A VapourSynth clip's planes <-> the RGB frames the engine takes, converted exactly as mpd-client's pipe does.

The formats are the pipe's: planar YUV 4:2:0, 4:2:2, 4:4:4 and 4:1:1 (8 bits; 4:1:1 only 8) and 9, 10, 12, 14
or 16 bits, grey at 8, 9, 10, 12 or 16 bits (YUV4MPEG2's ``mono`` tags), and planar RGB at 8 to 16 bits (as a
NUT stream of ``gbrp``). YUV and grey go through ``media.colour.PlanarConverter``, the converter of the YUV4MPEG2
and raw pipes, with the clip's matrix and range; RGB through libswscale's lossless ``gbrp`` <-> ``rgb24`` (8 bits)
or ``rgb48le`` (deeper). Nothing here imports VapourSynth: the filter hands over the format's numbers and the
planes as arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..media.colour import ColourSpec, PlanarConverter, matrix_for

# VapourSynth's colour families, by the names its ColorFamily enum gives them.
YUV, GRAY, RGB = "YUV", "GRAY", "RGB"
# (horizontal, vertical) chroma subsampling, as log2 -> libav's name for it
_SUBSAMPLING = {(1, 1): "yuv420p", (1, 0): "yuv422p", (0, 0): "yuv444p", (2, 0): "yuv411p"}
_DEEP_BITS = {YUV: (9, 10, 12, 14, 16), GRAY: (9, 10, 12, 16), RGB: (9, 10, 12, 14, 16)}
# VapourSynth's planes R, G, B are libav's gbrp planes 2, 0, 1; libav's G, B, R are VapourSynth's 1, 2, 0.
_RGB_PLANES = (2, 0, 1)
_GBR_PLANES = (1, 2, 0)
SUPPORTED = ("8- to 16-bit integer YUV 4:2:0, 4:2:2 or 4:4:4 (4:1:1 at 8 bits), grey at 8, 9, 10, 12 or 16 bits, "
             "or RGB at 8 to 16 bits")


@dataclass(frozen=True)
class ClipFormat:
    """What the filter needs of a clip's format: family, bits, chroma subsampling (log2), integer samples."""

    name: str  # VapourSynth's name of the format, for messages (YUV420P10)
    family: str  # YUV, GRAY or RGB
    bits: int
    subsampling: tuple[int, int] = (0, 0)
    integer: bool = True


def pix_fmt_of(fmt: ClipFormat) -> str:
    """libav's pixel format for the clip's planes; UsageError for a format the pipe does not take."""
    unsupported = UsageError(f"unsupported format {fmt.name} (the filter takes what mpd-client's pipe takes: "
                             f"{SUPPORTED})")
    if not fmt.integer or fmt.family not in (YUV, GRAY, RGB):
        raise unsupported
    if fmt.family == YUV:
        base = _SUBSAMPLING.get(fmt.subsampling)
    else:
        base = "gray" if fmt.family == GRAY else "gbrp"
    if base is None or (fmt.bits != 8 and (fmt.bits not in _DEEP_BITS[fmt.family] or base == "yuv411p")):
        raise unsupported
    return base if fmt.bits == 8 else f"{base}{fmt.bits}le"


@dataclass
class ColourProps:
    """The frame properties that say how YUV maps to RGB: ``_Matrix`` (ITU-T H.273) and ``_Range``."""

    matrix: int | None = None
    full_range: bool = False

    @classmethod
    def of(cls, props: dict) -> ColourProps:
        """From a frame's properties (``_Range``, or the older ``_ColorRange`` whose 0 is full range)."""
        matrix = props.get("_Matrix")
        full = int(props["_Range"]) == 1 if "_Range" in props else \
            int(props["_ColorRange"]) == 0 if "_ColorRange" in props else False
        return cls(None if matrix is None else int(matrix), full)


class FrameCodec:
    """One clip's planes <-> HxWx3 RGB arrays (uint8 for 8-bit clips, uint16 deeper), as the pipe converts them.

    ``matrix`` is mpd-client's ``--matrix``: ``auto`` takes the clip's ``_Matrix`` when it names one, else the
    usual guess from the frame size, as the pipe does for an untagged stream. No frame is remembered: the filter
    decides itself which input an output copies (``encode``'s ``copies``), whatever order frames are asked in.
    """

    def __init__(self, fmt: ClipFormat, width: int, height: int, colour: ColourProps, matrix: str = "auto") -> None:
        self.format = fmt
        self.pix_fmt = pix_fmt_of(fmt)
        self.width, self.height = width, height
        self.sample_dtype = np.dtype("<u2") if fmt.bits > 8 else np.dtype(np.uint8)
        spec = ColourSpec(matrix_for(matrix, width, height, colour.matrix), colour.full_range)
        self.spec = spec
        self.converter = PlanarConverter(self.pix_fmt, width, height, self.sample_dtype.itemsize, spec, remember=0)
        sub_w, sub_h = fmt.subsampling if fmt.family == YUV else (0, 0)
        chroma = (-(-width >> sub_w), -(-height >> sub_h))
        self.plane_sizes = [(width, height)] if fmt.family == GRAY else [(width, height), chroma, chroma]

    @property
    def description(self) -> str:
        """The format and, for YUV, how it maps to RGB (for the log)."""
        if self.format.family == RGB:
            return f"{self.format.name} {self.width}x{self.height}"
        return (f"{self.format.name} {self.width}x{self.height} ({self.spec.matrix}, "
                f"{'full' if self.spec.full_range else 'limited'} range)")

    def pack(self, planes: list[np.ndarray]) -> bytes:
        """The clip's planes (VapourSynth's order) as one frame of packed libav planes (gbrp order for RGB)."""
        order = _GBR_PLANES if self.format.family == RGB else range(len(planes))
        return b"".join(np.ascontiguousarray(planes[i], dtype=self.sample_dtype).tobytes() for i in order)

    def unpack(self, data: bytes) -> list[np.ndarray]:
        """Packed libav planes -> the clip's planes (VapourSynth's order), as arrays over ``data``."""
        arrays, offset = [], 0
        for w, h in self.plane_sizes:
            arrays.append(np.frombuffer(data, self.sample_dtype, w * h, offset).reshape(h, w))
            offset += w * h * self.sample_dtype.itemsize
        if self.format.family == RGB:
            arrays = [arrays[i] for i in _RGB_PLANES]
        return arrays

    def to_rgb(self, packed: bytes) -> np.ndarray:
        """One packed frame -> the engine's RGB array."""
        return self.converter.to_rgb(packed)

    def encode(self, rgb: np.ndarray, copies: list[tuple[np.ndarray, bytes]]) -> bytes:
        """An output frame -> packed planes. An output identical to one of ``copies`` (the inputs it may copy as
        (RGB, packed), the latest first: ``media.colour.copy_sources``) is that input's samples, as the pipe writes
        a frame the engine copied: YUV -> RGB -> YUV is not lossless."""
        for seen, packed in copies:
            if np.array_equal(seen, rgb):
                return packed
        return self.converter.from_rgb(rgb)
