"""systemd notifications (READY, STATUS, WATCHDOG, STOPPING) over $NOTIFY_SOCKET, without extra packages."""

from __future__ import annotations

import os
import socket
import time


class SystemdNotifier:
    """Sends sd_notify messages when run by systemd; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        wanted = watchdog_usec.isdigit() and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        self.watchdog_interval = int(watchdog_usec) / 2e6 if wanted else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        """True when a notify socket was given."""
        return bool(self._address)

    def send(self, message: str) -> None:
        """Send one notification (errors are ignored: notifications are advisory)."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError:
            pass

    def ready(self, status: str) -> None:
        """Startup is complete."""
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """A one-line status for `systemctl status`."""
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Keep-alive ping, sent at most every half watchdog interval."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
