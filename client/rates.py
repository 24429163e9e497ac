"""Command-line values as exact numbers: frame rates, ratios and times as ``Fraction``, sizes as (width, height)."""

from __future__ import annotations

import re
from fractions import Fraction


def parse_rational(text: str, what: str = "value") -> Fraction:
    """``60``, ``60000/1001``, ``60000:1001`` or ``2.5`` as an exact positive ``Fraction``.

    Decimals are taken literally (``59.94`` is 2997/50); write ``60000/1001`` for NTSC rates.
    """
    s = str(text).strip().replace(":", "/")
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what} must be a number or a ratio like 60000/1001, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {text!r}")
    return value


def format_rational(value: Fraction, sep: str = "/") -> str:
    """``Fraction(60000, 1001)`` -> ``60000/1001``; whole numbers stay whole (``60``)."""
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}{sep}{value.denominator}"


_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """``1920x1080`` -> (1920, 1080)."""
    m = _SIZE.match(str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"a frame size looks like 1920x1080, got {text!r}")
    return int(m.group(1)), int(m.group(2))


_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$")


def parse_time(text: str, what: str = "time") -> Fraction:
    """A position as ffmpeg writes one: seconds (``90``, ``1.5``) or ``[HH:]MM:SS[.frac]``, as exact seconds."""
    s = str(text).strip()
    m = _CLOCK.match(s)
    try:
        if m:
            hours, minutes, seconds = m.group(1) or "0", m.group(2), m.group(3)
            if int(minutes) >= 60 or Fraction(seconds) >= 60:
                raise ValueError
            value = int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)
        else:
            if not re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", s):
                raise ValueError
            value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what} must be seconds (90, 1.5) or [HH:]MM:SS[.frac], got {text!r}") from None
    return value


_BITRATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_bitrate(text: str) -> int:
    """``128k``, ``1.5M`` or ``96000`` as bits per second."""
    m = _BITRATE.match(str(text))
    if not m:
        raise ValueError(f"a bit rate looks like 128k, 1.5M or 96000, got {text!r}")
    value = Fraction(m.group(1)) * {"": 1, "k": 1000, "m": 1000000}[m.group(2).lower()]
    if value < 1:
        raise ValueError(f"a bit rate must be positive, got {text!r}")
    return int(value)
