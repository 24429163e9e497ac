"""Constant versus variable frame rate: detect timestamps that break a constant rate, or resample onto one."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from typing import Generic, TypeVar

from ..errors import InputDataError
from ..rates import format_rational

T = TypeVar("T")

# A frame may sit this far (in frames) from its constant-rate slot: container rounding (1 ms in
# Matroska is 0.024 frame at 23.976 fps) passes, a dropped or doubled frame does not.
TOLERANCE = Fraction(1, 2)


def vfr_message(index: int, time: Fraction, expected: Fraction, rate: Fraction) -> str:
    return (f"input has a variable frame rate: frame {index} is at {float(time):.4f} s, a constant "
            f"{format_rational(rate)} fps puts it at {float(expected):.4f} s; pass --cfr RATE "
            f"(e.g. --cfr {format_rational(rate)}) to convert it to a constant rate")


class ConstantRateGuard:
    """Checks, frame by frame, that timestamps follow ``start + index / rate``; raises InputDataError if not."""

    def __init__(self, rate: Fraction) -> None:
        self.rate = Fraction(rate)
        self.start: Fraction | None = None
        self.index = 0

    def check(self, time: Fraction | None) -> None:
        """Accept the next frame's presentation time (None: the container gave none, nothing to check)."""
        if time is not None:
            if self.start is None:
                self.start = Fraction(time) - self.index / self.rate
            expected = self.start + self.index / self.rate
            if abs((Fraction(time) - expected) * self.rate) > TOLERANCE:
                raise InputDataError(vfr_message(self.index, Fraction(time), expected, self.rate))
        self.index += 1


def is_constant_rate(times: Iterable[Fraction], rate: Fraction) -> bool:
    """Whether presentation times (in any order) follow one constant rate, frame after frame."""
    guard = ConstantRateGuard(rate)
    try:
        for t in sorted(times):
            guard.check(t)
    except InputDataError:
        return False
    return True


class CfrResampler(Generic[T]):
    """Turns frames with arbitrary timestamps into a constant-rate sequence, like ffmpeg's ``fps`` filter.

    Each frame goes to the output slot nearest its timestamp; a frame whose slot is already
    taken by a later arrival is dropped, gaps are filled by repeating the previous frame.
    Repeats cost nothing downstream: MultiPassDedup treats them as held drawings.
    """

    def __init__(self, rate: Fraction) -> None:
        self.rate = Fraction(rate)
        self.start: Fraction | None = None
        self._held: T | None = None
        self._next_slot = 0
        self.dropped = 0
        self.repeated = 0

    def push(self, frame: T, time: Fraction | None) -> list[T]:
        """Accept a frame at ``time`` seconds; returns the constant-rate frames now settled."""
        if time is None:
            slot = self._next_slot if self._held is None else self._next_slot + 1
        else:
            if self.start is None:
                self.start = Fraction(time)
            slot = round((Fraction(time) - self.start) * self.rate)
        out: list[T] = []
        if self._held is not None:
            if slot <= self._next_slot:
                self.dropped += 1
            while self._next_slot < slot:
                out.append(self._held)
                self._next_slot += 1
            self.repeated += max(0, len(out) - 1)
        self._held = frame
        return out

    def flush(self) -> list[T]:
        """The last frame, once."""
        if self._held is None:
            return []
        held, self._held = self._held, None
        self._next_slot += 1
        return [held]
