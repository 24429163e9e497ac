"""A session's config message checked against the daemon's models and limits, as engine arguments."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..proto import mpd_pb2
from .limits import BYTES_PER_PIXEL, Limits

PIXEL_FORMATS = {mpd_pb2.PIXEL_FORMAT_UNSPECIFIED: "rgb24", mpd_pb2.RGB24: "rgb24", mpd_pb2.RGB48LE: "rgb48le"}
DTYPES = {"rgb24": np.dtype(np.uint8), "rgb48le": np.dtype("<u2")}
DEFAULT_SCDET_THRESHOLD = 0.3


class ConfigError(ValueError):
    """The session config cannot be served; the message says what is wrong."""


@dataclass(frozen=True)
class SessionSettings:
    """A valid session config."""

    model: str
    n_pass: int
    src_fps: Fraction
    dst_fps: Fraction | None
    times: float | None
    scdet: bool
    scdet_threshold: float
    scale: float
    width: int
    height: int
    pixel_format: str
    compensate_delay: bool

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * BYTES_PER_PIXEL[self.pixel_format]

    @property
    def dtype(self) -> np.dtype:
        return DTYPES[self.pixel_format]

    def engine_kwargs(self) -> dict:
        """Keyword arguments of MultiPassDedup for this session."""
        return dict(n_pass=self.n_pass, src_fps=self.src_fps, dst_fps=self.dst_fps, times=self.times,
                    scdet=self.scdet, scdet_threshold=self.scdet_threshold, scale=self.scale,
                    compensate_delay=self.compensate_delay)

    def describe(self) -> str:
        target = f"x{self.times:g}" if self.times is not None else f"{_rate(self.dst_fps)} fps"
        scdet = f"scdet<{self.scdet_threshold:g}" if self.scdet else "no-scdet"
        return (f"{self.model} {self.width}x{self.height} {self.pixel_format} {_rate(self.src_fps)} fps -> {target} "
                f"n_pass={self.n_pass or 'auto'} {scdet} scale={self.scale:g}"
                f"{'' if self.compensate_delay else ' reference-timing'}")


def _rate(f: Fraction | None) -> str:
    return "?" if f is None else (str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}")


def _rational(msg: mpd_pb2.Rational, name: str) -> Fraction:
    if msg.den <= 0 or msg.num <= 0:
        raise ConfigError(f"{name} must be a positive rational num/den, got {msg.num}/{msg.den}")
    return Fraction(msg.num, msg.den)


def parse_config(cfg: mpd_pb2.SessionConfig, models: list[str], limits: Limits) -> SessionSettings:
    """Check every field of ``cfg``; raises ConfigError naming the first problem."""
    if not cfg.model:
        raise ConfigError(f"model is required; this daemon serves: {', '.join(models)}")
    if cfg.model not in models:
        raise ConfigError(f"unknown model {cfg.model!r}; this daemon serves: {', '.join(models)}")
    if cfg.width == 0 or cfg.height == 0:
        raise ConfigError(f"width and height are required, got {cfg.width}x{cfg.height}")
    if cfg.width * cfg.height > limits.max_frame_pixels:
        raise ConfigError(f"frame size {cfg.width}x{cfg.height} exceeds this daemon's limit of "
                          f"{limits.max_frame_pixels} pixels")
    if cfg.pixel_format not in PIXEL_FORMATS:
        raise ConfigError(f"unknown pixel format {cfg.pixel_format}; use RGB24 or RGB48LE")
    if cfg.n_pass > limits.max_passes:
        raise ConfigError(f"n_pass {cfg.n_pass} exceeds this daemon's limit of {limits.max_passes}")
    if not cfg.HasField("src_fps"):
        raise ConfigError("src_fps is required")
    src = _rational(cfg.src_fps, "src_fps")
    target = cfg.WhichOneof("target")
    if target is None:
        raise ConfigError("give dst_fps or times")
    dst = _rational(cfg.dst_fps, "dst_fps") if target == "dst_fps" else None
    times = cfg.times if target == "times" else None
    if times is not None and not times > 1:
        raise ConfigError(f"times must exceed 1, got {times:g}")
    threshold = cfg.scdet_threshold if cfg.HasField("scdet_threshold") else DEFAULT_SCDET_THRESHOLD
    if not 0 <= threshold <= 1:
        raise ConfigError(f"scdet_threshold must be within [0, 1], got {threshold:g}")
    return SessionSettings(
        model=cfg.model, n_pass=cfg.n_pass, src_fps=src, dst_fps=dst, times=times, scdet=not cfg.no_scdet,
        scdet_threshold=threshold, scale=cfg.scale if cfg.HasField("scale") else 1.0, width=cfg.width,
        height=cfg.height, pixel_format=PIXEL_FORMATS[cfg.pixel_format],
        compensate_delay=not cfg.reference_timing)
