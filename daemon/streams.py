"""Streaming calls other than sessions (server reflection, health watches): their own budgets, closed when idle.

gRPC Python runs a call on a thread of the server's pool for as long as its handler runs, and a
reflection stream's handler runs until the client closes it: sixteen idle reflection streams once
took every thread, and the daemon answered nothing. ``StreamBudget`` (a server interceptor) gives
these streams threads of their own, refuses more than ``max_streams`` reflection streams open at
once with ``RESOURCE_EXHAUSTED``, and ends those idle for ``idle_timeout`` seconds: a reflection
stream without a request is cancelled, a health watch without a status change is ended (OK;
watchers open a new one). Health checks (``Check``) run on a small pool of their own, so that they
answer whatever holds the main pool. Sessions are bounded elsewhere (the session slots).

Health watches are how a fleet's clients (gRPC's client-side health checking) decide whether this
daemon may get sessions, and they need no token: a watch refused would take the daemon out of
that client's fleet. So a watch is never refused. Watches hold no thread while they wait; at most
``max_watches`` are open, and a new one beyond that ends (OK) the oldest watch of the connection
that holds the most, so that one caller opening many ends its own, never the one watch each
fleet client holds per connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc

log = logging.getLogger(__name__)

REFLECTION_METHODS = frozenset({"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"})
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_CHECK_THREADS = 2
WATCH_SENDER_THREADS = 2
DEFAULT_MAX_WATCHES = 256  # a watch costs a small record and no thread while it waits
WATCH = "health watch"
SWEEP_SECONDS = 0.25  # how often idle streams are looked for, at most


@dataclass(eq=False)
class _OpenStream:
    """One admitted stream: its call, what kind it is and when it last carried a message."""

    context: grpc.ServicerContext
    kind: str
    last: float = field(default_factory=time.monotonic)
    close: Callable[[], None] | None = None  # how to end it when idle (default: cancel the call)
    opened: float = field(default_factory=time.monotonic)
    peer: str = ""  # the caller's connection (address and port)

    def __post_init__(self) -> None:
        self.peer = self.context.peer()

    def touch(self) -> None:
        self.last = time.monotonic()


class _Outbox:
    """One watch's messages, sent in order on a pool thread instead of the caller's.

    gRPC's send blocks until its own event thread has sent the message, and the health servicer sends
    (a watch's first status, a status change to every watcher) while holding its lock, which that same
    event thread takes to forget a watch that ended: a watch starting while another ended froze the
    daemon's gRPC server. Sent from here, the servicer's lock is never held across a send.
    """

    def __init__(self, send: Callable[[object], object], pool: futures.Executor) -> None:
        self._send = send
        self._pool = pool
        self._queue: deque[object] = deque()
        self._lock = threading.Lock()
        self._sending = False

    def post(self, message: object) -> None:
        with self._lock:
            self._queue.append(message)
            if self._sending:
                return
            self._sending = True
        try:
            self._pool.submit(self._drain)
        except RuntimeError:  # the daemon is stopping: its calls are being cancelled anyway
            pass

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._sending = False
                    return
                message = self._queue.popleft()
            try:
                self._send(message)
            except Exception as e:  # noqa: BLE001 - a call that ended meanwhile
                log.debug("sending on a health watch: %s", e)


class StreamBudget(grpc.ServerInterceptor):
    """Admits at most ``max_streams`` reflection streams at once, on threads of their own, and at most
    ``max_watches`` health watches (a new one ends the oldest of the connection holding the most); ends those
    idle for ``idle_timeout`` seconds (0: never); health checks get their own threads too."""

    def __init__(self, max_streams: int, idle_timeout: float, max_watches: int = DEFAULT_MAX_WATCHES) -> None:
        if max_streams < 1:
            raise ValueError(f"max-other-streams must be at least 1, got {max_streams}")
        if max_watches < 1:
            raise ValueError(f"max-health-watches must be at least 1, got {max_watches}")
        self.max_streams = max_streams
        self.max_watches = max_watches
        self.idle_timeout = idle_timeout
        # One thread beyond the budget answers the calls it refuses; a watch holds none while it waits.
        self._pool = futures.ThreadPoolExecutor(max_streams + 1, thread_name_prefix="mpd-stream")
        self._check_pool = futures.ThreadPoolExecutor(HEALTH_CHECK_THREADS, thread_name_prefix="mpd-health")
        self._watch_senders = futures.ThreadPoolExecutor(WATCH_SENDER_THREADS, thread_name_prefix="mpd-watch-send")
        self._open: set[_OpenStream] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.refused = 0
        self.closed_idle = 0
        self.watches_ended = 0  # ended to make room for a newer watch

    # -- lifetime ------------------------------------------------------------------------------

    def start(self) -> StreamBudget:
        if self.idle_timeout and self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep, name="mpd-stream-sweeper", daemon=True)
            self._sweeper.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._check_pool.shutdown(wait=False, cancel_futures=True)
        self._watch_senders.shutdown(wait=False, cancel_futures=True)

    @property
    def open_streams(self) -> int:
        """Reflection streams open now."""
        with self._lock:
            return sum(s.kind != WATCH for s in self._open)

    @property
    def open_watches(self) -> int:
        """Health watches open now."""
        with self._lock:
            return sum(s.kind == WATCH for s in self._open)

    # -- the interceptor -----------------------------------------------------------------------

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None:
            return None
        if method in REFLECTION_METHODS and handler.request_streaming and handler.response_streaming:
            return self._reflection_handler(handler)
        if method == HEALTH_WATCH and handler.response_streaming and not handler.request_streaming:
            return self._watch_handler(handler)
        if method == HEALTH_CHECK and not handler.request_streaming and not handler.response_streaming:
            return self._check_handler(handler)
        return handler

    def _admit(self, stream: _OpenStream) -> _OpenStream:
        """Register the stream; a reflection stream over the budget ends with RESOURCE_EXHAUSTED, a watch over its
        bound ends an older watch instead (``_watch_to_end``)."""
        context, kind = stream.context, stream.kind
        ended: _OpenStream | None = None
        with self._lock:
            if kind == WATCH:
                admitted = True
                if sum(s.kind == WATCH for s in self._open) >= self.max_watches:
                    ended = self._watch_to_end()
                    self._open.discard(ended)
                    self.watches_ended += 1
            else:
                admitted = sum(s.kind != WATCH for s in self._open) < self.max_streams
                if not admitted:
                    self.refused += 1
            if admitted:
                self._open.add(stream)
        if ended is not None:
            log.info("ending the oldest health watch of %s to admit one of %s (%d open, --max-health-watches)",
                     ended.context.peer(), context.peer(), self.max_watches)
            self._close(ended)
        if not admitted:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"too many open reflection streams ({self.max_streams}); close one or retry later")
        if not context.add_callback(lambda: self._forget(stream)):
            self._forget(stream)  # the call ended already
        return stream

    def _watch_to_end(self) -> _OpenStream:
        """The watch to end for a new one (lock held): the oldest of the connection that holds the most watches."""
        watches = [s for s in self._open if s.kind == WATCH]
        per_peer: dict[str, int] = {}
        for s in watches:
            per_peer[s.peer] = per_peer.get(s.peer, 0) + 1
        return min(watches, key=lambda s: (-per_peer[s.peer], s.opened))

    @staticmethod
    def _close(stream: _OpenStream) -> None:
        """End a stream the daemon no longer keeps (a watch with OK, a reflection stream by cancelling it)."""
        try:
            (stream.close or stream.context.cancel)()
        except Exception as e:  # noqa: BLE001 - a call that ended meanwhile
            log.debug("closing a stream: %s", e)

    def _forget(self, stream: _OpenStream) -> None:
        with self._lock:
            self._open.discard(stream)

    def _reflection_handler(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.stream_stream

        def behavior(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
            stream = self._admit(_OpenStream(context, "reflection"))

            def touched_requests() -> Iterator:
                for request in requests:
                    stream.touch()
                    yield request

            for response in inner(touched_requests(), context):
                stream.touch()
                yield response

        behavior.experimental_thread_pool = self._pool
        return grpc.stream_stream_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                                     response_serializer=handler.response_serializer)

    def _watch_handler(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.unary_stream
        if not getattr(inner, "experimental_non_blocking", False):
            return handler  # a blocking watch would hold a thread: the health servicer is made non-blocking

        def behavior(request: object, context: grpc.ServicerContext,
                     send_response_callback: Callable[[object], None]) -> None:
            stream = _OpenStream(context, WATCH)
            ended = threading.Lock()  # held once the stream is ended: gRPC must be told only once
            outbox = _Outbox(send_response_callback, self._watch_senders)

            def send(response: object) -> None:
                """The servicer's sender (None ends the stream with OK), which the daemon's own ends use too."""
                if response is None:
                    if ended.acquire(blocking=False):
                        outbox.post(None)
                    return
                if ended.locked():
                    return
                stream.touch()
                outbox.post(response)

            stream.close = lambda: send(None)
            self._admit(stream)
            return inner(request, context, send)

        behavior.experimental_non_blocking = True
        behavior.experimental_thread_pool = self._pool
        return grpc.unary_stream_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)

    def _check_handler(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.unary_unary

        def behavior(request: object, context: grpc.ServicerContext) -> object:
            return inner(request, context)

        behavior.experimental_thread_pool = self._check_pool
        return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    # -- idle streams --------------------------------------------------------------------------

    def _sweep(self) -> None:
        interval = min(SWEEP_SECONDS, self.idle_timeout / 4)
        while not self._stopped.wait(interval):
            now = time.monotonic()
            with self._lock:
                idle = [s for s in self._open if now - s.last > self.idle_timeout]
                self._open.difference_update(idle)
                self.closed_idle += len(idle)
            for stream in idle:
                log.debug("closing an idle %s stream of %s after %g s", stream.kind, stream.peer, self.idle_timeout)
                self._close(stream)
