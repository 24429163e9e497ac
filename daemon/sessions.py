"""Sessions: the registry that bounds and counts them, and the runner that streams one through the engine.

A session's engine (MultiPassDedup) runs in its own worker thread; its model is a proxy onto the
shared scheduler. The worker reads the next input frame only when the output queue (bounded by
``frames_in_flight``) has room, so a client faster than the device waits and memory does not grow.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import grpc
import numpy as np

from ..core import Interpolator, MultiPassDedup
from ..proto import mpd_pb2
from ..proto.wire import SessionSettings, rational
from ..units import format_bytes
from .errors import (
    DrainingError,
    MemoryBudgetError,
    SchedulerClosedError,
    SessionFailure,
    SessionLimitError,
    SubmissionCancelledError,
)
from .limits import Limits
from .scheduler import BatchScheduler, is_out_of_memory

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often blocked queue operations look for a cancellation (and drains for a cut)
# What ends a call early, as far as the daemon can tell: gRPC ends a call whose message exceeds the size limit
# (the client sees RESOURCE_EXHAUSTED) the same way as one the client cancels or whose connection breaks.
CLIENT_GONE = "client went away (cancelled or disconnected, or sent a message over the size limit)"
DRAINING_MESSAGE = "the daemon is shutting down; no new sessions"


@dataclass
class SessionSlot:
    """A registered session: who, since when, and how far it got."""

    id: str
    user: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    frames_in: int = 0
    frames_out: int = 0
    memory: int = 0  # bytes reserved against the budget
    released: bool = False


class SessionRegistry:
    """Hands out at most ``max_sessions`` slots, ``per_user`` of them to one user (0: no such cap), reserves
    their memory within ``memory_budget`` bytes (0: no budget), ``memory_per_user`` of them for one user's
    sessions together (0: the whole budget), and counts sessions created, released and rejected."""

    def __init__(self, max_sessions: int, memory_budget: int = 0, per_user: int = 0,
                 memory_per_user: int = 0) -> None:
        self.max_sessions = max_sessions
        self.per_user = per_user
        self.memory_budget = memory_budget
        self.memory_per_user = min(memory_per_user, memory_budget) if memory_per_user else memory_budget
        self.memory_reserved = 0
        self.created = 0
        self.released = 0
        self.rejected = 0
        self.draining = False
        self._active: dict[str, SessionSlot] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()

    def open(self, user: str, peer: str) -> SessionSlot:
        with self._cond:
            if self.draining:
                raise DrainingError(DRAINING_MESSAGE)
            if len(self._active) >= self.max_sessions:
                self.rejected += 1
                raise SessionLimitError(f"daemon busy: {len(self._active)} of {self.max_sessions} sessions in use; "
                                        "retry later")
            held = sum(s.user == user for s in self._active.values())
            if self.per_user and held >= self.per_user:
                self.rejected += 1
                raise SessionLimitError(f"daemon busy: {describe_user(user)} has {held} sessions, the most one user "
                                        f"may have at once (--max-sessions-per-user); retry later")
            slot = SessionSlot(id=f"s{next(self._ids)}", user=user, peer=peer)
            self._active[slot.id] = slot
            self.created += 1
            return slot

    def reserve(self, slot: SessionSlot, nbytes: int, what: str) -> None:
        """Count ``nbytes`` of ``slot``'s memory against the budget and its user's share of it; MemoryBudgetError
        if they do not fit (busy while other sessions hold the room, for good if the budget or the share is
        smaller)."""
        with self._cond:
            budget, share = self.memory_budget, self.memory_per_user
            if budget and nbytes > budget:
                raise MemoryBudgetError(
                    f"{what} needs about {format_bytes(nbytes)} of memory, more than this daemon's budget of "
                    f"{format_bytes(budget)}; use smaller frames or fewer passes (or a larger --memory-budget)",
                    busy=False)
            if share >= budget:
                share = 0  # the whole budget: its own checks below say it
            if share and nbytes > share:
                raise MemoryBudgetError(
                    f"{what} needs about {format_bytes(nbytes)} of memory, more than one user's share of this "
                    f"daemon's budget ({format_bytes(share)} of {format_bytes(budget)}); use smaller frames or fewer "
                    f"passes (or a larger --max-memory-per-user)", busy=False)
            held = sum(s.memory for s in self._active.values() if s.user == slot.user)
            if share and held + nbytes > share:
                self.rejected += 1
                raise MemoryBudgetError(
                    f"daemon busy: the sessions of {describe_user(slot.user)} hold {format_bytes(held)} of the "
                    f"{format_bytes(share)} one user may hold (--max-memory-per-user) and {what} needs "
                    f"{format_bytes(nbytes)}; retry later", busy=True)
            if budget and self.memory_reserved + nbytes > budget:
                self.rejected += 1
                raise MemoryBudgetError(
                    f"daemon busy: its sessions hold {format_bytes(self.memory_reserved)} of its "
                    f"{format_bytes(budget)} memory budget and {what} needs {format_bytes(nbytes)}; retry later",
                    busy=True)
            slot.memory = nbytes
            self.memory_reserved += nbytes

    def release(self, slot: SessionSlot) -> bool:
        """Free the slot and its memory; True the first time only."""
        with self._cond:
            if slot.released:
                return False
            slot.released = True
            self.memory_reserved -= slot.memory
            self._active.pop(slot.id, None)
            self.released += 1
            self._cond.notify_all()
            return True

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._active)

    def sessions(self) -> list[SessionSlot]:
        with self._cond:
            return list(self._active.values())

    def wait_idle(self, timeout: float, cut_short: threading.Event | None = None) -> bool:
        """Block until no session is active (True), or ``timeout`` passes or ``cut_short`` is set (False).

        ``cut_short`` is set from a signal handler, which cannot wake the condition: it is looked at
        every ``POLL_SECONDS``.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (cut_short is not None and cut_short.is_set()):
                    return False
                self._cond.wait(remaining if cut_short is None else min(remaining, POLL_SECONDS))
            return True


