"""The engine as the client sees it, wherever it runs, and the loop that streams frames through it.

An engine is the MultiPassDedup interface: ``push(frame) -> [frames]``, ``flush()``, ``out_fps``, ``stats``
and ``close()``. The in-process engine (``core.MultiPassDedup``) and a daemon's session
(``remote.session.RemoteEngine``) both have it; the pipe filter, file mode and the chunks of a job all
stream through :func:`pump`. Nothing here imports torch, gRPC, PyAV or numpy (the drop folder loads it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

from ..settings import EngineSettings, SettingsError
from .engine_flags import flag_message
from .errors import UsageError
from .progress import Progress
from .rates import format_rational

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


class EngineStats(Protocol):
    """An engine's counters (frames in and out, model calls, ...), as plain numbers by name."""

    def snapshot(self) -> dict[str, int | float]: ...


class Engine(Protocol):
    """The streaming interface shared by MultiPassDedup and RemoteEngine."""

    out_fps: Fraction

    @property
    def stats(self) -> EngineStats | None: ...

    def push(self, frame: np.ndarray) -> list[np.ndarray]: ...

    def flush(self) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def stats_snapshot(engine: Engine) -> dict[str, int | float]:
    """The engine's counters by name; empty before it has any (a session not started yet)."""
    stats = engine.stats
    return {} if stats is None else stats.snapshot()


@contextmanager
def abandon_on_error(engine: Engine) -> Iterator[Engine]:
    """Use ``engine``; if the work fails, close it (a daemon session is then freed at once)."""
    try:
        yield engine
    except BaseException:
        try:
            engine.close()
        except Exception:  # the original error is the one to report
            log.debug("closing the engine after an error failed too", exc_info=True)
        raise


def check_rates(settings: EngineSettings, src_fps: Fraction) -> EngineSettings:
    """``settings`` for a stream at ``src_fps``; a target rate at or below it is a UsageError before any work."""
    try:
        return settings.with_source(src_fps)
    except SettingsError as e:
        hint = (f"; give -fps above {format_rational(src_fps)}, or -t N for N times the input's rate"
                if e.field == "dst_fps" else "")
        raise UsageError(flag_message(e) + hint) from None


def output_frames_for(n_in: int, src_fps: Fraction, out_fps: Fraction) -> int:
    """Output frames that cover ``n_in`` input frames' duration: those presented before the input ends."""
    return math.ceil(n_in * Fraction(out_fps) / Fraction(src_fps))


def pump(frames: Iterable[np.ndarray], engine: Engine, src_fps: Fraction, emit: Callable[[np.ndarray], None],
         progress: Progress) -> tuple[int, int]:
    """Push every frame through the engine, handing each output frame to ``emit`` at once.

    The engine closes the stream with a frame at the input's end time (and, for some rates, one
    more); frames presented at or after the end are dropped so the output lasts as long as the input.
    """
    n_in = n_out = 0
    for frame in frames:
        n_in += 1
        for out in engine.push(frame):
            emit(out)
            n_out += 1
        progress.update(n_in, n_out)
    limit = output_frames_for(n_in, src_fps, engine.out_fps)
    for out in engine.flush():
        if n_out >= limit:
            break
        emit(out)
        n_out += 1
        progress.update(n_in, n_out)
    return n_in, n_out
