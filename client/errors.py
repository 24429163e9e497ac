"""mpd-client's exit codes (a contract: mpd-watch decides from them whether to retry) and the errors behind them.

The daemon client library's own errors (client/remote/session.py) map to 69 (DaemonUnavailableError) and,
by gRPC status, to 2, 75 or 1 (RemoteSessionError): see ``engines.remote_exit_code``.

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