@dataclass
class SessionReport:
    """How a session ended, for the log line and the metrics."""

    outcome: str  # "ok", "cancelled", or a status code name
    frames_in: int
    frames_out: int
    model_calls: int
    seconds: float
    message: str = ""


_END = object()


class Session:
    """Streams one client's frames through its own MultiPassDedup on a worker thread.

    How it ends is decided once: the stream's own end (``ok``, or the failure the worker met), or
    the first cause from outside that stops it early (the client went away, the idle timeout, the
    daemon stopping), whichever comes first. The log line and the metrics report that outcome.
    ``ok`` is reported only once gRPC has taken the summary, the last message: a client that goes
    away before that has not received its output (its session ends ``cancelled``), even though the
    session's resources were freed when its stream ended.
    """

    def __init__(self, slot: SessionSlot, settings: SessionSettings, model: Interpolator, scheduler: BatchScheduler,
                 frames_in_flight: int, release: Callable[[SessionSlot], bool],
                 on_end: Callable[[SessionSlot, SessionSettings, SessionReport], None],
                 idle_timeout: float = 0.0, first_frame_timeout: float = 0.0,
                 cancel_call: Callable[[], object] | None = None,
                 call_active: Callable[[], bool] | None = None,
                 on_frames: Callable[[int, int], None] | None = None) -> None:
        self.slot = slot
        self.settings = settings
        self.scheduler = scheduler
        self.proxy = scheduler.proxy(model, user=slot.user, session=slot.id)
        self.engine = MultiPassDedup.from_settings(self.proxy, settings.engine)  # SettingsError: bad config
        self.out_fps: Fraction = self.engine.out_fps
        self.n_pass: int = 0 if settings.engine.adaptive else self.engine.n_pass  # adaptive: no passes
        self._release = release
        self._on_end = on_end
        self._idle_timeout = idle_timeout
        self._first_frame_timeout = first_frame_timeout  # from its start: a session that holds memory and sends nothing
        self._cancel_call = cancel_call
        self._call_active = call_active
        self._on_frames = on_frames
        self._expired: SessionFailure | None = None
        self._waiting_since: float | None = None  # when the worker began waiting for the client's next frame
        self._out: queue.Queue = queue.Queue(maxsize=frames_in_flight)
        self._cancelled = threading.Event()
        self._stop_cause: tuple[str, str] | None = None  # (outcome, message) of the first cause that stopped it early
        self._cause_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._done = False
        self._held_report: SessionReport | None = None  # an "ok" end, reported once the summary is sent
        self._reported = False

    def start_message(self, limits: Limits, device: str) -> mpd_pb2.ServerMessage:
        """The session's first reply: what was accepted and the limits in force."""
        return mpd_pb2.ServerMessage(start=mpd_pb2.SessionStart(
            session_id=self.slot.id, out_fps=rational(self.out_fps),
            n_pass=self.n_pass, frame_bytes=self.settings.frame_bytes, max_frame_bytes=limits.max_frame_bytes,
            max_frame_pixels=limits.max_frame_pixels, frames_in_flight=limits.frames_in_flight, device=device,
            user=self.slot.user, adaptive=self.settings.engine.adaptive))

    def memory_estimate(self, frames_in_flight: int) -> int:
        """Most bytes the session's frames take: the engine's bound, and frames queued either way."""
        s = self.settings
        return self.engine.memory_bound(s.height, s.width) + 2 * frames_in_flight * s.frame_bytes

    def start(self, requests: Iterator[mpd_pb2.ClientMessage]) -> threading.Thread:
        """Run the session on its worker thread; the caller joins it before the process exits."""
        self._worker = threading.Thread(target=self._work, args=(requests,), name=f"mpd-{self.slot.id}", daemon=True)
        self._worker.start()
        return self._worker

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop at once: the client went away or the server is stopping (the first cause is the one reported)."""
        self._stop("cancelled", reason)

    def _stop(self, outcome: str, message: str) -> bool:
        """Stop the session early for this cause; False when an earlier cause (or its own end) came first."""
        with self._cause_lock:
            first = self._stop_cause is None and not self._done
            if first:
                self._stop_cause = (outcome, message)
            held = self._held_report
        self._cancelled.set()
        self.scheduler.end_session(self.slot.id, message)
        if held is not None:  # the stream ended, but its last messages never went out
            self._report(dataclasses.replace(held, outcome=outcome, message=f"{message}, before its output was sent"))
        return first

    def responses(self) -> Iterator[mpd_pb2.ServerMessage]:
        """Output frames as the worker makes them, then the summary; raises SessionFailure on error."""
        while True:
            try:
                item = self._out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._expired is None and self._waits_for_first_frame_too_long():
                    self._expire("without its first frame", self._first_frame_timeout)
                elif self._expired is None and self._idle_since(self._waiting_since):
                    self._expire("without a frame from the client")
                if self._expired is not None:
                    raise self._expired from None
                if self._cancelled.is_set() and not self._worker_alive():
                    return
                continue
            if item is _END:
                return
            if isinstance(item, SessionFailure):
                raise item
            yield item
            if item.WhichOneof("kind") == "summary" and self._held_report is not None:
                self._report(self._held_report)  # gRPC came back for more: the summary went out

    def _idle_since(self, since: float | None) -> bool:
        """The daemon has waited on the client since ``since`` for longer than the idle timeout."""
        return bool(self._idle_timeout) and since is not None and time.monotonic() - since > self._idle_timeout

    def _waits_for_first_frame_too_long(self) -> bool:
        """The session has reserved its memory and its client has sent no frame for ``first_frame_timeout`` s."""
        return (bool(self._first_frame_timeout) and self.slot.frames_in == 0
                and time.monotonic() - self.slot.started > self._first_frame_timeout)

    def _expire(self, what: str, after: float | None = None) -> None:
        """End a session whose client stalls, so that it does not hold its slot (and memory) for long."""
        after = self._idle_timeout if after is None else after
        failure = SessionFailure(grpc.StatusCode.DEADLINE_EXCEEDED, f"session closed after {after:g} s {what}", "idle")
        if self._stop(failure.code.name, failure.message):
            self._expired = failure

    def _worker_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    # -- the worker thread --------------------------------------------------------------------

    def _work(self, requests: Iterator[mpd_pb2.ClientMessage]) -> None:
        try:
            self._stream(requests)
            summary = self._summary()
            self._finish("ok")
            self._put(summary)
            self._put(_END)
        except SessionFailure as failure:
            self._finish(failure.code.name, failure.message)
            self._put(failure)
        except Exception as exc:  # every failure must end this session, never the daemon
            failure = self._classify(exc)
            if failure is None:
                self._finish("cancelled", CLIENT_GONE)  # unless a cause stopped it first: that one is reported
                self._put(_END)
                return
            if failure.code == grpc.StatusCode.INTERNAL:
                log.exception("session %s failed", self.slot.id)
            self._finish(failure.code.name, failure.message)
            self._put(failure)

    def _stream(self, requests: Iterator[mpd_pb2.ClientMessage]) -> None:
        s = self.settings
        for message in self._next_messages(requests):
            self._check_cancelled()
            kind = message.WhichOneof("kind")
            index = self.slot.frames_in
            if kind != "frame":
                got = f"a {kind}" if kind else "empty"
                raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"message {index + 2} is {got}; after the config only frames may follow")
            data = message.frame.data
            if len(data) != s.frame_bytes:
                raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"frame {index} has {len(data)} bytes; {s.width}x{s.height} {s.pixel_format} "
                                     f"needs {s.frame_bytes}")
            frame = np.frombuffer(data, dtype=s.pixel_format.dtype).reshape(s.height, s.width, 3)
            self.slot.frames_in += 1
            if self._on_frames is not None:
                self._on_frames(1, 0)
            self._send(self.engine.push(frame))
            self._put(mpd_pb2.ServerMessage(ack=mpd_pb2.InputAck(frames_read=self.slot.frames_in)))
        # The requests also end when the call does (gRPC stops the iterator): only a half-close of a live call
        # is the end of the client's input.
        if self._call_active is not None and not self._call_active():
            self._stop("cancelled", CLIENT_GONE)
        self._check_cancelled()
        self._send(self.engine.flush())

    def _next_messages(self, requests: Iterator[mpd_pb2.ClientMessage]) -> Iterator[mpd_pb2.ClientMessage]:
        """The client's messages, noting while we wait for each (the idle clock runs only then)."""
        while True:
            self._waiting_since = time.monotonic()
            try:
                message = next(requests)
            except StopIteration:
                return
            finally:
                self._waiting_since = None
            yield message

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise SubmissionCancelledError(self._stop_cause[1] if self._stop_cause else CLIENT_GONE)

    def _send(self, frames: list[np.ndarray]) -> None:
        for f in frames:
            index = self.slot.frames_out
            pts = Fraction(index) / self.out_fps
            data = f.astype(self.settings.pixel_format.dtype, copy=False).tobytes()
            self._put(mpd_pb2.ServerMessage(frame=mpd_pb2.OutputFrame(
                index=index, pts=mpd_pb2.Rational(num=pts.numerator, den=pts.denominator), data=data)))
            self.slot.frames_out += 1
            if self._on_frames is not None:
                self._on_frames(0, 1)

    def _put(self, item: object) -> None:
        """Queue for the client; blocks while ``frames_in_flight`` items wait (this is the backpressure)."""
        blocked_since = time.monotonic()
        while not self._cancelled.is_set():
            try:
                self._out.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                if self._expired is None and self._idle_since(blocked_since):
                    self._expire("without the client reading its output")
                    if self._cancel_call is not None:
                        self._cancel_call()  # the call's thread is stuck sending to a client that does not read
        if isinstance(item, mpd_pb2.ServerMessage) and item.WhichOneof("kind") in ("frame", "ack"):
            self._check_cancelled()

    def _classify(self, exc: Exception) -> SessionFailure | None:
        """The status a failure ends the session with; None when the client went away."""
        if self._cancelled.is_set() or isinstance(exc, (SubmissionCancelledError, grpc.RpcError)):
            return None
        if is_out_of_memory(exc):
            return SessionFailure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"out of memory on {self.proxy.model.device} for this session: {_first_line(exc)}",
                                  "out-of-memory")
        if isinstance(exc, SchedulerClosedError):
            return SessionFailure(exc.status, "the daemon is shutting down", exc.tag)
        return SessionFailure(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {_first_line(exc)}")

    def _summary(self) -> mpd_pb2.ServerMessage:
        st = self.engine.stats
        return mpd_pb2.ServerMessage(summary=mpd_pb2.SessionSummary(
            frames_in=st.frames_in, frames_out=st.frames_out, model_calls=st.model_calls,
            duplicate_skips=st.duplicate_skips, scene_changes=st.scene_changes,
            seconds=time.monotonic() - self.slot.started))

    def _finish(self, outcome: str, message: str = "") -> None:
        """Free everything the session holds, before its last message goes out.

        A cause that stopped the session early (``_stop``) is its outcome, whatever the worker then met;
        an ``ok`` end is reported when its summary has gone out (``responses``), or as the cause that
        stops it before.
        """
        self.scheduler.end_session(self.slot.id, "session ended")
        st = self.engine.stats
        report = SessionReport(outcome, self.slot.frames_in, self.slot.frames_out, st.model_calls,
                               time.monotonic() - self.slot.started, message)
        with self._cause_lock:
            if self._done:
                return
            self._done = True
            if self._stop_cause is not None:
                report = dataclasses.replace(report, outcome=self._stop_cause[0], message=self._stop_cause[1])
            elif outcome == "ok":
                self._held_report = report
        self.engine = None  # the pipeline's frames go with it
        self._release(self.slot)
        if self._held_report is None:
            self._report(report)

    def _report(self, report: SessionReport) -> None:
        """Log and count how the session ended, once."""
        with self._cause_lock:
            if self._reported:
                return
            self._reported = True
        self._on_end(self.slot, self.settings, report)


def describe_user(user: str) -> str:
    """A user name for messages (the shared token's user has none)."""
    return f"user {user!r}" if user else "the shared token's user"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
