"""Streaming calls other than sessions (server reflection, health watches): their own budget, closed when idle.

gRPC Python runs a call on a thread of the server's pool for as long as its handler runs, and a
reflection stream's handler runs until the client closes it: sixteen idle reflection streams once
took every thread, and the daemon answered nothing. ``StreamBudget`` (a server interceptor) gives
these streams threads of their own, refuses more than ``max_streams`` open at once with
``RESOURCE_EXHAUSTED``, and ends those idle for ``idle_timeout`` seconds: a reflection stream
without a request is cancelled, a health watch without a status change is ended (OK; watchers
open a new one). Health checks (``Check``) run on a small pool of their own, so that they answer
whatever holds the main pool. Sessions are bounded elsewhere (the session slots).
"""

from __future__ import annotations

import logging
import threading
import time
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
SWEEP_SECONDS = 0.25  # how often idle streams are looked for, at most


@dataclass(eq=False)
class _OpenStream:
    """One admitted stream: its call, what kind it is and when it last carried a message."""

    context: grpc.ServicerContext
    kind: str
    last: float = field(default_factory=time.monotonic)
    close: Callable[[], None] | None = None  # how to end it when idle (default: cancel the call)

    def touch(self) -> None:
        self.last = time.monotonic()


class StreamBudget(grpc.ServerInterceptor):
    """Admits at most ``max_streams`` reflection and health-watch streams at once, on threads of their own, and
    ends those idle for ``idle_timeout`` seconds (0: never); health checks get their own threads too."""

    def __init__(self, max_streams: int, idle_timeout: float) -> None:
        if max_streams < 1:
            raise ValueError(f"max-other-streams must be at least 1, got {max_streams}")
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        # One thread beyond the budget answers the calls it refuses; a watch holds none while it waits.
        self._pool = futures.ThreadPoolExecutor(max_streams + 1, thread_name_prefix="mpd-stream")
        self._check_pool = futures.ThreadPoolExecutor(HEALTH_CHECK_THREADS, thread_name_prefix="mpd-health")
        self._open: set[_OpenStream] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.refused = 0
        self.closed_idle = 0

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

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._open)

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

    def _admit(self, context: grpc.ServicerContext, kind: str) -> _OpenStream:
        """Register the stream, or end the call with RESOURCE_EXHAUSTED when the budget is spent."""
        stream = _OpenStream(context, kind)
        with self._lock:
            admitted = len(self._open) < self.max_streams
            if admitted:
                self._open.add(stream)
            else:
                self.refused += 1
        if not admitted:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"too many open reflection and health-watch streams ({self.max_streams}); close one or "
                          "retry later")
        if not context.add_callback(lambda: self._forget(stream)):
            self._forget(stream)  # the call ended already
        return stream

    def _forget(self, stream: _OpenStream) -> None:
        with self._lock:
            self._open.discard(stream)

    def _reflection_handler(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.stream_stream

        def behavior(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
            stream = self._admit(context, "reflection")

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
            stream = self._admit(context, "health watch")
            ended = threading.Lock()  # held once the stream is ended: gRPC must be told only once

            def send(response: object) -> None:
                """The servicer's sender (None ends the stream with OK), which the idle sweep uses too."""
                if response is None:
                    if ended.acquire(blocking=False):
                        send_response_callback(None)
                    return
                if ended.locked():
                    return
                stream.touch()
                send_response_callback(response)

            stream.close = lambda: send(None)
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
                log.debug("closing an idle %s stream of %s after %g s", stream.kind, stream.context.peer(),
                         self.idle_timeout)
                try:
                    (stream.close or stream.context.cancel)()
                except Exception as e:  # noqa: BLE001 - a call that ended meanwhile; never stop the sweeper
                    log.debug("closing an idle stream: %s", e)
