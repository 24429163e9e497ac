"""systemd socket activation: take over the listening sockets systemd passes in (``LISTEN_FDS``).

gRPC Python cannot serve on a socket it did not bind, so each inherited socket gets a relay: it
accepts connections there and copies bytes both ways to the gRPC server's own unix socket in a
private directory. Blocking copies keep gRPC's flow control (a slow reader stalls its writer).
systemd keeps owning the socket: clients may connect while the models load and across restarts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
CHUNK = 1 << 20
ACCEPT_POLL_SECONDS = 0.5


def inherited_sockets(environ: Mapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets passed to this process by its service manager (none when not activated)."""
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    if environ is None:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    return sockets


def describe(sock: socket.socket) -> str:
    """``unix:///path`` or ``host:port`` of a listening socket."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix://{name.decode() if isinstance(name, bytes) else name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_local(sock: socket.socket) -> bool:
    """True for unix sockets and TCP sockets bound to a loopback address."""
    if sock.family == socket.AF_UNIX:
        return True
    try:
        return ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    except ValueError:
        return False


class SocketRelay:
    """Accepts on an inherited listening socket and relays every connection to ``target`` (a unix socket path)."""

    def __init__(self, listener: socket.socket, target: Path) -> None:
        self.listener = listener
        self.target = str(target)
        self.address = describe(listener)
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="mpd-relay", daemon=True)

    def start(self) -> SocketRelay:
        self.listener.settimeout(ACCEPT_POLL_SECONDS)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting (systemd keeps its socket) and cut the connections still open."""
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        with self._lock:
            for conn in list(self._connections):
                _close(conn)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as e:
                if not self._stop.is_set():
                    log.error("relay on %s stopped accepting: %s", self.address, e)
                return
            client.settimeout(None)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError as e:
                log.error("relay on %s cannot reach the gRPC server: %s", self.address, e)
                _close(client)
                _close(upstream)
                continue
            with self._lock:
                self._connections.update((client, upstream))
            remaining = [2]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, client, upstream, remaining),
                                 name="mpd-relay-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, client: socket.socket, upstream: socket.socket,
              remaining: list[int]) -> None:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while (n := src.recv_into(buf)) > 0:
                dst.sendall(view[:n])
        except OSError:
            pass
        finally:
            # HTTP/2 has no half-closed connections: when one side goes, end both directions.
            for conn in (client, upstream):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    for conn in (client, upstream):
                        self._connections.discard(conn)
                        _close(conn)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def private_socket_path() -> Path:
    """A unix socket path in a fresh directory only this user can enter (the relays' upstream)."""
    return Path(tempfile.mkdtemp(prefix="mpd-daemon-")) / "grpc.sock"
