"""Where the work runs: the daemon (``--server``), in-process (``--local``), or whichever is there.

Every engine has the MultiPassDedup interface: ``push(frame) -> [frames]``, ``flush()``,
``out_fps`` and ``stats``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

from ..settings import EngineSettings, SettingsError
from .engine_flags import flag_message
from .exitcodes import ClientError, ExitCode, UsageError
from .rates import format_rational

log = logging.getLogger(__name__)

DEFAULT_SERVER = "127.0.0.1:50051"
SYSTEM_SOCKET = "unix:///run/multipassdedup/mpd.sock"  # where the systemd units listen
# Automatic placement tries these in order; MPD_PROBE (comma-separated addresses) replaces the list.
DEFAULT_PROBES = (DEFAULT_SERVER, SYSTEM_SOCKET)
PROBE_TIMEOUT = 0.5
# A unix socket that exists may be socket-activated: the daemon starts (loads its models) on connect.
ACTIVATION_TIMEOUT = 15.0


class Engine(Protocol):
    """The streaming interface shared by MultiPassDedup and RemoteEngine."""

    out_fps: Fraction

    def push(self, frame: np.ndarray) -> list[np.ndarray]: ...

    def flush(self) -> list[np.ndarray]: ...


@dataclass
class Placement:
    """Where to run: an explicit server, forced in-process, or automatic (probe the usual addresses).

    ``device`` and ``threads`` place the engine when it runs in this process; a daemon has its own.
    """

    server: str | None = None
    local: bool = False
    token: str | None = None
    tls_ca: str | None = None
    probes: tuple[str, ...] = DEFAULT_PROBES
    device: str = "auto"
    threads: int | None = None  # in-process CPU threads; None: torch's choice (one per core)


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


def check_rates(settings: EngineSettings, src_fps: Fraction) -> EngineSettings:
    """``settings`` for a stream at ``src_fps``; a target rate at or below it is a UsageError before any work."""
    try:
        return settings.with_source(src_fps)
    except SettingsError as e:
        raise UsageError(flag_message(e) + (" (use -fps or -t)" if e.field == "dst_fps" else "")) from None


def open_engine(settings: EngineSettings, src_fps: Fraction, placement: Placement) -> Engine:
    """An engine for a stream at ``src_fps``, placed as asked; says on stderr where it runs.

    A target rate at or below the source rate is a UsageError before any work starts.
    """
    settings = check_rates(settings, src_fps)
    if placement.local:
        log.info("running the engine in-process")
        return open_local(settings, placement)
    if placement.server:
        log.info("using the daemon at %s", placement.server)
        return open_remote(settings, placement.server, placement)
    address = find_daemon(placement)
    if address is not None:
        log.info("using the daemon at %s", address)
        return open_remote(settings, address, placement)
    log.info("no daemon at %s; running the engine in-process", " or ".join(placement.probes) or "any address")
    return open_local(settings, placement)


def find_daemon(placement: Placement) -> str | None:
    """The first of the usual addresses where a daemon answers, None when none does."""
    return next((address for address in placement.probes if daemon_answers(address)), None)


def daemon_answers(address: str) -> bool:
    """A health check; a unix socket that does not exist is not tried at all."""
    from .remote import probe

    if address.startswith("unix://"):
        path = address[len("unix://"):]
        if not os.path.exists(path):
            return False
        return bool(probe(address, ACTIVATION_TIMEOUT))
    return bool(probe(address, PROBE_TIMEOUT))


def open_local(settings: EngineSettings, placement: Placement) -> Engine:
    """MultiPassDedup with the model loaded in this process (``settings`` with the stream's ``src_fps``)."""
    from ..core import MultiPassDedup, UnknownModelError, load_model
    from ..weights import WeightsError

    if placement.threads is not None:
        import torch

        torch.set_num_threads(placement.threads)
    try:
        model = load_model(settings.model, device=placement.device, precision=settings.precision)
    except (UnknownModelError, ValueError) as e:  # ValueError: a precision the model does not run in
        raise UsageError(str(e)) from None
    except WeightsError as e:
        raise ClientError(str(e)) from None
    engine = MultiPassDedup(model, **settings.engine_keywords())
    log.info("model %s on %s (%s), %d pass%s, %s -> %s fps", settings.model, model.device, model.precision,
             engine.n_pass,
             "" if engine.n_pass == 1 else "es",
             format_rational(engine.src_fps), format_rational(engine.out_fps))
    return engine


def open_remote(settings: EngineSettings, address: str, placement: Placement) -> Engine:
    """A session on the daemon at ``address`` (it opens at the first frame)."""
    from .remote import RemoteEngine

    return RemoteEngine(address, token=placement.token, root_cert=placement.tls_ca, model=settings.model,
                        precision=settings.precision, **settings.engine_keywords())


def remote_exit_code(error: BaseException) -> ExitCode | None:
    """The exit code for an error of the daemon client library, None if it is not one."""
    from .remote import DaemonUnavailableError, RemoteSessionError

    if isinstance(error, DaemonUnavailableError):
        return ExitCode.UNAVAILABLE
    if not isinstance(error, RemoteSessionError):
        return None
    code = getattr(error, "code", "")
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "NOT_FOUND") or error.tag == "memory":
        return ExitCode.USAGE  # wrong token, a model the daemon lacks, limits this request exceeds
    if code in ("RESOURCE_EXHAUSTED", "ABORTED"):
        return ExitCode.TEMPORARY  # e.g. out of GPU memory now; may work when the device is less busy
    return ExitCode.FAILURE
