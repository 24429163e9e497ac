"""Start a command with process settings applied between fork and exec, without ``preexec_fn``.

``subprocess``'s ``preexec_fn`` forces a plain fork of the test process, which runs the fork handlers of
whatever that process loaded: gRPC's (an in-process daemon of an earlier test) restart its poller in the child,
whose epoll descriptor ``close_fds`` then closes, and the child aborts before it reaches exec. Here a fresh
interpreter applies the settings and execs the command instead."""

from __future__ import annotations

import json
import signal
import sys

LAUNCHER = """
import fcntl, json, os, resource, signal, sys, termios
settings = json.loads(sys.argv[1])
if settings["controlling_terminal"]:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
if settings["blocked"]:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.Signals(s) for s in settings["blocked"]})
if settings["address_space"]:
    resource.setrlimit(resource.RLIMIT_AS, (settings["address_space"],) * 2)
os.execv(sys.argv[2], sys.argv[2:])
"""


def launched(command: list[str], *, controlling_terminal: bool = False, blocked: tuple[signal.Signals, ...] = (),
             address_space: int | None = None) -> list[str]:
    """``command`` run through the launcher: stdin made its controlling terminal (start it with
    ``start_new_session=True``), ``blocked`` signals blocked, its address space limited to ``address_space`` bytes.
    ``command[0]`` must be a path (``helpers.commands.script`` gives one)."""
    settings = {"controlling_terminal": controlling_terminal, "blocked": [int(s) for s in blocked],
                "address_space": address_space}
    return [sys.executable, "-c", LAUNCHER, json.dumps(settings), *command]
