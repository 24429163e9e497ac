"""Requests whose bytes are not the message their method takes: ``INVALID_ARGUMENT``, one log line at most.

gRPC Python decodes a request before the handler runs; when the bytes do not decode it logs an ERROR
with a traceback and ends the call ``INTERNAL``, for every such call: anyone who can connect could fill
the journal. ``UndecodableRequests`` (a server interceptor) decodes them itself: a request that does not
decode ends its call with ``INVALID_ARGUMENT`` (or, a session's message, ends that session so), and the
log gets one warning line per minute at most, counting the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

import grpc

from .sessions import SessionFailure

log = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 60.0
INTERPOLATE = "/multipassdedup.v1.MultiPassDedup/Interpolate"  # its messages are read by the session's own threads


class Undecodable:
    """Stands for a request that did not decode; ``expected`` names the message it should have been."""

    def __init__(self, expected: str) -> None:
        self.expected = expected


class RateLimitedWarning:
    """Logs one warning line per ``every`` seconds at most; the next one says how many were left out meanwhile."""

    def __init__(self, logger: logging.Logger, every: float = WARN_EVERY_SECONDS) -> None:
        self.logger = logger
        self.every = every
        self.left_out = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def warn(self, message: str, *args: object) -> bool:
        """Log ``message % args`` unless a line went out less than ``every`` s ago; True when it was logged."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last < self.every:
                self.left_out += 1
                return False
            left_out, self.left_out, self._last = self.left_out, 0, now
        suffix = f" ({left_out} more since the last such line)" if left_out else ""
        self.logger.warning(message + "%s", *args, suffix)
        return True


class UndecodableRequests(grpc.ServerInterceptor):
    """Decodes every request itself, so that bytes that are not its method's message end that call only."""

    def __init__(self) -> None:
        self.refused = 0
        self.warning = RateLimitedWarning(log)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method or ""
        decode = _tolerant(handler.request_deserializer)
        kind = ("stream_stream" if handler.response_streaming else "stream_unary") if handler.request_streaming \
            else ("unary_stream" if handler.response_streaming else "unary_unary")
        behavior = getattr(handler, kind)
        guarded = self._guard_stream(behavior, method) if handler.request_streaming \
            else self._guard_unary(behavior, method)
        for attribute in ("experimental_non_blocking", "experimental_thread_pool"):
            if hasattr(behavior, attribute):
                setattr(guarded, attribute, getattr(behavior, attribute))
        return handler._replace(request_deserializer=decode, **{kind: guarded})

    def _guard_unary(self, behavior: Callable, method: str) -> Callable:
        def guarded(request: object, context: grpc.ServicerContext, *rest: object) -> object:
            if isinstance(request, Undecodable):
                self._refuse(context, method, request)
            return behavior(request, context, *rest)

        return guarded

    def _guard_stream(self, behavior: Callable, method: str) -> Callable:
        def guarded(requests: Iterator, context: grpc.ServicerContext, *rest: object) -> object:
            return behavior(self._checked(requests, context, method), context, *rest)

        return guarded

    def _checked(self, requests: Iterator, context: grpc.ServicerContext, method: str) -> Iterator:
        for n, request in enumerate(requests, 1):
            if isinstance(request, Undecodable):
                if method == INTERPOLATE:  # read on a session's thread: the session ends with this status
                    self._note(context, method, request)
                    raise SessionFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                         f"message {n} is not a {request.expected} message")
                self._refuse(context, method, request)
            yield request

    def _note(self, context: grpc.ServicerContext, method: str, request: Undecodable) -> None:
        self.refused += 1
        self.warning.warn("refused a request to %s from %s: its bytes are not a %s message", method,
                          context.peer(), request.expected)

    def _refuse(self, context: grpc.ServicerContext, method: str, request: Undecodable) -> NoReturn:
        self._note(context, method, request)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"the request to {method} is not a {request.expected} message")


def _tolerant(decode: Callable[[bytes], object]) -> Callable[[bytes], object]:
    """``decode``, returning ``Undecodable`` instead of raising."""
    message_type = getattr(decode, "__self__", None)  # ``SomeMessage.FromString``: the message it decodes
    descriptor = getattr(message_type, "DESCRIPTOR", None)
    expected = getattr(descriptor, "full_name", "valid request")

    def tolerant(data: bytes) -> object:
        try:
            return decode(data)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and whatever a decoder raises on bad bytes
            return Undecodable(expected)

    return tolerant
