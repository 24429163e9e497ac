"""A daemon as the tests drive it: reference runs, raw protocol sessions, status, ``mpd-daemon`` as a process.

In-process daemons (``DaemonServer``) are started by the tests' own fixtures; this module holds what talks to
them and what runs the real command: ``DaemonProcess`` (stderr collected line by line), ``NotifyListener``
(systemd's notify socket), ``clean_env`` and ``make_certificate``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.frames import FILM, H, W
from helpers.waiting import wait_until
from multipassdedup.client.remote.session import RemoteEngine, call_metadata, open_channel
from multipassdedup.core import MultiPassDedup
from multipassdedup.proto import mpd_pb2, mpd_pb2_grpc

DAEMON = str(Path(sys.executable).with_name("mpd-daemon"))


def run_local(model, frames: Iterable[np.ndarray], **kw) -> list[np.ndarray]:
    """The in-process engine's output, with the daemon's defaults (delay compensation on)."""
    kw = {"n_pass": 3, "src_fps": FILM, "dst_fps": 60, "compensate_delay": True} | kw
    pipe = MultiPassDedup(model, **kw)
    out = []
    for f in frames:
        out += pipe.push(f)
    return out + pipe.flush()


def run_remote(address: str, frames: Iterable[np.ndarray], **kw) -> tuple[list[np.ndarray], RemoteEngine]:
    """The daemon's output for ``frames`` through ``RemoteEngine`` (3 passes, 23.976 -> 60 fps unless ``kw``
    says otherwise), and the engine, for its statistics."""
    kw = {"n_pass": 3, "src_fps": FILM, "dst_fps": 60} | kw
    engine = RemoteEngine(address, **kw)
    out = []
    for f in frames:
        out += engine.push(f)
    return out + engine.flush(), engine


def config(**fields) -> mpd_pb2.SessionConfig:
    """A valid 128x64 rgb24 config unless ``fields`` say otherwise (a field given as None is left unset)."""
    base = dict(model="rife", n_pass=3, src_fps=mpd_pb2.Rational(num=24000, den=1001),
                dst_fps=mpd_pb2.Rational(num=60, den=1), width=W, height=H, pixel_format=mpd_pb2.RGB24)
    base.update(fields)
    return mpd_pb2.SessionConfig(**{k: v for k, v in base.items() if v is not None})


def messages(cfg: mpd_pb2.SessionConfig | None, frames: Iterable[bytes]) -> Iterable[mpd_pb2.ClientMessage]:
    """The client's side of one session: the config (unless None), then one message per frame."""
    if cfg is not None:
        yield mpd_pb2.ClientMessage(config=cfg)
    for data in frames:
        yield mpd_pb2.ClientMessage(frame=mpd_pb2.InputFrame(data=data))


def raw_session(address: str, requests: Iterable[mpd_pb2.ClientMessage], token: str | None = None,
                root_cert: bytes | None = None) -> tuple[list[mpd_pb2.ServerMessage], grpc.RpcError | None]:
    """Every reply of one Interpolate call, and the error it ended with (None if it ended OK)."""
    channel = open_channel(address, root_cert)
    replies: list[mpd_pb2.ServerMessage] = []
    try:
        call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(iter(requests), metadata=call_metadata(token),
                                                                    timeout=120)
        for reply in call:
            replies.append(reply)
    except grpc.RpcError as err:
        return replies, err
    finally:
        channel.close()
    return replies, None


def status(address: str, token: str | None = None) -> mpd_pb2.StatusResponse:
    """The daemon's answer to a Status call."""
    channel = open_channel(address)
    try:
        return mpd_pb2_grpc.MultiPassDedupStub(channel).Status(mpd_pb2.StatusRequest(), metadata=call_metadata(token),
                                                               timeout=10)
    finally:
        channel.close()


def stream_until(stop: threading.Event, address: str, clip: list[np.ndarray], errors: list[Exception],
                 token: str | None = None, **kw) -> None:
    """One client's session pushing ``clip`` over and over until ``stop`` is set (for a thread); errors collected."""
    try:
        engine = RemoteEngine(address, token=token, **({"n_pass": 2, "src_fps": FILM, "dst_fps": 60} | kw))
        i = 0
        while not stop.is_set():
            engine.push(clip[i % len(clip)])
            i += 1
        engine.close()
    except Exception as e:  # noqa: BLE001 - the test checks them
        errors.append(e)

def health_check(address: str, timeout: float = 1.0) -> int:
    """The status (``HealthCheckResponse.SERVING``, ...) of one standard gRPC health check of the whole server."""
    channel = open_channel(address)
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
    finally:
        channel.close()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key: (cert.pem, key.pem) in ``directory``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what systemd or a user would set for a daemon, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "MPD_TOKEN")}
    env.update(extra)
    return env


class DaemonProcess:
    """``mpd-daemon`` in a subprocess, its stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, launcher: list[str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        # fp32, the exact mode, unless a test asks otherwise: outputs are compared with the in-process fp32 engine's.
        exact = [] if "--precision" in args else ["--precision", "fp32"]
        cmd = (launcher or []) + [DAEMON, "--device", "cpu", "--models", "rife", *exact] + args
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, pass_fds=pass_fds)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def address(self, timeout: float = 180) -> list[str]:
        """The addresses the daemon says it listens on, once it says so (the test fails if it exits first)."""
        assert wait_until(lambda: "listening on" in self.log or self.proc.poll() is not None, timeout), self.log
        match = re.search(r"listening on (\S+(?: \S+)*?) \(max", self.log)
        assert match, self.log
        return match.group(1).split()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class NotifyListener:
    """A datagram socket standing in for systemd's ``$NOTIFY_SOCKET``; collects what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def count(self, text: str) -> int:
        """How many of the messages received so far contain ``text``."""
        return sum(text in m for m in list(self.messages))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def own_connection(address: str) -> grpc.Channel:
    """A channel with a connection of its own (gRPC otherwise shares one between channels to the same target)."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def watch(channel: grpc.Channel) -> tuple[object, int]:
    """A health watch and its first status (read before the caller opens another: watches are admitted in order)."""
    call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
    return call, next(call).status
