"""Stop signals, handled one way by all three commands (``mpd-daemon``, ``mpd-client``, ``mpd-watch``).

The first stop signal asks for a graceful stop: the daemon drains its sessions, the watcher hands
its jobs back to the queue, the client removes its partial output. A second one asks to stop now,
as uvicorn does: the daemon then cancels the sessions it was waiting for instead of letting them
run to ``--drain-timeout``. What each command does is its ``on_signal`` callback and its reading of
the two events; counting the signals and installing the handlers is done here.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

#: What the daemon and the watcher stop on; mpd-client stops on SIGTERM and SIGHUP (Ctrl-C is its KeyboardInterrupt).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: Called in the main thread with the signal's name and whether it is a second (or later) one; may raise.
SignalCallback = Callable[[str, bool], None]


class StopSignals:
    """The stop signals a process received: ``requested`` is set by the first, ``urgent`` by any later one."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.urgent = threading.Event()
        self.received: list[str] = []
        self._on_signal: SignalCallback | None = None

    def install(self, signals: Iterable[signal.Signals] = STOP_SIGNALS,
                on_signal: SignalCallback | None = None) -> StopSignals:
        """Handle ``signals`` from now on (call from the main thread); returns self. They are unblocked too
        (``accept_signals``)."""
        self._on_signal = on_signal
        signals = tuple(signals)
        for sig in signals:
            signal.signal(sig, self._handle)
        accept_signals(signals)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        again = self.requested.is_set()
        self.received.append(name)
        (self.urgent if again else self.requested).set()
        if self._on_signal is not None:
            self._on_signal(name, again)


def accept_signals(signals: Iterable[signal.Signals]) -> None:
    """Unblock ``signals`` in this thread. A process inherits its parent's blocked signals across exec: a command
    started by a parent that had SIGTERM or SIGINT blocked would otherwise leave them pending for ever, so
    that a stop request or the user's Ctrl-C did nothing and the job ran to its end."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(signals))


#: What ``signals_deferred`` holds back by default: every signal a command stops on.
DEFERRABLE_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@contextmanager
def signals_deferred(signals: Iterable[signal.Signals] = DEFERRABLE_SIGNALS) -> Iterator[None]:
    """Hold ``signals`` back (in this thread) while native code runs that calls into Python, then deliver them.

    A handler that raises (mpd-client's does, to unwind and remove its partial output) must not run while a
    C++ extension is executing Python code on its own behalf, as torch does while it is imported and while a
    model loads: the exception would cross C++ frames and abort the process ("terminate called after throwing
    pybind11::error_already_set") instead of exiting with the command's code. Blocked signals stay pending and
    are handled at the first Python instruction after the block. Threads started inside the block inherit the
    mask, so the kernel hands later signals to the main thread, where Python runs its handlers anyway.
    """
    held = set(signals)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
