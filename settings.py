"""The engine's settings: one frozen ``EngineSettings``, validated once, used by every end.

The in-process engine (``core.MultiPassDedup``), the daemon (a session's ``SessionConfig``), the
daemon's client library (``RemoteEngine``), mpd-client's flags and mpd-watch's config all build
an ``EngineSettings`` and so share one set of rules and one set of messages: a bad value raises
``SettingsError``, a ``ValueError`` whose one-line message names the setting.

This module is not in ``core/`` on purpose: importing ``multipassdedup.core`` imports torch, and
the thin clients (mpd-client talking to a daemon, mpd-watch) and the protocol module must
validate and send settings without the engine installed. It imports nothing but the standard
library; ``core`` re-exports ``EngineSettings``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import Any

ALLOWED_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # flow scales the networks' strides divide evenly
# The arithmetic of the model calls (core/precision.py); auto: fp16 on CUDA, bf16 on a CPU where it holds quality.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_MODEL = "rife"
# The models the engine registers (core/models; tests/test_settings.py keeps the two equal), named here for the
# commands, which check a model's name before they read any input, without torch.
MODEL_NAMES = ("rife", "gmfss", "gimm")
DEFAULT_DST_FPS = Fraction(60)  # the commands' output rate when neither -fps nor -t is given
DEFAULT_SCDET_THRESHOLD = 0.3
REFERENCE_FPS = Fraction(24000, 1001)  # the rate the automatic number of passes is measured against
# Output frames per input frame at most: beyond this a stream is not interpolation but a flood
# (times=1e308 would have the engine compute outputs forever).
MAX_RATIO = 1000


class SettingsError(ValueError):
    """A setting that cannot work; ``field`` names it (an ``EngineSettings`` field, or a wire field)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def to_fraction(value: int | float | str | Fraction) -> Fraction:
    """``60``, ``"60000/1001"``, ``2.5`` or ``Fraction(...)`` as an exact ``Fraction`` (floats via their decimal
    text)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, float):
        text = repr(value)
    else:
        text = str(value).strip()
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError) as e:
        raise ValueError(f"not a rational number: {quoted(value)}") from e


SHOWN_CHARACTERS = 40  # of a value quoted back in a message: a client's string may be megabytes long


def quoted(value: Any) -> str:
    """A value for a message, as ``repr`` gives it, cut short if long (a message, a log line and a gRPC status
    stay small whatever a client or a command line sent)."""
    if isinstance(value, str) and len(value) > SHOWN_CHARACTERS:
        return f"{value[:SHOWN_CHARACTERS]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "..."


def shown(value: Fraction) -> str:
    """A rational for a message: exact when short (``24000/1001``), else approximately (``5e-324``, ``1.2e+19``).

    A client's double or a command line's ``1e-400`` is an exact rational with hundreds of digits.
    """
    text = str(value)
    if len(text) <= 24:
        return text
    approx = 0.0
    try:
        approx = float(value)
    except OverflowError:
        pass
    if approx == 0.0 or abs(approx) == math.inf:  # beyond a double's range either way
        digits = len(str(abs(value.numerator))) - len(str(value.denominator))
        return f"about {'-' if value < 0 else ''}1e{digits:+d}"
    return f"{approx:.6g}"


def _rate(field: str, value: Any) -> Fraction:
    """A positive, finite frame rate (or ratio) as a Fraction."""
    if isinstance(value, bool):
        raise SettingsError(field, f"{field} must be a number or a ratio like 60000/1001, got {quoted(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(field, f"{field} must be a finite number, got {quoted(value)}")
    try:
        rate = to_fraction(value)
    except ValueError:
        raise SettingsError(field, f"{field} must be a number or a ratio like 60000/1001, "
                                   f"got {quoted(value)}") from None
    if rate <= 0:
        raise SettingsError(field, f"{field} must be positive, got {shown(rate)}")
    return rate


def _real(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SettingsError(field, f"{field} must be a number, got {quoted(value)}")
    return float(value)


def _switch(field: str, value: Any) -> bool:
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise SettingsError(field, f"{field} must be true or false, got {quoted(value)}")
    return bool(value)


def _passes(value: Any) -> int:
    problem = SettingsError("n_pass", f"n_pass must be a whole number >= 0 (0 = automatic), got {quoted(value)}")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise problem
    try:
        whole = int(value)
    except (ValueError, OverflowError):  # nan, inf
        raise problem from None
    if whole != value or whole < 0:
        raise problem
    return whole


def _first_index(value: Any, timed_by_shot: bool) -> int:
    """A frame index >= 0; other than 0 only where shots are timed on their own (delay compensation, or
    adaptive re-timing, which has no delay): the reference timing is one shot."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingsError("first_index", f"first_index must be a whole number >= 0, got {quoted(value)}")
    if value and not timed_by_shot:
        raise SettingsError("first_index", "first_index needs delay compensation: with the reference timing a "
                                           "stream is one shot and cannot start mid-video")
    return value


