"""Client subprocesses that die with the watcher, and cleanup of ones left over by a crash."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a live `pid` (tells a leftover client from a process reusing its pid).

    None when there is no such process or it is a zombie (dead, waiting to be reaped).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def kill_leftover(pid: int | None, start_time: str | None, wait_seconds: float = 10.0) -> bool:
    """Kill a client process group recorded in the journal if that very process still runs; True if it did."""
    if not pid or not start_time or process_start_time(pid) != start_time:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_seconds
    while process_start_time(pid) == start_time and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


# Runs in the child, in a fresh interpreter, before it execs the client: the kernel is to SIGKILL the client when
# the watcher dies (Linux; elsewhere the client just runs). Not a ``preexec_fn``: that forks the watcher as it is,
# gRPC included (it probed the daemons), and gRPC's fork handlers restart its poller in the child, whose epoll
# descriptor ``close_fds`` then closes: the child aborts before it reaches exec.
_DIE_WITH_THE_WATCHER = """
import ctypes, os, signal, sys
try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    prctl = None
if prctl is not None:
    prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG; kept across exec
    if os.getppid() != int(sys.argv[1]):  # the watcher died before this ran
        os._exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def dying_with_this_process(argv: list[str]) -> list[str]:
    """``argv`` started so that the kernel kills it when this process dies (Linux only)."""
    return [sys.executable, "-c", _DIE_WITH_THE_WATCHER, str(os.getpid()), *argv]


class ClientProcess:
    """One run of the client: own process group, output to a log file, killed with the watcher."""

    def __init__(self, argv: list[str], log_path: Path, terminate_grace: float = 10.0) -> None:
        self.argv = argv
        self.log_path = log_path
        self.terminate_grace = terminate_grace
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> tuple[int, str | None]:
        """Start the client; returns its pid and kernel start time (for the journal)."""
        if shutil.which(self.argv[0]) is None:  # as Popen itself would say, before anything runs
            raise FileNotFoundError(errno.ENOENT, "no such executable", self.argv[0])
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                dying_with_this_process(self.argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True)
        return self._proc.pid, process_start_time(self._proc.pid)

    def wait(self, stop: threading.Event, poll_seconds: float = 0.2) -> int | None:
        """Wait for the exit code; if `stop` is set first, terminate the client and return None."""
        assert self._proc is not None
        while True:
            try:
                return self._proc.wait(timeout=poll_seconds)
            except subprocess.TimeoutExpired:
                if stop.is_set():
                    self.terminate()
                    return None

    def terminate(self) -> None:
        """SIGTERM the client's process group, SIGKILL it after the grace time."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=self.terminate_grace)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        except ProcessLookupError:
            self._proc.wait()


def client_options_problem(argv: list[str], timeout: float = 120.0) -> str | None:
    """Run ``argv`` (an mpd-client command line ending in ``--check-options``): None when it accepts its options,
    else its reason, the last line it wrote (``mpd-client: error: unrecognized arguments: --crff 22``)."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except OSError as e:
        return f"cannot run {argv[0]}: {e.strerror or e}"
    except subprocess.TimeoutExpired:
        return f"{argv[0]} did not check its options within {timeout:g} s"
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"
