"""The daemon's errors, on one base, each with the gRPC status it ends a call with (PyAV's ``av.error`` is the
model: one module, one tree).

A :class:`DaemonError` that refuses or ends a session carries ``status`` and ``tag`` (the ``mpd-error``
trailing metadata that lets a client tell kinds apart, e.g. ``busy`` or ``frame-size``); the service turns
any of them into a :class:`SessionFailure` through :func:`failure_for`, the one place the mapping is read.
Errors that stop the daemon from starting (:class:`StartupError` and the ones it wraps) have no status: the
command prints them and exits.
"""

from __future__ import annotations

import grpc


class DaemonError(Exception):
    """Every error the daemon raises on purpose; ``status`` and ``tag`` say how a call that meets it ends."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    tag: str = ""


class StartupError(DaemonError, RuntimeError):
    """The daemon cannot start as configured; the message says why and what to change."""


class DeviceUnavailableError(StartupError):
    """The device asked for explicitly (``--device cuda``) is not there: an error, never a silent CPU fallback."""


class TokenFileError(DaemonError, ValueError):
    """A tokens file that cannot be read or has a malformed line."""


class ListenError(DaemonError, ValueError):
    """A listen address that cannot be used."""


class ConfigError(DaemonError, ValueError):
    """The session config cannot be served; the message says what is wrong, ``tag`` what kind of problem it is
    (sent as the call's ERROR_HEADER: FRAME_SIZE_ERROR lets a client tell bad input from a bad request)."""

    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, tag: str = "") -> None:
        super().__init__(message)
        self.tag = tag


class SessionLimitError(DaemonError, RuntimeError):
    """All session slots are taken (for everyone, or for this user): busy, retry later."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    tag = "busy"


class DrainingError(DaemonError, RuntimeError):
    """The daemon is shutting down and takes no new sessions."""

    status = grpc.StatusCode.UNAVAILABLE
    tag = "shutdown"


class MemoryBudgetError(DaemonError, RuntimeError):
    """A session's frames do not fit the memory budget: now (``busy``, retry later) or ever (``memory``)."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy
        self.tag = "busy" if busy else "memory"


class SchedulerClosedError(DaemonError, RuntimeError):
    """The scheduler was closed before this submission ran (the daemon is shutting down)."""

    status = grpc.StatusCode.UNAVAILABLE
    tag = "shutdown"


class SubmissionCancelledError(DaemonError, RuntimeError):
    """The session that made this submission was cancelled (its client went away): nobody to answer."""

    status = grpc.StatusCode.CANCELLED


class SessionFailure(DaemonError):
    """Ends a session with a gRPC status; ``tag`` goes into the ``mpd-error`` trailing metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, tag: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.status = code
        self.message = message
        self.tag = tag


def failure_for(error: DaemonError) -> SessionFailure:
    """The status, message and tag a call ends with for ``error``."""
    if isinstance(error, SessionFailure):
        return error
    return SessionFailure(error.status, str(error), error.tag)
