"""Where the work runs: the daemon (``--server``), in-process (``--local``), or whichever is there.

Every engine has the MultiPassDedup interface: ``push(frame) -> [frames]``, ``flush()``,
``out_fps`` and ``stats``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from .exitcodes import ClientError, EngineUnavailableError, UsageError
from .rates import format_rational

log = logging.getLogger("mpd-client")

DEFAULT_SERVER = "127.0.0.1:50051"
PROBE_TIMEOUT = 0.5


class Engine(Protocol):
    """The streaming interface shared by MultiPassDedup and RemoteEngine."""

    out_fps: Fraction

    def push(self, frame: np.ndarray) -> list[np.ndarray]: ...

    def flush(self) -> list[np.ndarray]: ...


@dataclass
class EngineSettings:
    """What to interpolate with: the flags of the original program, as the engine takes them."""

    model: str = "rife"
    n_pass: int = 0
    dst_fps: Fraction | None = Fraction(60)
    times: Fraction | None = None
    scdet: bool = True
    scdet_threshold: float = 0.3
    scale: float = 1.0
    compensate_delay: bool = True
    device: str = "auto"

    def target_text(self) -> str:
        if self.times is not None:
            return f"x{format_rational(self.times)}"
        return f"{format_rational(self.dst_fps)} fps"


@dataclass
class Placement:
    """Where to run: an explicit server, forced in-process, or automatic (probe the default address)."""

    server: str | None = None
    local: bool = False
    token: str | None = None
    default_server: str = DEFAULT_SERVER


@contextmanager
def abandon_on_error(engine: Engine) -> Iterator[Engine]:
    """Use ``engine``; if the work fails, close it (a daemon session is then freed at once)."""
    try:
        yield engine
    except BaseException:
        close = getattr(engine, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 -- the original error is the one to report
                log.debug("closing the engine after an error failed too", exc_info=True)
        raise


def check_rates(settings: EngineSettings, src_fps: Fraction) -> None:
    """Reject a target rate at or below the source rate before any work starts."""
    if settings.times is not None:
        if settings.times <= 1:
            raise UsageError(f"-t must exceed 1, got {format_rational(settings.times)}")
    elif settings.dst_fps is not None and settings.dst_fps <= src_fps:
        raise UsageError(f"target frame rate {format_rational(settings.dst_fps)} must exceed the input's "
                         f"{format_rational(src_fps)} fps (use -fps or -t)")


def open_engine(settings: EngineSettings, src_fps: Fraction, placement: Placement) -> Engine:
    """An engine for a stream at ``src_fps``, placed as asked; says on stderr where it runs."""
    check_rates(settings, src_fps)
    if placement.local:
        log.info("running the engine in-process (--local)")
        return open_local(settings, src_fps)
    if placement.server:
        return open_remote(settings, src_fps, placement.server, placement.token)
    if _daemon_answers(placement.default_server):
        log.info("using the daemon at %s", placement.default_server)
        return open_remote(settings, src_fps, placement.default_server, placement.token)
    log.info("no daemon at %s; running the engine in-process", placement.default_server)
    return open_local(settings, src_fps)


def _daemon_answers(address: str) -> bool:
    try:
        from .remote import probe
    except ImportError:
        return False
    return bool(probe(address, PROBE_TIMEOUT))


def open_local(settings: EngineSettings, src_fps: Fraction) -> Engine:
    """MultiPassDedup with the model loaded in this process."""
    from ..core import MultiPassDedup, UnknownModelError, load_model
    from ..weights import WeightsError

    try:
        model = load_model(settings.model, device=settings.device)
    except UnknownModelError as e:
        raise UsageError(str(e)) from None
    except WeightsError as e:
        raise ClientError(str(e)) from None
    kwargs: dict[str, Any] = dict(n_pass=settings.n_pass, src_fps=src_fps, dst_fps=settings.dst_fps,
                                  times=settings.times, scdet=settings.scdet,
                                  scdet_threshold=settings.scdet_threshold, scale=settings.scale)
    try:
        try:
            engine = MultiPassDedup(model, compensate_delay=settings.compensate_delay, **kwargs)
        except NotImplementedError:
            log.debug("this engine has no delay compensation yet; running without it")
            engine = MultiPassDedup(model, compensate_delay=False, **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    log.info("model %s on %s, %d passes, %s -> %s fps", settings.model, model.device, engine.n_pass,
             format_rational(src_fps), format_rational(engine.out_fps))
    return engine


def open_remote(settings: EngineSettings, src_fps: Fraction, address: str, token: str | None) -> Engine:
    """A session on the daemon at ``address``."""
    try:
        from .remote import RemoteEngine
    except ImportError:
        raise EngineUnavailableError("this installation has no daemon client (client/remote.py)") from None
    return RemoteEngine(address, token=token, model=settings.model, n_pass=settings.n_pass, src_fps=src_fps,
                        dst_fps=settings.dst_fps, times=settings.times, scdet=settings.scdet,
                        scdet_threshold=settings.scdet_threshold, scale=settings.scale,
                        compensate_delay=settings.compensate_delay)
