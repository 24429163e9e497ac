"""Listen addresses: ``host:port`` (TCP) or ``unix:///path``; which of them stay on this machine."""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ListenError


@dataclass(frozen=True)
class ListenAddress:
    """One listener: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def is_loopback(self) -> bool:
        """Only this machine can connect (a unix socket, localhost, 127.0.0.0/8, ::1)."""
        if self.is_unix:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: whatever it resolves to may be reachable from elsewhere

    def grpc_target(self, port: int | None = None) -> str:
        """The address in gRPC's syntax (with ``port`` instead of ours, for an ephemeral port once bound)."""
        if self.is_unix:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port if port is None else port}"


def parse_listen(text: str) -> ListenAddress:
    """``127.0.0.1:50051``, ``[::1]:50051``, ``localhost:0``, ``unix:///run/mpd/mpd.sock``."""
    if text.startswith("unix:"):
        raw = text[len("unix:"):]
        path = raw[2:] if raw.startswith("//") else raw
        if not path.startswith("/"):
            raise ListenError(f"unix socket path must be absolute: {text!r} (write unix:///abs/path)")
        return ListenAddress(path=Path(path))
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ListenError(f"listen address must be HOST:PORT or unix:///path, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        number = int(port)
    except ValueError:
        raise ListenError(f"port must be a number in {text!r}") from None
    if not 0 <= number <= 65535:
        raise ListenError(f"port out of range in {text!r}")
    return ListenAddress(host=host, port=number)


def prepare_unix_socket(path: Path) -> None:
    """Remove a stale socket file left by a daemon that died; refuse if one is still listening there."""
    if not os.path.lexists(path):
        if not path.parent.is_dir():
            raise ListenError(f"directory of unix socket {path} does not exist")
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise ListenError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
        return
    finally:
        probe.close()
    raise ListenError(f"another process is listening on {path}")
