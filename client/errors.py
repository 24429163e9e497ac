"""The client's errors, on one base, and mpd-client's exit codes (a contract: mpd-watch decides from them whether
to retry).

Every error the client reports is a :class:`ClientError`; each class says its exit code once, here
(``exit_code``): the command line prints the message as one line and exits with it. The daemon's
refusals arrive as :class:`RemoteSessionError` with their gRPC status, which decides the code.

=====  =====================================================================
code   meaning
=====  =====================================================================
0      success
1      anything else (a bug, an unexpected failure)
2      usage error: bad flags or values, a missing input file, output == input
65     bad input data: corrupt or unsupported input (permanent: do not retry)
69     the daemon is unavailable or busy, or went away; or none and no engine installed (retry later)
73     the output file exists and may not be replaced (no -y, -n given, or the prompt said no)
74     I/O error on output: disk full, unwritable folder, reader closed the pipe
75     other temporary failure (retry later); SIGTERM or SIGHUP (a service manager stopping the job)
130    interrupted by its user (Ctrl-C, SIGINT): do not retry
=====  =====================================================================
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """Process exit codes of mpd-client (values follow BSD sysexits where one fits)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    DATA_ERROR = 65
    UNAVAILABLE = 69
    CANT_CREATE = 73
    OUTPUT_ERROR = 74
    TEMPORARY = 75
    INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


class ClientError(Exception):
    """An error mpd-client reports as one line on stderr before exiting with ``exit_code``."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(ClientError):
    """The command line asks for something impossible (bad value, missing file, conflicting flags)."""

    exit_code = ExitCode.USAGE


class InputDataError(ClientError):
    """The input is corrupt, truncated, not the expected format, or in an unsupported pixel format."""

    exit_code = ExitCode.DATA_ERROR


class OutputExistsError(ClientError):
    """The output file exists and replacing it was not allowed (ffmpeg's -y/-n convention)."""

    exit_code = ExitCode.CANT_CREATE


class OutputError(ClientError):
    """Writing the output failed: disk full, permission denied, or the reader closed the pipe."""

    exit_code = ExitCode.OUTPUT_ERROR


class TemporaryFailure(ClientError):
    """A failure that may go away if the same job is retried later."""

    exit_code = ExitCode.TEMPORARY


class EngineNotInstalledError(ClientError):
    """The work would run in this process, and this install has no engine (no torch): exit 69, as for a daemon
    that cannot be had, since a daemon is the other way out."""

    exit_code = ExitCode.UNAVAILABLE


class DeviceUnavailableError(ClientError):
    """The device asked for explicitly (``--device cuda``) is not there: exit 69, never a silent CPU fallback."""

    exit_code = ExitCode.UNAVAILABLE


class TargetError(UsageError):
    """A ``--server`` value that names no daemon; the message is one line."""


class DaemonUnavailableError(ClientError):
    """The daemon cannot be reached, is at its session limit, or went away mid-stream (transient): exit 69."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, message: str, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.code = code  # the gRPC status name, e.g. RESOURCE_EXHAUSTED for a daemon at its session limit


class RemoteSessionError(ClientError):
    """The daemon refused or failed this session: bad config or frame, wrong token, out of memory...

    The exit code follows the gRPC status: 2 for what this request asks wrongly (token, model, limits),
    65 for frames over the daemon's size limits, 75 for what may pass later (out of memory now), else 1.
    """

    USAGE_CODES: ClassVar[tuple[str, ...]] = ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "NOT_FOUND")
    TEMPORARY_CODES: ClassVar[tuple[str, ...]] = ("RESOURCE_EXHAUSTED", "ABORTED")

    def __init__(self, message: str, code: str = "UNKNOWN", tag: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.tag = tag  # the daemon's mpd-error kind, e.g. "memory": larger than its memory budget

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        from ..proto.wire import FRAME_SIZE_ERROR  # protobuf and numpy: loaded only once a daemon answered

        if self.tag == FRAME_SIZE_ERROR:
            return ExitCode.DATA_ERROR  # the input's frames are larger than the daemon serves: no retry helps
        if self.code in self.USAGE_CODES or self.tag == "memory":
            return ExitCode.USAGE  # wrong token, a model the daemon lacks, limits this request exceeds
        if self.code in self.TEMPORARY_CODES:
            return ExitCode.TEMPORARY  # e.g. out of GPU memory now; may work when the device is less busy
        return ExitCode.FAILURE


class ChunkFailed(ClientError):
    """A chunk of a ``--jobs`` job could not be done by any daemon within its retries (try again when daemons are
    back)."""

    exit_code = ExitCode.UNAVAILABLE


class WatchConfigError(UsageError):
    """An mpd-watch configuration that cannot work, with a message naming the bad setting."""


class FolderLostError(ClientError, OSError):
    """mpd-watch's input folder disappeared or was unmounted: the watcher must stop (and be restarted)."""
