"""How to read the input: the options that both the pipe filter and file mode take."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass
class InputOptions:
    """How to read the input.

    ``raw_size`` (with ``pix_fmt``) says stdin carries raw frames (pipe only; otherwise Y4M or NUT is
    sniffed); ``in_fps`` gives the rate where the input has none or it is wrong; ``cfr`` converts a
    variable-rate input to that constant rate; ``matrix`` names the YUV matrix (``auto``: the input's).
    """

    raw_size: tuple[int, int] | None = None
    pix_fmt: str = "rgb24"
    in_fps: Fraction | None = None
    cfr: Fraction | None = None
    matrix: str = "auto"
