"""A session's config message checked against the daemon's models and limits."""

from __future__ import annotations

from ..proto import mpd_pb2
from ..proto.wire import FRAME_SIZE_ERROR, MAX_RATE_TERM, SessionSettings, frame_size_problem, session_settings
from ..settings import SettingsError, quoted, shown
from .errors import ConfigError
from .limits import Limits


def parse_config(cfg: mpd_pb2.SessionConfig, models: list[str], limits: Limits,
                 precisions: dict[str, list[str]] | None = None) -> SessionSettings:
    """Check every field of ``cfg``; raises ConfigError naming the first problem.

    ``precisions``: model -> the precisions it is served in; a session asking for another is refused.
    """
    if not cfg.model:
        raise ConfigError(f"model is required; this daemon serves: {', '.join(models)}")
    if cfg.model not in models:
        raise ConfigError(f"unknown model {quoted(cfg.model)}; this daemon serves: {', '.join(models)}")
    try:
        session = session_settings(cfg)
    except SettingsError as e:
        raise ConfigError(str(e)) from None
    if session.width * session.height > limits.max_frame_pixels:
        raise ConfigError(f"frame size {session.width}x{session.height} exceeds this daemon's limit of "
                          f"{limits.max_frame_pixels} pixels", FRAME_SIZE_ERROR)
    if (problem := frame_size_problem(session.width, session.height)) is not None:
        raise ConfigError(problem, FRAME_SIZE_ERROR)
    engine = session.engine
    served = (precisions or {}).get(cfg.model)
    if served is not None and engine.precision != "auto" and engine.precision not in served:
        raise ConfigError(f"precision {engine.precision} is not served for {cfg.model} by this daemon (it serves "
                          f"{', '.join(served)}; mpd-daemon --precision)")
    # the number in use (n_pass=0 picks more passes for higher rates); adaptive uses none
    if not engine.adaptive and engine.passes > limits.max_passes:
        if engine.n_pass:
            raise ConfigError(f"n_pass {engine.n_pass} exceeds this daemon's limit of {limits.max_passes}")
        raise ConfigError(f"n_pass 0 (automatic) means {engine.passes} passes at src_fps {shown(engine.src_fps)}, "
                          f"more than this daemon's limit of {limits.max_passes}; give n_pass")
    out_fps = engine.out_fps
    if max(out_fps.numerator, out_fps.denominator) > MAX_RATE_TERM:
        raise ConfigError(f"the output rate {shown(out_fps)} has a numerator or denominator over {MAX_RATE_TERM}; "
                          f"give dst_fps as a simpler ratio (such as 60000/1001)")
    return session


def describe(session: SessionSettings) -> str:
    """One line for the log: model, frames, rates and options."""
    s = session.engine
    target = f"x{float(s.times):g}" if s.times is not None else f"{s.dst_fps} fps"
    scdet = f"scdet<{s.scdet_threshold:g}" if s.scdet else "no-scdet"
    return (f"{s.model} {session.width}x{session.height} {session.pixel_format} {s.src_fps} fps -> {target} "
            f"n_pass={s.n_pass or 'auto'} {scdet} scale={s.scale:g}"
            f"{'' if s.compensate_delay else ' reference-timing'}{' adaptive' if s.adaptive else ''}")
