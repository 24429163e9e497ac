"""Which output frames fall between two input frames, and at what fraction of the way (exact rationals)."""

from __future__ import annotations

import math
from fractions import Fraction

from ...settings import auto_passes

__all__ = ["TimestampMapper", "auto_passes"]  # auto_passes lives with the settings (torch-free): the daemon checks it


class TimestampMapper:
    """Maps output frame steps onto input frame intervals for a rate ratio ``r = out / in``.

    Output step ``i`` sits at input time ``i / r``; between input frames ``a`` and ``b`` it is
    at fraction ``(i / r - a) / (b - a)``. ``shift`` (in input frames) moves the whole output
    timeline later by that much: step ``i`` then sits at ``i / r + shift``.
    """

    def __init__(self, ratio: Fraction, shift: Fraction = Fraction(0)) -> None:
        if ratio <= 0:
            raise ValueError(f"the rate ratio must be positive, got {ratio}")
        self.ratio = Fraction(ratio)
        self.shift = Fraction(shift)

    def step_at_or_after(self, time: Fraction) -> int:
        """The first output step whose time is >= ``time``."""
        return math.ceil((time - self.shift) * self.ratio)

    def range(self, a: int, b: int, lclose: bool = True, rclose: bool = False) -> list[Fraction]:
        """Fractions in [a, b) (``lclose``/``rclose`` choose the closed ends) where output steps fall."""
        s0, s1 = self.step_at_or_after(Fraction(a)), self.step_at_or_after(Fraction(b))
        start = s0 if lclose else s0 + 1
        stop = s1 + 1 if rclose else s1
        return [(i / self.ratio + self.shift - a) / (b - a) for i in range(start, stop)]

    def count(self, n_input: int) -> int:
        """How many output steps ``n_input`` input frames give (the last interval closed on the right)."""
        if n_input <= 0:
            return 0
        return self.step_at_or_after(Fraction(n_input)) + 1 - self.step_at_or_after(Fraction(0))
