"""What an mpd-client exit code means for a job: done, give up, retry for free, or retry using an attempt."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import Enum

from ..errors import ExitCode


class OutcomeKind(str, Enum):
    """How the watcher reacts to one client run."""

    SUCCESS = "success"
    PERMANENT = "permanent"   # retrying cannot help: the source goes to failed/
    TRANSIENT = "transient"   # not the file's fault: retry with backoff, no attempt used
    ATTEMPT = "attempt"       # unknown failure: retry while attempts remain


@dataclass(frozen=True)
class ClientOutcome:
    """One client run, classified, with a one-line explanation."""

    kind: OutcomeKind
    exit_code: int
    meaning: str
    loud: bool = False        # worth an error-level log line even though it will be retried


def classify_exit(code: int) -> ClientOutcome:
    """Map an mpd-client exit code (negative: killed by that signal) to what the watcher does next."""
    if code == ExitCode.OK:
        return ClientOutcome(OutcomeKind.SUCCESS, code, "done")
    if code == ExitCode.DATA_ERROR:
        return ClientOutcome(OutcomeKind.PERMANENT, code, "bad input: the file is corrupt or its format is unsupported")
    if code == ExitCode.USAGE:
        return ClientOutcome(OutcomeKind.PERMANENT, code, "usage error: the folder's client options are invalid")
    if code == ExitCode.UNAVAILABLE:
        return ClientOutcome(OutcomeKind.TRANSIENT, code, "daemon unavailable or busy")
    if code == ExitCode.OUTPUT_ERROR:
        return ClientOutcome(OutcomeKind.TRANSIENT, code, "I/O error writing the output (disk full?)", loud=True)
    if code == ExitCode.TEMPORARY:
        return ClientOutcome(OutcomeKind.TRANSIENT, code, "temporary failure")
    if code == ExitCode.INTERRUPTED:
        return ClientOutcome(OutcomeKind.ATTEMPT, code, "client interrupted (SIGINT)")
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return ClientOutcome(OutcomeKind.ATTEMPT, code, f"client killed by {name}")
    return ClientOutcome(OutcomeKind.ATTEMPT, code, f"client failed (exit {code})")
