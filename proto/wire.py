"""What both ends of the wire agree on besides ``mpd.proto``: headers, message size, pixel formats, settings.

The daemon and its client library import these instead of keeping copies: the metadata header
names, the gRPC message size limit, the pixel formats (the proto enum, their names, their numpy
sample types) and the conversion between ``EngineSettings`` (plus the frames' size and format)
and the ``SessionConfig`` message, in both directions. Imports only ``settings`` (torch-free)
from the project, so a thin client carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

import numpy as np

from ..settings import DEFAULT_SCDET_THRESHOLD, EngineSettings, SettingsError, to_fraction
from . import mpd_pb2

AUTH_HEADER = "authorization"  # "Bearer <token>"
USER_HEADER = "mpd-user"  # the user name a client declares (the daemon's fairness key without a tokens file)
ERROR_HEADER = "mpd-error"  # trailing metadata: what kind of failure ended a call (busy, memory, idle, ...)

UHD_DCI_PIXELS = 4096 * 2160  # the default largest frame
# The widest or tallest frame anyone serves, daemon or in-process client: the models pad each side, so a
# 1-pixel-wide strip would not pay, and a client checks a stream's header against it before allocating a frame.
MAX_FRAME_SIDE = 16384
FRAME_SIZE_ERROR = "frame-size"  # the ERROR_HEADER kind of a refusal for a frame over the daemon's limits
# The largest numerator or denominator of the output rate: presentation times (index / out_fps) then fit the
# int64 fields of ``Rational`` for 2**32 frames.
MAX_RATE_TERM = 2 ** 31 - 1
ENVELOPE_BYTES = 1 << 20  # room for the protobuf framing around one frame


def frame_size_problem(width: int, height: int) -> str | None:
    """Why a frame of ``width`` x ``height`` is never served (a side over MAX_FRAME_SIDE), or None if it may be."""
    if max(width, height) > MAX_FRAME_SIDE:
        return f"frame size {width}x{height} has a side over {MAX_FRAME_SIDE} pixels"
    return None


class PixelFormat(str, Enum):
    """A frame layout on the wire: packed RGB, 8 or 16 bits per channel (little-endian)."""

    RGB24 = "rgb24"
    RGB48LE = "rgb48le"

    def __str__(self) -> str:
        return self.value

    @property
    def proto(self) -> int:
        """The ``mpd.PixelFormat`` enum value."""
        return mpd_pb2.RGB24 if self is PixelFormat.RGB24 else mpd_pb2.RGB48LE

    @property
    def dtype(self) -> np.dtype:
        """The sample type of the frame bytes on the wire."""
        return np.dtype(np.uint8) if self is PixelFormat.RGB24 else np.dtype("<u2")

    @property
    def bytes_per_pixel(self) -> int:
        return 3 * self.dtype.itemsize

    @classmethod
    def of_proto(cls, value: int) -> PixelFormat:
        """The format of a ``SessionConfig.pixel_format`` (unset means RGB24); SettingsError when unknown."""
        if value in (mpd_pb2.PIXEL_FORMAT_UNSPECIFIED, mpd_pb2.RGB24):
            return cls.RGB24
        if value == mpd_pb2.RGB48LE:
            return cls.RGB48LE
        raise SettingsError("pixel_format", f"unknown pixel format {value}; use RGB24 or RGB48LE")

    @classmethod
    def of_array(cls, dtype: np.dtype) -> PixelFormat | None:
        """The format that carries frames of this numpy dtype (uint8, uint16), None for any other."""
        dtype = np.dtype(dtype)
        if dtype == np.uint8:
            return cls.RGB24
        if dtype == np.uint16:
            return cls.RGB48LE
        return None


def max_message_bytes(max_frame_pixels: int = UHD_DCI_PIXELS) -> int:
    """The gRPC send/receive limit for frames up to ``max_frame_pixels``: one RGB48LE frame and its envelope."""
    return max_frame_pixels * PixelFormat.RGB48LE.bytes_per_pixel + ENVELOPE_BYTES


def channel_options(max_frame_pixels: int = UHD_DCI_PIXELS) -> list[tuple[str, int]]:
    """gRPC channel/server options that let frames up to ``max_frame_pixels`` through, both ways."""
    limit = max_message_bytes(max_frame_pixels)
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]


def rational(value: Fraction) -> mpd_pb2.Rational:
    return mpd_pb2.Rational(num=value.numerator, den=value.denominator)


def fraction(msg: mpd_pb2.Rational, name: str) -> Fraction:
    """A ``Rational`` message as a Fraction; SettingsError naming the field unless it is positive."""
    if msg.den <= 0 or msg.num <= 0:
        raise SettingsError(name, f"{name} must be a positive rational num/den, got {msg.num}/{msg.den}")
    return Fraction(msg.num, msg.den)


@dataclass(frozen=True)
class SessionSettings:
    """What one ``SessionConfig`` says: the engine's settings and the size and format of the frames."""

    engine: EngineSettings
    width: int
    height: int
    pixel_format: PixelFormat

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise SettingsError("width", f"width and height are required, got {self.width}x{self.height}")
        self.engine.require_source()

    @property
    def model(self) -> str:
        return self.engine.model

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * self.pixel_format.bytes_per_pixel


def session_config(session: SessionSettings) -> mpd_pb2.SessionConfig:
    """The ``SessionConfig`` a client sends for ``session``.

    ``times`` travels as a double; a ratio that a double does not hold exactly (7/3) travels as
    the exact output rate instead, so that both ends compute the same output rate.
    """
    s = session.engine
    cfg = mpd_pb2.SessionConfig(
        model=s.model, n_pass=s.n_pass, src_fps=rational(s.require_source()), no_scdet=not s.scdet,
        scdet_threshold=s.scdet_threshold, scale=s.scale, reference_timing=not s.compensate_delay,
        first_index=s.first_index, width=session.width, height=session.height,
        pixel_format=session.pixel_format.proto, precision="" if s.precision == "auto" else s.precision,
        adaptive=s.adaptive)
    if s.times is not None and to_fraction(float(s.times)) == s.times:
        cfg.times = float(s.times)
    else:
        cfg.dst_fps.CopyFrom(rational(s.out_fps))
    return cfg


def session_settings(cfg: mpd_pb2.SessionConfig) -> SessionSettings:
    """The settings a ``SessionConfig`` asks for, unset fields taking the commands' defaults.

    Raises SettingsError naming the first field that cannot work. The daemon checks the model
    name and its own limits on top.
    """
    if not cfg.HasField("src_fps"):
        raise SettingsError("src_fps", "src_fps is required")
    target = cfg.WhichOneof("target")
    engine = EngineSettings(
        model=cfg.model, n_pass=cfg.n_pass, src_fps=fraction(cfg.src_fps, "src_fps"),
        dst_fps=fraction(cfg.dst_fps, "dst_fps") if target == "dst_fps" else None,
        times=cfg.times if target == "times" else None, scdet=not cfg.no_scdet,
        scdet_threshold=cfg.scdet_threshold if cfg.HasField("scdet_threshold") else DEFAULT_SCDET_THRESHOLD,
        scale=cfg.scale if cfg.HasField("scale") else 1.0, compensate_delay=not cfg.reference_timing,
        precision=cfg.precision or "auto",
        first_index=cfg.first_index,
        adaptive=cfg.adaptive if cfg.HasField("adaptive") else EngineSettings.adaptive)
    return SessionSettings(engine, cfg.width, cfg.height, PixelFormat.of_proto(cfg.pixel_format))
