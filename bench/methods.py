"""The methods the cadence benchmark compares, each turning input frames into frames at the target rate."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..core import MultiPassDedup
from ..core.models.base import Interpolator
from ..core.pipeline.timestamps import TimestampMapper
from .classic_dedup import ClassicDedup

ADAPTIVE_LABEL = "adaptive (re-timing)"


@dataclass(frozen=True)
class Method:
    """``kind`` is ``repeat`` (no interpolation), ``dedup`` (classic), ``mpd`` (MultiPassDedup) or ``adaptive``
    (MultiPassDedup's keyframe re-timing)."""

    kind: str
    n_pass: int = 1
    compensate_delay: bool = False
    threshold: float = 1.0

    @property
    def label(self) -> str:
        if self.kind == "repeat":
            return "repeat (no interpolation)"
        if self.kind == "dedup":
            return "classic dedup"
        if self.kind == "adaptive":
            return ADAPTIVE_LABEL
        if self.n_pass == 1:
            return "plain (n_pass=1)"
        return f"mpd n_pass={self.n_pass}" + (" +comp" if self.compensate_delay else "")

    @property
    def order(self) -> int:
        """Where the method sits in tables: repeat, dedup, plain, then n_pass 2, 2 +comp, 3, ..."""
        if self.kind == "repeat":
            return 0
        if self.kind == "dedup":
            return 1
        if self.kind == "adaptive":
            return 100
        return 2 if self.n_pass == 1 else 3 + 2 * (self.n_pass - 2) + int(self.compensate_delay)

    @property
    def needs_model(self) -> bool:
        return self.kind != "repeat"


@dataclass
class MethodOutput:
    """Frames at ``out_fps`` starting at input time 0, plus what producing them cost."""

    frames: list[np.ndarray]
    out_fps: Fraction
    seconds: float
    model_calls: int
    counters: dict = field(default_factory=dict)


def method_from_code(code: str) -> Method:
    """``repeat``, ``dedup``, ``plain``, ``n3`` (MultiPassDedup n_pass=3), ``n3c`` (the same, compensated) or
    ``adaptive``."""
    if code in ("repeat", "dedup", "adaptive"):
        return Method(code)
    if code == "plain":
        return Method("mpd", 1)
    body = code[1:-1] if code.endswith("c") else code[1:]
    if not code.startswith("n") or not body.isdigit() or int(body) < 1:
        raise ValueError(f"unknown method {code!r}: use repeat, dedup, plain, nN, nNc or adaptive")
    return Method("mpd", int(body), compensate_delay=code.endswith("c"))


def standard_methods(n_pass_max: int = 4, compensate: bool = True) -> list[Method]:
    """Repeat, classic dedup, plain interpolation, MultiPassDedup 2..n (and each compensated), adaptive."""
    methods = [Method("repeat"), Method("dedup"), Method("mpd", 1)]
    for n in range(2, n_pass_max + 1):
        methods.append(Method("mpd", n))
        if compensate:
            methods.append(Method("mpd", n, compensate_delay=True))
    return methods + [Method("adaptive")]


def run_method(method: Method, model: Interpolator | None, frames: Sequence[np.ndarray], src_fps: Fraction,
               dst_fps: Fraction, scdet: bool = True) -> MethodOutput:
    """Run one method over a whole clip."""
    ratio = Fraction(dst_fps) / Fraction(src_fps)
    count = TimestampMapper(ratio).count(len(frames))
    calls0 = model.stats.model_calls if model is not None else 0
    start = time.perf_counter()
    counters: dict = {}
    if method.kind == "repeat":
        out = [frames[min(len(frames) - 1, math.floor(Fraction(k) / ratio))] for k in range(count)]
    elif method.kind == "dedup":
        dedup = ClassicDedup(model, threshold=method.threshold, scdet=scdet)
        counters["kept"] = len(dedup.kept_indices(frames))
        out = dedup.run(frames, ratio, count)
    elif method.kind in ("mpd", "adaptive"):
        pipe = MultiPassDedup(model, n_pass=method.n_pass, src_fps=src_fps, dst_fps=dst_fps, scdet=scdet,
                              compensate_delay=method.compensate_delay, adaptive=method.kind == "adaptive")
        out = []
        for f in frames:
            out += pipe.push(f)
        out += pipe.flush()
        counters.update(pipe.stats.snapshot())
    else:
        raise ValueError(f"unknown method kind {method.kind!r}")
    seconds = time.perf_counter() - start
    calls = (model.stats.model_calls - calls0) if model is not None else 0
    return MethodOutput(out, Fraction(src_fps) * ratio, seconds, calls, counters)
