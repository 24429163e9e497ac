"""A session's config message checked against the daemon's models and limits."""

from __future__ import annotations

from ..proto import mpd_pb2
from ..proto.wire import SessionSettings, session_settings
from ..settings import SettingsError
from .limits import Limits


class ConfigError(ValueError):
    """The session config cannot be served; the message says what is wrong."""


def parse_config(cfg: mpd_pb2.SessionConfig, models: list[str], limits: Limits) -> SessionSettings:
    """Check every field of ``cfg``; raises ConfigError naming the first problem."""
    if not cfg.model:
        raise ConfigError(f"model is required; this daemon serves: {', '.join(models)}")
    if cfg.model not in models:
        raise ConfigError(f"unknown model {cfg.model!r}; this daemon serves: {', '.join(models)}")
    try:
        session = session_settings(cfg)
    except SettingsError as e:
        raise ConfigError(str(e)) from None
    if session.width * session.height > limits.max_frame_pixels:
        raise ConfigError(f"frame size {session.width}x{session.height} exceeds this daemon's limit of "
                          f"{limits.max_frame_pixels} pixels")
    if session.engine.n_pass > limits.max_passes:
        raise ConfigError(f"n_pass {session.engine.n_pass} exceeds this daemon's limit of {limits.max_passes}")
    return session


def describe(session: SessionSettings) -> str:
    """One line for the log: model, frames, rates and options."""
    s = session.engine
    target = f"x{float(s.times):g}" if s.times is not None else f"{s.dst_fps} fps"
    scdet = f"scdet<{s.scdet_threshold:g}" if s.scdet else "no-scdet"
    return (f"{s.model} {session.width}x{session.height} {session.pixel_format} {s.src_fps} fps -> {target} "
            f"n_pass={s.n_pass or 'auto'} {scdet} scale={s.scale:g}"
            f"{'' if s.compensate_delay else ' reference-timing'}")
