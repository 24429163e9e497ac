"""Where the work runs: the daemon (``--server``), in-process (``--local``), or whichever is there.

Every engine has the interface of ``engine.Engine`` (MultiPassDedup's). This module imports
neither torch nor ``core`` nor gRPC: the daemon's client
library is imported when a daemon is asked, the engine only when it runs in this process, so a thin
install (without the ``engine`` extra) runs every daemon path.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..engine_extra import ENGINE_EXTRA, engine_installed
from ..settings import EngineSettings
from .engine import Engine, EngineStats, check_rates
from .errors import ClientError, DeviceUnavailableError, EngineNotInstalledError, UsageError
from .rates import format_rational

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_SERVER = "127.0.0.1:50051"
SYSTEM_SOCKET = "unix:///run/multipassdedup/mpd.sock"  # where the systemd units listen
# Automatic placement tries these in order; MPD_PROBE (comma-separated addresses) replaces the list.
DEFAULT_PROBES = (DEFAULT_SERVER, SYSTEM_SOCKET)
PROBE_TIMEOUT = 0.5
# A unix socket that exists may be socket-activated: the daemon starts (loads its models) on connect.
ACTIVATION_TIMEOUT = 15.0
STATUS_TIMEOUT = 5.0  # the automatic choice's Status call (models, draining) to a daemon that answered its health check
# How long the automatic choice waits for a busy daemon (at its session limit or memory budget) before running
# in-process; MPD_BUSY_WAIT (seconds) replaces it. An explicit --server never waits: busy is exit 69 at once.
BUSY_WAIT = 60.0
BUSY_RETRY_SECONDS = 2.0
WaitReport = Callable[[str], None]  # shows what the client waits for (the progress line on a terminal)
# The in-process engine in place of a daemon the automatic choice cannot use (settings, placement, why).
InProcessFallback = Callable[[EngineSettings, "Placement", str], "Engine"]


def engine_missing(why: str) -> EngineNotInstalledError:
    """The one-line refusal when no daemon can be used (``why``) and the engine is not installed."""
    return EngineNotInstalledError(f"{why}, and the engine is not installed to run in-process: give --server ADDR "
                                   f"(a daemon), or install {ENGINE_EXTRA}")


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
    busy_wait: float = BUSY_WAIT  # automatic choice only: seconds to wait for a busy daemon


def probes_from_environment() -> tuple[str, ...]:
    """The addresses the automatic choice tries: ``$MPD_PROBE`` (comma-separated) when set, else the usual ones."""
    probes = os.environ.get("MPD_PROBE")
    return DEFAULT_PROBES if probes is None else tuple(a.strip() for a in probes.split(",") if a.strip())


def busy_wait_seconds(text: str | None) -> float:
    """``$MPD_BUSY_WAIT``: seconds the automatic choice waits for a busy daemon (unset: the default)."""
    if text is None or not text.strip():
        return BUSY_WAIT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 24 * 3600:
        raise UsageError(f"MPD_BUSY_WAIT must be seconds between 0 and 86400, got {text!r}")
    return seconds


def placement_from_environment(server: str | None = None, local: bool = False, token: str | None = None,
                               tls_ca: str | None = None, device: str = "auto",
                               threads: int | None = None) -> Placement:
    """Where the work runs, as mpd-client decides it: the given values, then the environment (``$MPD_SERVER``
    unless ``local``, ``$MPD_TOKEN``, ``$MPD_PROBE``, ``$MPD_BUSY_WAIT``); raises UsageError."""
    server = server or (None if local else os.environ.get("MPD_SERVER") or None)
    return Placement(server=server, local=local, token=token or os.environ.get("MPD_TOKEN") or None,
                     tls_ca=tls_ca, device=device, threads=threads, probes=probes_from_environment(),
                     busy_wait=busy_wait_seconds(os.environ.get("MPD_BUSY_WAIT")))


def open_engine(settings: EngineSettings, src_fps: Fraction, placement: Placement,
                on_wait: WaitReport | None = None) -> Engine:
    """An engine for a stream at ``src_fps``, placed as asked; says on stderr where it runs.

    A target rate at or below the source rate is a UsageError before any work starts. With the automatic
    choice, ``on_wait`` is shown what the client waits for while a busy daemon has no free session.
    """
    settings = check_rates(settings, src_fps)
    if placement.local:
        if not engine_installed():
            raise EngineNotInstalledError(f"--local runs the engine in this process, and it is not installed: "
                                          f"install {ENGINE_EXTRA}, or give --server ADDR (a daemon)")
        log.info("running the engine in-process")
        return open_local(settings, placement)
    if placement.server:
        log.info("using the daemon at %s", placement.server)
        return open_remote(settings, placement.server, placement)
    choice = choose_daemon(placement, settings.model)
    if choice.address is not None:
        for note in choice.passed_over:
            log.warning("%s", note)
        log.info("using the daemon at %s", choice.address)
        return DaemonOrInProcess(settings, choice.address, placement, on_wait)
    if choice.passed_over:
        return fall_back_in_process(settings, placement, "; ".join(choice.passed_over))
    where = " or ".join(placement.probes) or "any address"
    if not engine_installed():
        raise engine_missing(f"no daemon answered at {where}")
    log.info("no daemon at %s; running the engine in-process", where)
    return open_local(settings, placement)


def fall_back_in_process(settings: EngineSettings, placement: Placement, why: str) -> Engine:
    """The in-process engine in place of the daemon the automatic choice could not use, said as a warning."""
    if not engine_installed():
        raise engine_missing(why)
    log.warning("%s; running the engine in-process", why)
    return open_local(settings, placement)


@dataclass
class DaemonChoice:
    """The automatic choice: the daemon to use (None: none), and why each daemon that answered was passed over."""

    address: str | None = None
    passed_over: list[str] = field(default_factory=list)


def choose_daemon(placement: Placement, model: str) -> DaemonChoice:
    """The first of the usual addresses whose daemon takes sessions of ``model``.

    A daemon that answers but cannot be used (draining or starting, not serving ``model``, silent) is passed
    over with a note: the next address is tried, and the work runs in-process when none is left.
    """
    from .remote.session import Health, health

    choice = DaemonChoice()
    for address in placement.probes:
        timeout = probe_timeout(address)
        if timeout is None:
            continue
        state = health(address, timeout, placement.tls_ca)
        if state is Health.ABSENT:
            continue
        if state is Health.SILENT:
            choice.passed_over.append(f"the daemon at {address} did not answer a health check within {timeout:g} s")
            continue
        if state is Health.NOT_SERVING:
            choice.passed_over.append(f"the daemon at {address} takes no new sessions (draining or starting)")
            continue
        reason = unusable_reason(address, model, placement)
        if reason is not None:
            choice.passed_over.append(reason)
            continue
        choice.address = address
        return choice
    return choice


def unusable_reason(address: str, model: str, placement: Placement) -> str | None:
    """Why the serving daemon at ``address`` cannot take this session (its Status says so), None if it can.

    A Status it refuses (a token it does not accept) is left for the session to report, as with --server.
    """
    from .errors import DaemonUnavailableError, RemoteSessionError
    from .remote.session import daemon_status

    try:
        status = daemon_status(address, placement.token, placement.tls_ca, timeout=STATUS_TIMEOUT)
    except DaemonUnavailableError as e:
        return str(e)
    except RemoteSessionError:
        return None
    if status.draining:
        return f"the daemon at {address} is draining (finishing its sessions, taking no new ones)"
    if model not in status.models:
        return f"the daemon at {address} does not serve model {model} (it serves {', '.join(status.models)})"
    return None


def find_daemon(placement: Placement) -> str | None:
    """The first of the usual addresses where a daemon answers at all (taking sessions or draining), None when
    none does: the daemon ``--status`` describes."""
    from .remote.session import Health, health

    for address in placement.probes:
        timeout = probe_timeout(address)
        if timeout is not None and health(address, timeout, placement.tls_ca) in (Health.SERVING,
                                                                                   Health.NOT_SERVING):
            return address
    return None


def probe_timeout(address: str) -> float | None:
    """How long a health check at ``address`` may take; None: not worth trying (a unix socket that does not
    exist). A unix socket that exists may be socket-activated, so it gets the time a daemon needs to start."""
    if address.startswith("unix://"):
        return ACTIVATION_TIMEOUT if os.path.exists(address[len("unix://"):]) else None
    return PROBE_TIMEOUT


class DaemonOrInProcess:
    """The automatically found daemon, or the in-process engine when the daemon's session cannot start.

    A daemon session opens at the first frame (its config carries the frame size), so the choice ends there:
    a busy daemon is asked again every few seconds for up to ``placement.busy_wait`` seconds (the wait shown
    through ``on_wait``); a busy daemon after that, or one that is gone, draining or silent, gives way to the
    in-process engine with a note on stderr (exit 69 when the engine is not installed). Once the session
    runs, a daemon failure is the daemon's error, exit 69, as with --server: frames have gone out by then.
    """

    def __init__(self, settings: EngineSettings, address: str, placement: Placement,
                 on_wait: WaitReport | None = None, fallback: InProcessFallback | None = None) -> None:
        self.settings = settings
        self.address = address
        self.placement = placement
        self.out_fps = settings.out_fps
        self.engine: Engine | None = None  # the daemon's session or the in-process engine, from the first frame
        self._on_wait = on_wait
        self._fallback = fallback or fall_back_in_process  # how the in-process engine is had when the daemon is not

    @property
    def stats(self) -> EngineStats | None:
        return None if self.engine is None else self.engine.stats

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        if self.engine is None:
            self.engine, out = self._start(frame)
            return out
        return self.engine.push(frame)

    def flush(self) -> list[np.ndarray]:
        return [] if self.engine is None else self.engine.flush()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def _start(self, frame: np.ndarray) -> tuple[Engine, list[np.ndarray]]:
        """The engine that took the first frame, and what it returned."""
        from .errors import DaemonUnavailableError

        started = time.monotonic()
        waiting = False
        while True:
            remote: Engine | None = None
            try:
                remote = open_remote(self.settings, self.address, self.placement)
                out = remote.push(frame)
                self._end_wait(waiting)
                return remote, out
            except DaemonUnavailableError as e:
                if remote is not None:
                    remote.close()
                waited = time.monotonic() - started
                if e.code != "RESOURCE_EXHAUSTED" or waited >= self.placement.busy_wait:
                    self._end_wait(waiting)
                    why = str(e) + (f" (waited {waited:.0f} s)" if waiting else "")
                    local = self._fallback(self.settings, self.placement, why)
                    return local, local.push(frame)
                if not waiting:
                    log.warning("the daemon at %s is busy; waiting up to %g s for a free session", self.address,
                                self.placement.busy_wait)
                    waiting = True
                if self._on_wait is not None:
                    self._on_wait(f"waiting for the daemon at {self.address}: busy, {waited:.0f} of "
                                  f"{self.placement.busy_wait:g} s")
                time.sleep(min(BUSY_RETRY_SECONDS, max(0.0, self.placement.busy_wait - waited)))

    def _end_wait(self, waited: bool) -> None:
        """Clear the wait from the progress line (the next line of stderr starts clean)."""
        if waited and self._on_wait is not None:
            self._on_wait("")


def daemon_frame_limit(engine: Engine, placement: Placement) -> tuple[str, int] | None:
    """(address, largest width*height) of the daemon ``engine`` streams to, as its Status announces it; None for
    the in-process engine, or when the daemon does not say (an older daemon, a Status it refuses).

    Asked before the first frame is read: a stream whose header announces frames larger than the daemon serves is
    refused without allocating one."""
    from .remote.session import DaemonUnavailableError, RemoteEngine, RemoteSessionError, daemon_status

    if not isinstance(engine, (RemoteEngine, DaemonOrInProcess)):
        return None
    try:
        status = daemon_status(engine.address, placement.token, placement.tls_ca, timeout=STATUS_TIMEOUT)
    except (DaemonUnavailableError, RemoteSessionError):
        return None
    return (engine.address, status.max_frame_pixels) if status.max_frame_pixels else None


def load_local_model(settings: EngineSettings, placement: Placement) -> Any:
    """The model of ``settings`` loaded in this process (torch imported here), placed by ``placement``.

    Stop signals are held back meanwhile (``signals_deferred``): mpd-client's handler raises, and a raise
    inside torch's import or the model's load would abort the process instead of removing the partial output.
    """
    from ..stop_signals import signals_deferred

    with signals_deferred():  # a stop signal while torch imports or the model loads is handled right after
        import torch

        from ..core import UnknownModelError, load_model
        from ..weights import WeightsError

        if placement.threads is not None:
            torch.set_num_threads(placement.threads)
        if placement.device.startswith("cuda"):
            index = int(placement.device.partition(":")[2] or 0)
            if index >= (torch.cuda.device_count() if torch.cuda.is_available() else 0):
                raise DeviceUnavailableError(
                    f"--device {placement.device}: no such CUDA device here (torch {torch.__version__}, CUDA build "
                    f"{torch.version.cuda or 'none'}, {torch.cuda.device_count()} device(s)); use --device cpu, or "
                    "auto to take CUDA only when it is there")
        try:
            return load_model(settings.model, device=placement.device, precision=settings.precision)
        except (UnknownModelError, ValueError) as e:  # ValueError: a precision the model does not run in
            raise UsageError(str(e)) from None
        except WeightsError as e:
            raise ClientError(str(e)) from None


def open_local(settings: EngineSettings, placement: Placement) -> Engine:
    """MultiPassDedup with the model loaded in this process (``settings`` with the stream's ``src_fps``)."""
    model = load_local_model(settings, placement)
    from ..core import MultiPassDedup

    engine = MultiPassDedup.from_settings(model, settings)
    method = "adaptive re-timing" if settings.adaptive else f"{engine.n_pass} pass{'' if engine.n_pass == 1 else 'es'}"
    log.info("model %s on %s (%s), %s, %s -> %s fps", settings.model, model.device, model.precision, method,
             format_rational(engine.src_fps), format_rational(engine.out_fps))
    return engine


def open_remote(settings: EngineSettings, address: str, placement: Placement) -> Engine:
    """A session on the daemon at ``address`` (it opens at the first frame)."""
    from .remote.session import RemoteEngine

    return RemoteEngine(address, settings, token=placement.token, root_cert=placement.tls_ca)


#: Refusals of the client itself (its token), which a fleet's daemons may make one by one.
CLIENT_REFUSALS = ("UNAUTHENTICATED", "PERMISSION_DENIED")


def name_refusing_daemon(error: BaseException, placement: Placement) -> BaseException:
    """``error`` naming the daemon of a fleet that refused the client, where it named the whole ``--server`` list
    (a session goes through the fleet's one balanced channel): the daemons are asked one by one. Any other
    error is returned as it is."""
    from .errors import RemoteSessionError
    from .remote.channel import parse_target
    from .remote.fleet_status import refusing_daemons

    server = placement.server
    if not isinstance(error, RemoteSessionError) or error.code not in CLIENT_REFUSALS or not server \
            or not str(error).startswith(f"daemon at {server}: "):
        return error
    target = parse_target(server)
    if not target.fleet:
        return error
    refusing = refusing_daemons(target, error.code, placement.token, placement.tls_ca)
    if not refusing:
        return error
    return RemoteSessionError(f"daemon at {', '.join(refusing)}: " + str(error)[len(f"daemon at {server}: "):],
                              error.code, error.tag)

class SessionOpener:
    """Engines for many sessions over one stream, placed once: the VapourSynth filter opens one at each seek.

    The choice is mpd-client's (``open_engine``), made when the first session opens and kept: an explicit daemon,
    in-process (``--local``), or the automatic choice (the first usual address whose daemon takes ``settings``'
    model, else in-process). The in-process model is loaded once and shared by the sessions, which use it one at a
    time. A session whose daemon is busy waits for a free session up to ``placement.busy_wait`` seconds in every
    mode (a frame request that fails at once because another session of the same script is still being released
    would help nobody); after that the busy refusal is the error, or, with the automatic choice, the in-process
    engine runs instead, from then on.
    """

    def __init__(self, settings: EngineSettings, src_fps: Fraction, placement: Placement) -> None:
        self.settings = check_rates(settings, src_fps)  # a target at or below the source rate: UsageError now
        self.placement = placement
        self.out_fps = self.settings.out_fps
        self._address: str | None = placement.server  # the daemon sessions go to; None: not chosen yet, or local
        self._local = placement.local
        self._model: Any = None

    def open(self, first_index: int = 0) -> Engine:
        """An engine for the stream from its frame ``first_index`` on (a session that starts there)."""
        settings = dataclasses.replace(self.settings, first_index=first_index)
        if self._local:
            if not engine_installed():
                raise EngineNotInstalledError(f"--local runs the engine in this process, and it is not installed: "
                                              f"install {ENGINE_EXTRA}, or give --server ADDR (a daemon)")
            return self._in_process(settings)
        if self._address is None:
            self._choose()
            if self._local:
                return self._in_process(settings)
        if self.placement.server:
            return BusyWait(settings, self._address, self.placement)
        return DaemonOrInProcess(settings, self._address, self.placement, fallback=self._fall_back)

    def _choose(self) -> None:
        """The automatic choice, once: a daemon's address, else in-process (or the refusal when not installed)."""
        choice = choose_daemon(self.placement, self.settings.model)
        if choice.address is not None:
            for note in choice.passed_over:
                log.warning("%s", note)
            log.info("using the daemon at %s", choice.address)
            self._address = choice.address
            return
        where = " or ".join(self.placement.probes) or "any address"
        why = "; ".join(choice.passed_over) or f"no daemon answered at {where}"
        if not engine_installed():
            raise engine_missing(why)
        log.info("%s; running the engine in-process", why)
        self._local = True

    def _fall_back(self, settings: EngineSettings, placement: Placement, why: str) -> Engine:
        """The in-process engine for this session and every later one (the daemon could not be used)."""
        if not engine_installed():
            raise engine_missing(why)
        log.warning("%s; running the engine in-process", why)
        self._local = True
        return self._in_process(settings)

    def _in_process(self, settings: EngineSettings) -> Engine:
        if self._model is None:
            self._model = load_local_model(settings, self.placement)
        from ..core import MultiPassDedup

        return MultiPassDedup.from_settings(self._model, settings)


class BusyWait:
    """A session on the daemon at ``address`` (opened at the first frame) that waits up to ``placement.busy_wait``
    seconds while the daemon is busy; any other failure, or busy after that, is the daemon's error."""

    def __init__(self, settings: EngineSettings, address: str, placement: Placement) -> None:
        self.settings = settings
        self.address = address
        self.placement = placement
        self.out_fps = settings.out_fps
        self.engine: Engine | None = None

    @property
    def stats(self) -> EngineStats | None:
        return None if self.engine is None else self.engine.stats

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        if self.engine is not None:
            return self.engine.push(frame)
        from .errors import DaemonUnavailableError

        started = time.monotonic()
        while True:
            remote = open_remote(self.settings, self.address, self.placement)
            try:
                out = remote.push(frame)
            except DaemonUnavailableError as e:
                remote.close()
                waited = time.monotonic() - started
                if e.code != "RESOURCE_EXHAUSTED" or waited >= self.placement.busy_wait:
                    raise
                time.sleep(min(BUSY_RETRY_SECONDS, max(0.0, self.placement.busy_wait - waited)))
                continue
            self.engine = remote
            return out

    def flush(self) -> list[np.ndarray]:
        return [] if self.engine is None else self.engine.flush()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
