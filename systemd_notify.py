"""The systemd notification protocol (``sd_notify``: READY, STATUS, WATCHDOG, STOPPING) over ``$NOTIFY_SOCKET``.

Shared by ``mpd-daemon`` and ``mpd-watch`` (both run as ``Type=notify`` services), written with a
plain datagram socket so that neither needs libsystemd or an extra package. Outside systemd (no
``$NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def sd_notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to the service manager; False when not run under one or it cannot be sent.

    Notifications are advisory, so a failed send is reported by the return value, never raised.
    """
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_timeout(environ: Mapping[str, str] | None = None) -> float | None:
    """``WatchdogSec=`` in seconds (``$WATCHDOG_USEC``): how long systemd waits for a ping; None when unwatched.

    None as well when ``$WATCHDOG_PID`` names another process (the variables were inherited, not meant for us).
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


class SystemdNotifier:
    """A service's notifications to systemd: readiness, a status line, watchdog pings, the start of its stop.

    ``ping_interval`` is half the watchdog timeout, as sd_watchdog_enabled(3) recommends: a ping
    delayed by up to one interval still arrives in time.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self.watchdog_timeout = watchdog_timeout(self._environ)
        self.ping_interval = self.watchdog_timeout / 2 if self.watchdog_timeout is not None else None
        self._last_ping: float | None = None

    @property
    def enabled(self) -> bool:
        """True when run by a service manager that listens (``$NOTIFY_SOCKET`` is set)."""
        return bool(self._environ.get("NOTIFY_SOCKET"))

    def send(self, state: str) -> bool:
        """Send one notification; False when it could not be (notifications are advisory)."""
        return sd_notify(state, self._environ)

    def ready(self, status: str) -> None:
        """Startup is complete; ``status`` is the first line ``systemctl status`` shows."""
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """A one-line status for ``systemctl status``."""
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Shutdown has begun (systemd then stops expecting watchdog pings)."""
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Keep-alive ping, sent at most once per ``ping_interval`` however often it is called; nothing when unwatched.

        Call it only while the service is healthy: withholding it is how a hung service gets restarted.
        """
        if self.ping_interval is None:
            return
        now = time.monotonic()
        if self._last_ping is None or now - self._last_ping >= self.ping_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