def auto_passes(src_fps: Fraction) -> int:
    """``n_pass = 0``: 2 passes for film and PAL rates, 4 for 29.97, 6 for 59.94 (and more for higher rates)."""
    return math.ceil(src_fps / REFERENCE_FPS - Fraction(1, 20)) * 2


@dataclass(frozen=True)
class EngineSettings:
    """How to interpolate one stream: the original program's flags, as every end takes them.

    Exactly one of ``dst_fps`` (the output rate) and ``times`` (a multiple of the input rate) is
    set. ``src_fps`` may be left ``None`` until the stream says it (a client validates its flags
    before it has read the input); the engine needs it. Values are normalised on construction:
    rates to ``Fraction``, ``n_pass`` to ``int``, threshold and scale to ``float``. The defaults
    are the commands' defaults (delay compensation on).
    """

    model: str = DEFAULT_MODEL
    n_pass: int = 0  # 0: automatic, from src_fps
    src_fps: Fraction | None = None
    dst_fps: Fraction | None = None
    times: Fraction | None = None
    scdet: bool = True
    scdet_threshold: float = DEFAULT_SCDET_THRESHOLD
    scale: float = 1.0
    compensate_delay: bool = True
    precision: str = "auto"  # of the model calls; a daemon serves the precisions it was started with
    # The index of the stream's first frame within a longer video (a chunk of a chunked job): output
    # steps and shots are timed as that video's, so the chunks' outputs join into its output.
    first_index: int = 0
    adaptive: bool = False  # keyframe re-timing instead of the passes (n_pass, compensate_delay unused)

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalise in place once, here
        if not isinstance(self.model, str) or not self.model:
            raise SettingsError("model", f"model must name a model such as {DEFAULT_MODEL}, got {quoted(self.model)}")
        fix(self, "n_pass", _passes(self.n_pass))
        if self.src_fps is not None:
            fix(self, "src_fps", _rate("src_fps", self.src_fps))
        if self.dst_fps is None and self.times is None:
            raise SettingsError("dst_fps", "give dst_fps or times")
        if self.dst_fps is not None and self.times is not None:
            raise SettingsError("times", "give dst_fps or times, not both")
        if self.times is not None:
            times = _rate("times", self.times)
            if times <= 1:
                raise SettingsError("times", f"times must exceed 1, got {shown(times)}")
            if times > MAX_RATIO:
                raise SettingsError("times", f"times must be at most {MAX_RATIO}, got {shown(times)}")
            fix(self, "times", times)
        else:
            dst = _rate("dst_fps", self.dst_fps)
            if self.src_fps is not None and dst <= self.src_fps:
                raise SettingsError("dst_fps", f"target frame rate {shown(dst)} must exceed the source frame rate "
                                               f"{shown(self.src_fps)}")
            if self.src_fps is not None and dst / self.src_fps > MAX_RATIO:
                raise SettingsError("dst_fps", f"target frame rate {shown(dst)} must be at most {MAX_RATIO} "
                                               f"times the source frame rate {shown(self.src_fps)}")
            fix(self, "dst_fps", dst)
        fix(self, "scdet", _switch("scdet", self.scdet))
        threshold = _real("scdet_threshold", self.scdet_threshold)
        if not 0 <= threshold <= 1:  # NaN fails this too
            raise SettingsError("scdet_threshold", f"scdet_threshold must be within [0, 1], got {threshold:g}")
        fix(self, "scdet_threshold", threshold)
        scale = _real("scale", self.scale)
        if scale not in ALLOWED_SCALES:
            raise SettingsError("scale", f"scale must be one of {', '.join(map(str, ALLOWED_SCALES))}, "
                                         f"got {self.scale}")
        fix(self, "scale", scale)
        fix(self, "compensate_delay", _switch("compensate_delay", self.compensate_delay))
        precision = self.precision.strip().lower() if isinstance(self.precision, str) else self.precision
        if precision not in PRECISIONS:
            raise SettingsError("precision", f"precision must be one of {', '.join(PRECISIONS)}, "
                                             f"got {quoted(self.precision)}")
        fix(self, "precision", precision)
        fix(self, "adaptive", _switch("adaptive", self.adaptive))
        fix(self, "first_index", _first_index(self.first_index, self.compensate_delay or self.adaptive))

    @classmethod
    def from_keywords(cls, model: str = DEFAULT_MODEL, n_pass: int = 0,
                      src_fps: int | float | str | Fraction | None = None,
                      dst_fps: int | float | str | Fraction | None = None,
                      times: int | float | str | Fraction | None = None, scdet: bool = True,
                      scdet_threshold: float = DEFAULT_SCDET_THRESHOLD, scale: float = 1.0,
                      compensate_delay: bool = True, precision: str = "auto", first_index: int = 0,
                      adaptive: bool = False) -> EngineSettings:
        """The settings of ``MultiPassDedup``'s and ``RemoteEngine``'s keyword arguments.

        Those take a default ``dst_fps`` that ``times`` overrides, and ``times=0`` for "not
        given" (the original program's convention), so ``times`` wins when it is given and not 0.
        """
        if times is not None and not _is_zero(times):
            dst_fps = None
        else:
            times = None
        return cls(model=model, n_pass=n_pass, src_fps=src_fps, dst_fps=dst_fps, times=times, scdet=scdet,
                   scdet_threshold=scdet_threshold, scale=scale, compensate_delay=compensate_delay,
                   precision=precision, first_index=first_index, adaptive=adaptive)

    def engine_keywords(self) -> dict[str, Any]:
        """The keyword arguments of ``MultiPassDedup`` and ``RemoteEngine`` (all but the model and the precision,
        which are the loaded model's) for these settings."""
        return dict(n_pass=self.n_pass, src_fps=self.src_fps, dst_fps=self.dst_fps, times=self.times,
                    scdet=self.scdet, scdet_threshold=self.scdet_threshold, scale=self.scale,
                    compensate_delay=self.compensate_delay, first_index=self.first_index,
                    adaptive=self.adaptive)

    def with_source(self, src_fps: int | float | str | Fraction) -> EngineSettings:
        """These settings for a stream at ``src_fps`` (validated again: the target must exceed it)."""
        return dataclasses.replace(self, src_fps=src_fps)

    def require_source(self) -> Fraction:
        """``src_fps``; SettingsError when it is not known yet."""
        if self.src_fps is None:
            raise SettingsError("src_fps", "src_fps is required")
        return self.src_fps

    @property
    def passes(self) -> int:
        """The number of passes in use: ``n_pass``, or for 0 the automatic choice for ``src_fps`` (needs it)."""
        return self.n_pass or auto_passes(self.require_source())

    @property
    def ratio(self) -> Fraction:
        """Output frames per input frame (needs ``src_fps`` when the target is ``dst_fps``)."""
        if self.times is not None:
            return self.times
        return self.dst_fps / self.require_source()

    @property
    def out_fps(self) -> Fraction:
        """The output frame rate (needs ``src_fps`` when the target is ``times``)."""
        if self.dst_fps is not None:
            return self.dst_fps
        return self.require_source() * self.times


def _is_zero(value: Any) -> bool:
    try:
        return to_fraction(value) == 0
    except (ValueError, TypeError):
        return False
