"""The MultiPassDedup gRPC service: Interpolate sessions, ListModels, Status."""

from __future__ import annotations

import logging
import os
import queue
import resource
import threading
import time
import weakref
from collections.abc import Iterator
from typing import NoReturn

import grpc
import torch

from ..core import Interpolator
from ..proto import mpd_pb2, mpd_pb2_grpc
from ..proto.wire import ERROR_HEADER, SessionSettings
from .auth import Authenticator
from .config import describe, parse_config
from .errors import ConfigError, DrainingError, MemoryBudgetError, SessionFailure, SessionLimitError, failure_for
from .limits import Limits
from .metrics import DaemonMetrics
from .scheduler import BatchScheduler
from .sessions import CLIENT_GONE, DRAINING_MESSAGE, Session, SessionRegistry, SessionReport, SessionSlot

log = logging.getLogger(__name__)
_DRAINING = object()  # posted to the calls waiting for their config when the daemon drains


def resident_memory_bytes() -> int:
    """This process's resident set size now (peak size where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_memory_bytes(device: torch.device) -> int:
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0


class MultiPassDedupService(mpd_pb2_grpc.MultiPassDedupServicer):
    """Sessions share the loaded models through one scheduler; every failure ends one session only."""

    def __init__(self, models: dict[str, Interpolator], scheduler: BatchScheduler, registry: SessionRegistry,
                 limits: Limits, authenticator: Authenticator, metrics: DaemonMetrics,
                 served: dict[str, dict[str, Interpolator]] | None = None) -> None:
        self.models = models
        # name -> precision -> model computing in it (sharing the networks); the first one is the default.
        self.served = served or {name: {m.precision: m} for name, m in models.items()}
        self.scheduler = scheduler
        self.registry = registry
        self.limits = limits
        self.authenticator = authenticator
        self.metrics = metrics
        self.started = time.monotonic()
        self._workers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # a running thread stays referenced
        self._sessions: weakref.WeakSet[Session] = weakref.WeakSet()  # referenced by their workers while they run
        # Calls waiting for their config: each one's mailbox, so that a drain refuses them at once.
        self._awaiting_config: set[queue.Queue] = set()
        self._refusing = False
        self._awaiting_lock = threading.Lock()
        first = next(iter(models.values()))
        self.device = first.device

    # -- Interpolate ---------------------------------------------------------------------------

    def Interpolate(self, request_iterator: Iterator[mpd_pb2.ClientMessage],  # noqa: N802 - gRPC's naming
                    context: grpc.ServicerContext) -> Iterator[mpd_pb2.ServerMessage]:
        peer = context.peer()
        user = self.authenticator.identify(dict(context.invocation_metadata()), peer)
        try:
            slot = self.registry.open(user, peer)
        except (SessionLimitError, DrainingError) as e:
            if isinstance(e, SessionLimitError):
                log.warning("refused a session of %s (%s): %s", user, peer, e)
            _abort(context, e.status, str(e), e.tag)
        try:
            settings = self._read_config(request_iterator)
            session = Session(slot, settings, self._model_for(settings), self.scheduler,
                              self.limits.frames_in_flight, self.registry.release, self._session_ended,
                              idle_timeout=self.limits.idle_timeout,
                              first_frame_timeout=self.limits.first_frame_timeout, cancel_call=context.cancel,
                              call_active=context.is_active, on_frames=self.metrics.frames_passed)
            self._reserve_memory(slot, session)
        except (SessionFailure, ValueError) as e:
            failure = e if isinstance(e, SessionFailure) else SessionFailure(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            self._not_started(slot, failure.code.name, failure.message)
            _abort(context, failure.code, failure.message, failure.tag)
        except grpc.RpcError:  # the call ended before the config arrived
            self._not_started(slot, "cancelled", CLIENT_GONE)
            return
        except BaseException:
            self._not_started(slot, "cancelled", "the call ended before its config arrived")
            raise
        log.info("session %s start: user=%s peer=%s %s %s", slot.id, user, peer, describe(settings),
                 self._model_for(settings).precision)
        # From here the worker owns the session: it frees it however the call ends, even if this
        # generator is never resumed (gRPC stops iterating a cancelled call).
        self._sessions.add(session)
        self._workers.add(session.start(request_iterator))
        if not context.add_callback(lambda: session.cancel(CLIENT_GONE)):
            session.cancel(CLIENT_GONE)
        yield session.start_message(self.limits, str(self.device))
        try:
            yield from session.responses()
        except SessionFailure as failure:
            _abort(context, failure.code, failure.message, failure.tag)

    def _not_started(self, slot: SessionSlot, outcome: str, message: str) -> None:
        """Free a session that ended before it started streaming, and log and count how it ended."""
        self.registry.release(slot)
        self.metrics.session_ended(SessionReport(outcome, 0, 0, 0, time.monotonic() - slot.started, message))
        log.info("session %s of %s (%s) not started: %s %s", slot.id, slot.user, slot.peer, outcome, message)

    def refuse_unstarted(self) -> None:
        """The daemon drains: the calls still waiting for their config end now (UNAVAILABLE), and so do later ones."""
        with self._awaiting_lock:
            self._refusing = True
            waiting = list(self._awaiting_config)
        for mailbox in waiting:
            mailbox.put(_DRAINING)

    def cancel_sessions(self, reason: str) -> None:
        """Cancel every running session with ``reason`` as its outcome's message (the daemon is stopping)."""
        for session in list(self._sessions):
            session.cancel(reason)

    def _reserve_memory(self, slot: SessionSlot, session: Session) -> None:
        """Admit the session's frames within the memory budget, or refuse it (busy: retry later)."""
        s = session.settings
        method = "adaptive re-timing" if session.n_pass == 0 else f"n_pass={session.n_pass}"
        what = f"a {s.model} session of {s.width}x{s.height} {s.pixel_format} with {method}"
        try:
            self.registry.reserve(slot, session.memory_estimate(self.limits.frames_in_flight), what)
        except MemoryBudgetError as e:
            raise failure_for(e) from None

    def join_sessions(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every session's worker thread to end; True if all did.

        A worker still dropping its session's tensors while the interpreter finalizes aborts the
        process ("terminate called without an active exception"), so the daemon joins them before exit.
        """
        deadline = time.monotonic() + timeout
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(w.is_alive() for w in list(self._workers))

    def _read_config(self, requests: Iterator[mpd_pb2.ClientMessage]) -> SessionSettings:
        first = self._first_message(requests, self.limits.first_frame_timeout)
        if first.WhichOneof("kind") != "config":
            got = first.WhichOneof("kind") or "an empty message"
            raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"the first message must be a SessionConfig, got {got}")
        try:
            return parse_config(first.config, sorted(self.models), self.limits,
                                {name: list(v) for name, v in self.served.items()})
        except ConfigError as e:
            raise failure_for(e) from None

    def _first_message(self, requests: Iterator[mpd_pb2.ClientMessage], timeout: float) -> mpd_pb2.ClientMessage:
        """The stream's first message, waited for ``timeout`` seconds at most (0: no limit), or until the daemon drains.

        A stream that never sends anything holds a session slot: the start timeout covers this wait. gRPC's
        request iterator cannot time out, so a short-lived thread reads the message into a mailbox, which a drain
        can post to as well; once the call ends (the caller aborts it) that read returns and the thread ends.
        Raises SessionFailure (no config in time, the daemon drains, or the stream ended first) or grpc.RpcError
        (the call ended).
        """
        mailbox: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                mailbox.put((next(requests), None))
            except StopIteration:
                mailbox.put((None, None))
            except Exception as e:  # noqa: BLE001 - grpc.RpcError: the call ended; handed to the caller
                mailbox.put((None, e))

        with self._awaiting_lock:
            if not self._refusing:
                self._awaiting_config.add(mailbox)
            else:
                mailbox.put(_DRAINING)
        threading.Thread(target=read, name="mpd-config-wait", daemon=True).start()
        try:
            item = mailbox.get(timeout=timeout or None)
        except queue.Empty:
            raise SessionFailure(grpc.StatusCode.DEADLINE_EXCEEDED,
                                 f"session closed after {timeout:g} s without its SessionConfig", "idle") from None
        finally:
            with self._awaiting_lock:
                self._awaiting_config.discard(mailbox)
        if item is _DRAINING:
            raise SessionFailure(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE, "shutdown")
        message, error = item
        if error is not None:
            raise error
        if message is None:
            raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT, "the stream ended before its SessionConfig")
        return message

    def _model_for(self, settings: SessionSettings) -> Interpolator:
        """The served model in the precision the session asked for (auto: the model's default)."""
        variants = self.served[settings.model]
        precision = settings.engine.precision
        return next(iter(variants.values())) if precision == "auto" else variants[precision]

    def _session_ended(self, slot: SessionSlot, settings: SessionSettings, report: SessionReport) -> None:
        self.metrics.session_ended(report)
        fps = report.frames_out / report.seconds if report.seconds > 0 else 0.0
        line = (f"session {slot.id} end: {report.outcome} user={slot.user} frames in={report.frames_in} "
                f"out={report.frames_out} model_calls={report.model_calls} {report.seconds:.2f} s ({fps:.1f} fps out)")
        if report.message:
            line += f": {report.message}"
        (log.info if report.outcome in ("ok", "cancelled") else log.warning)("%s", line)

    # -- ListModels, Status ----------------------------------------------------------------------

    def ListModels(self, request: mpd_pb2.ListModelsRequest,  # noqa: N802 - gRPC's naming
                   context: grpc.ServicerContext) -> mpd_pb2.ListModelsResponse:
        return mpd_pb2.ListModelsResponse(models=self._model_infos())

    def _model_infos(self) -> list[mpd_pb2.ModelInfo]:
        infos = []
        for name, variants in sorted(self.served.items()):
            m = next(iter(variants.values()))
            infos.append(mpd_pb2.ModelInfo(name=name, device=str(m.device),
                                           dtype=str(m.compute_dtype).removeprefix("torch."),
                                           alignment=m.alignment(1.0), precisions=list(variants),
                                           precision_reason=m.precision_reason))
        return infos

    def Status(self, request: mpd_pb2.StatusRequest,  # noqa: N802 - gRPC's naming
               context: grpc.ServicerContext) -> mpd_pb2.StatusResponse:
        reg, st, device_seconds = self.registry, self.scheduler.stats_copy(), self.scheduler.device_seconds()
        return mpd_pb2.StatusResponse(
            sessions_active=reg.active, sessions_created=reg.created, sessions_released=reg.released,
            sessions_rejected=reg.rejected, max_sessions=reg.max_sessions, queue_depth=self.scheduler.queue_depth,
            device=str(self.device), rss_bytes=resident_memory_bytes(),
            device_memory_bytes=device_memory_bytes(self.device), batches=st.batches, batched_requests=st.parts,
            cross_session_batches=st.cross_session_batches, max_batch_size_seen=st.max_batch_pairs,
            uptime_seconds=time.monotonic() - self.started, models=sorted(self.models), draining=reg.draining,
            sessions=[mpd_pb2.SessionInfo(session_id=s.id, user=s.user, peer=s.peer, frames_in=s.frames_in,
                                          frames_out=s.frames_out, seconds=time.monotonic() - s.started,
                                          memory_bytes=s.memory, device_seconds=device_seconds.get(s.id, 0.0))
                      for s in reg.sessions()],
            memory_budget_bytes=reg.memory_budget, memory_reserved_bytes=reg.memory_reserved,
            max_memory_per_user_bytes=reg.memory_per_user, max_frame_pixels=self.limits.max_frame_pixels,
            max_sessions_per_user=reg.per_user, model_info=self._model_infos())


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, tag: str = "") -> NoReturn:
    """End the call with ``code`` (``context.abort`` raises); ``tag`` tells clients what kind of failure it was
    (busy, out-of-memory...)."""
    if tag:
        context.set_trailing_metadata(((ERROR_HEADER, tag),))
    context.abort(code, message)
