"""The MultiPassDedup gRPC service: Interpolate sessions, ListModels, Status."""

from __future__ import annotations

import logging
import os
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
from .config import ConfigError, describe, parse_config
from .limits import Limits
from .metrics import DaemonMetrics
from .scheduler import BatchScheduler
from .sessions import (
    DrainingError,
    MemoryBudgetError,
    Session,
    SessionFailure,
    SessionLimitError,
    SessionRegistry,
    SessionReport,
    SessionSlot,
)

log = logging.getLogger(__name__)


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
                 limits: Limits, authenticator: Authenticator, metrics: DaemonMetrics) -> None:
        self.models = models
        self.scheduler = scheduler
        self.registry = registry
        self.limits = limits
        self.authenticator = authenticator
        self.metrics = metrics
        self.started = time.monotonic()
        self._workers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # a running thread stays referenced
        first = next(iter(models.values()))
        self.device = first.device

    # -- Interpolate ---------------------------------------------------------------------------

    def Interpolate(self, request_iterator: Iterator[mpd_pb2.ClientMessage],  # noqa: N802 - gRPC's naming
                    context: grpc.ServicerContext) -> Iterator[mpd_pb2.ServerMessage]:
        peer = context.peer()
        user = self.authenticator.identify(dict(context.invocation_metadata()), peer)
        try:
            slot = self.registry.open(user, peer)
        except SessionLimitError as e:
            log.warning("refused a session of %s (%s): %s", user, peer, e)
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(e), "busy")
        except DrainingError as e:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(e), "shutdown")
        try:
            settings = self._read_config(request_iterator)
            session = Session(slot, settings, self.models[settings.model], self.scheduler,
                              self.limits.frames_in_flight, self.registry.release, self._session_ended,
                              idle_timeout=self.limits.idle_timeout, cancel_call=context.cancel)
            self._reserve_memory(slot, session)
        except (SessionFailure, ValueError) as e:
            failure = e if isinstance(e, SessionFailure) else SessionFailure(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            self.registry.release(slot)
            self.metrics.session_ended(SessionReport(failure.code.name, 0, 0, 0, 0.0, failure.message))
            log.info("session %s of %s (%s) refused: %s %s", slot.id, user, peer, failure.code.name, failure.message)
            _abort(context, failure.code, failure.message, failure.tag)
        except BaseException:  # the client went away before its config arrived
            self.registry.release(slot)
            self.metrics.session_ended(SessionReport("cancelled", 0, 0, 0, 0.0))
            raise
        log.info("session %s start: user=%s peer=%s %s", slot.id, user, peer, describe(settings))
        # From here the worker owns the session: it frees it however the call ends, even if this
        # generator is never resumed (gRPC stops iterating a cancelled call).
        self._workers.add(session.start(request_iterator))
        if not context.add_callback(lambda: session.cancel("client went away")):
            session.cancel("client went away")
        yield session.start_message(self.limits, str(self.device))
        try:
            yield from session.responses()
        except SessionFailure as failure:
            _abort(context, failure.code, failure.message, failure.tag)

    def _reserve_memory(self, slot: SessionSlot, session: Session) -> None:
        """Admit the session's frames within the memory budget, or refuse it (busy: retry later)."""
        s = session.settings
        what = f"a {s.model} session of {s.width}x{s.height} {s.pixel_format} with n_pass={session.n_pass}"
        try:
            self.registry.reserve(slot, session.memory_estimate(self.limits.frames_in_flight), what)
        except MemoryBudgetError as e:
            raise SessionFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e), "busy" if e.busy else "memory") from None

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
        try:
            first = next(requests)
        except StopIteration:
            raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 "the stream ended before its SessionConfig") from None
        if first.WhichOneof("kind") != "config":
            got = first.WhichOneof("kind") or "nothing"
            raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"the first message must be a SessionConfig, got {got}")
        try:
            return parse_config(first.config, sorted(self.models), self.limits)
        except ConfigError as e:
            raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None

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
        return mpd_pb2.ListModelsResponse(models=[
            mpd_pb2.ModelInfo(name=name, device=str(m.device), dtype=str(m.dtype).removeprefix("torch."),
                              alignment=m.alignment(1.0))
            for name, m in sorted(self.models.items())])

    def Status(self, request: mpd_pb2.StatusRequest,  # noqa: N802 - gRPC's naming
               context: grpc.ServicerContext) -> mpd_pb2.StatusResponse:
        reg, st = self.registry, self.scheduler.stats_copy()
        return mpd_pb2.StatusResponse(
            sessions_active=reg.active, sessions_created=reg.created, sessions_released=reg.released,
            sessions_rejected=reg.rejected, max_sessions=reg.max_sessions, queue_depth=self.scheduler.queue_depth,
            device=str(self.device), rss_bytes=resident_memory_bytes(),
            device_memory_bytes=device_memory_bytes(self.device), batches=st.batches, batched_requests=st.parts,
            cross_session_batches=st.cross_session_batches, max_batch_size_seen=st.max_batch_pairs,
            uptime_seconds=time.monotonic() - self.started, models=sorted(self.models), draining=reg.draining,
            sessions=[mpd_pb2.SessionInfo(session_id=s.id, user=s.user, peer=s.peer, frames_in=s.frames_in,
                                          frames_out=s.frames_out, seconds=time.monotonic() - s.started,
                                          memory_bytes=s.memory)
                      for s in reg.sessions()],
            memory_budget_bytes=reg.memory_budget, memory_reserved_bytes=reg.memory_reserved,
            max_sessions_per_user=reg.per_user)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, tag: str = "") -> NoReturn:
    """End the call with ``code`` (``context.abort`` raises); ``tag`` tells clients what kind of failure it was
    (busy, out-of-memory...)."""
    if tag:
        context.set_trailing_metadata(((ERROR_HEADER, tag),))
    context.abort(code, message)
