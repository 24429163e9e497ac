"""The daemon's client library: ``RemoteEngine`` streams frames through a daemon session like MultiPassDedup in-process.

``push(frame) -> [frames]`` / ``flush() -> [frames]`` / ``out_fps`` / ``stats`` behave as the
engine's do (the same frames overall, though a push may return frames a little later). Errors:
``DaemonUnavailableError`` when the daemon cannot be reached, is busy, goes away, or stops answering
(nothing within ``start_timeout`` for the session to start, nothing within ``stall_timeout`` while
the client waits for it: try again or run in-process), ``RemoteSessionError`` when it refuses or
fails this session (the same request would fail again), and ``SettingsError`` (a ValueError) for
settings that cannot work, as the engine raises them, before anything is sent.
"""

from __future__ import annotations

import getpass
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ...proto import mpd_pb2, mpd_pb2_grpc
from ...proto.wire import (
    AUTH_HEADER,
    ERROR_HEADER,
    USER_HEADER,
    PixelFormat,
    SessionSettings,
    fraction,
    session_config,
)
from ...settings import DEFAULT_DST_FPS, EngineSettings
from ..errors import DaemonUnavailableError, RemoteSessionError, TargetError
from .channel import open_session_channel

SEND_AHEAD = 2  # frames queued for sending beyond the one in transit
POLL_SECONDS = 0.1
READER_EXIT_SECONDS = 5.0  # how long closing waits for the reader thread to end
# A daemon that accepted the call but sends no SessionStart within this is not answering (its threads are all
# taken, or it hangs): the session's start is a table lookup and a memory reservation, well under a second.
START_TIMEOUT = 30.0
# While the client waits for the daemon (an acknowledgement, an output frame, the summary), this long without
# any message means the daemon holds the stream without working on it. Generous: one model call on a slow
# device, behind other users' batches, stays well below it.
STALL_TIMEOUT = 300.0
_END = object()






@dataclass
class RemoteStats:
    """The session's counters (the daemon's summary once the stream has ended)."""

    frames_in: int = 0
    frames_out: int = 0
    model_calls: int = 0
    duplicate_skips: int = 0
    scene_changes: int = 0
    seconds: float = 0.0

    def snapshot(self) -> dict:
        return dict(self.__dict__)


def read_root_cert(root_cert: bytes | str | Path | None) -> bytes | None:
    """The TLS root certificate's bytes (``root_cert`` given as bytes, or a file to read); None for none."""
    if not isinstance(root_cert, (str, Path)):
        return root_cert
    try:
        return Path(root_cert).read_bytes()
    except OSError as e:
        raise RemoteSessionError(f"cannot read TLS root certificate {root_cert}: {e.strerror}",
                                 "INVALID_ARGUMENT") from None


def open_channel(address: str, root_cert: bytes | str | Path | None = None, tls: bool = False) -> grpc.Channel:
    """A channel to ``host:port``, ``unix:///path`` or a fleet (channel.py); TLS when ``root_cert`` or ``tls``."""
    root_cert = read_root_cert(root_cert)
    try:
        return open_session_channel(address, root_cert, tls)
    except TargetError as e:
        raise RemoteSessionError(str(e), "INVALID_ARGUMENT") from None


def call_metadata(token: str | None, user: str | None = None) -> tuple[tuple[str, str], ...]:
    """Bearer token (when given) and the declared user name the daemon shares the device by."""
    md = [(USER_HEADER, user or _login_name())]
    if token:
        md.append((AUTH_HEADER, f"Bearer {token}"))
    return tuple(md)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def daemon_status(address: str, token: str | None = None, root_cert: bytes | str | Path | None = None,
                  timeout: float = 5.0) -> mpd_pb2.StatusResponse:
    """The daemon's ``Status``: sessions, memory budget, queue; DaemonUnavailableError when it does not answer."""
    channel = open_channel(address, root_cert)
    try:
        return mpd_pb2_grpc.MultiPassDedupStub(channel).Status(mpd_pb2.StatusRequest(), timeout=timeout,
                                                                metadata=call_metadata(token))
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DaemonUnavailableError(f"daemon at {address} did not answer within {timeout:g} s",
                                         "DEADLINE_EXCEEDED") from None
        raise error_from_rpc(err, address) from None
    finally:
        channel.close()


class Health(Enum):
    """What a health check at an address found."""

    SERVING = "serving"  # a daemon taking sessions
    NOT_SERVING = "not serving"  # a daemon that answers but takes no session: draining, or still starting
    SILENT = "silent"  # something accepted the connection but did not answer in time
    ABSENT = "absent"  # nothing listens there (or the address cannot be used)


def health(address: str, timeout: float = 0.5, root_cert: bytes | str | Path | None = None) -> Health:
    """A ``grpc.health.v1`` check of the whole server at ``address``, answered within ``timeout`` seconds or not."""
    try:
        channel = open_channel(address, root_cert)
    except RemoteSessionError:
        return Health.ABSENT
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.RpcError as err:
        return Health.SILENT if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED else Health.ABSENT
    finally:
        channel.close()
    return Health.SERVING if reply.status == health_pb2.HealthCheckResponse.SERVING else Health.NOT_SERVING


def probe(address: str, timeout: float = 0.5, root_cert: bytes | str | Path | None = None) -> bool:
    """True when a daemon answers a health check at ``address`` with SERVING within ``timeout`` seconds."""
    return health(address, timeout, root_cert) is Health.SERVING


def error_from_rpc(err: grpc.RpcError, address: str) -> Exception:
    """The library's error for a failed call: unavailable/busy/gone, or a refusal of this session."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else "") or code.name
    trailing = dict(err.trailing_metadata() or ()) if hasattr(err, "trailing_metadata") else {}
    tag = trailing.get(ERROR_HEADER, "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return DaemonUnavailableError(f"daemon at {address} unavailable: {_one_line(details)}", code.name)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and tag == "busy":
        return DaemonUnavailableError(f"daemon at {address} is busy: {_one_line(details)}", code.name)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return DaemonUnavailableError(f"daemon at {address} ended the session: {_one_line(details)}", code.name)
    return RemoteSessionError(f"daemon at {address}: {code.name}: {_one_line(details)}", code.name, tag)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def wait_until_connected(channel: grpc.Channel, timeout: float) -> str | None:
    """Connect ``channel``: None once it is ready, else why not -- ``"failed"`` as soon as every address it has
    failed to connect (nothing listens, TLS refused, or no daemon there reports serving), ``"silent"`` when
    something accepted the connection but nothing answered within ``timeout`` seconds."""
    states: queue.Queue = queue.Queue()
    watch = states.put
    channel.subscribe(watch, try_to_connect=True)
    failure = "silent"
    try:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                state = states.get(timeout=left)
            except queue.Empty:
                break
            if state == grpc.ChannelConnectivity.READY:
                failure = None
                break
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                failure = "failed"
                break
    finally:
        channel.unsubscribe(watch)
        _let_the_poller_stop(channel)  # also when connected: a client may end (and close the channel) at once
    return failure


def _let_the_poller_stop(channel: grpc.Channel) -> None:
    """Wait (at most 0.5 s) for gRPC's connectivity-polling thread to notice it has no subscriber left: it checks
    every 0.2 s, and a channel closed (or a process ending) before then makes it raise "Channel closed!" in its
    thread or abort in epoll. (``polling`` is grpcio's own flag; without it, wait 0.3 s.)"""
    state = getattr(channel, "_connectivity_state", None)
    if state is None or not hasattr(state, "polling"):
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 0.5
    while state.polling and time.monotonic() < deadline:
        time.sleep(0.02)


class RemoteEngine:
    """A MultiPassDedup session on a daemon. The session opens at the first frame (it fixes size and depth).

    At most ``frames_in_flight`` (announced by the daemon) input frames are sent ahead of the
    daemon's acknowledgements, so neither side buffers a stream that outruns the device.
    """

    def __init__(self, address: str, settings: EngineSettings | None = None, *, token: str | None = None,
                 root_cert: bytes | str | Path | None = None, user: str | None = None,
                 connect_timeout: float = 5.0, start_timeout: float = START_TIMEOUT,
                 stall_timeout: float = STALL_TIMEOUT, channel: grpc.Channel | None = None,
                 **engine: Any) -> None:
        """A session for ``settings`` (the commands' resolved settings, ``src_fps`` known), or for the engine's
        keywords in ``engine`` (``model``, ``n_pass``, ``src_fps``, ``dst_fps`` (60 unless ``times``), ...: those of
        ``EngineSettings.from_keywords``, with its defaults, the commands'); SettingsError when they cannot work."""
        self.address = address  # ``channel``: a fleet channel shared by several sessions (it stays open)
        self.start_timeout = start_timeout
        self.stall_timeout = stall_timeout
        if settings is None:
            engine.setdefault("src_fps", Fraction(24000, 1001))
            engine.setdefault("dst_fps", DEFAULT_DST_FPS)
            settings = EngineSettings.from_keywords(**engine)
        elif engine:
            raise TypeError(f"give settings or the engine's keywords, not both ({', '.join(sorted(engine))})")
        self.settings = settings
        self.src_fps = self.settings.require_source()
        self.out_fps = self.settings.out_fps
        self.n_pass = self.settings.n_pass
        self.adaptive = self.settings.adaptive  # then as the daemon announced it
        self.config: mpd_pb2.SessionConfig | None = None  # sent when the first frame fixes size and depth
        self.stats = RemoteStats()
        self.session_id = ""
        self.start: mpd_pb2.SessionStart | None = None  # what the daemon announced: limits, device, user
        self.peak_in_flight = 0
        self._metadata = call_metadata(token, user)
        self._channel = channel or open_channel(address, root_cert)
        self._own_channel = channel is None
        failure = wait_until_connected(self._channel, connect_timeout)
        if failure is not None:
            if self._own_channel:
                self._channel.close()
            why = f"nothing answered within {connect_timeout:g} s" if failure == "silent" else "connection failed"
            raise DaemonUnavailableError(f"cannot connect to the daemon at {address} ({why})")
        self._stub = mpd_pb2_grpc.MultiPassDedupStub(self._channel)
        self._send: queue.Queue = queue.Queue(maxsize=SEND_AHEAD)
        self._received: queue.Queue = queue.Queue()
        self._abandoned = threading.Event()  # stops the request generator gRPC's sender thread runs
        self._call = None
        self._reader: threading.Thread | None = None
        self._ready: list[np.ndarray] = []
        self._sent = 0
        self._acked = 0
        self._window = 1
        self._ended = False
        self._error: Exception | None = None
        self._summary: mpd_pb2.SessionSummary | None = None
        self._shape: tuple[int, ...] | None = None
        self._wire_dtype: np.dtype | None = None
        self._dtype: np.dtype | None = None
        self._closed = False
        # When the daemon last sent anything or was last sent something: it owes an answer from then on.
        self._last_activity = time.monotonic()

    # -- the engine interface ----------------------------------------------------------------

    def push(self, frame: np.ndarray) -> list[np.ndarray]:
        """Send one frame; returns the output frames that have arrived so far."""
        if self._closed:
            raise RuntimeError("push after flush or close: open a new RemoteEngine for a new stream")
        data = self._encode(frame)
        if self._call is None:
            self._open_session()
        while self._sent - self._acked >= self._window:
            self._receive(block=True)
        self._enqueue(mpd_pb2.ClientMessage(frame=mpd_pb2.InputFrame(data=data)))
        self._sent += 1
        self.peak_in_flight = max(self.peak_in_flight, self._sent - self._acked)
        self.stats.frames_in += 1
        while self._receive(block=False):
            pass
        return self._take_ready()

    def flush(self) -> list[np.ndarray]:
        """End of input: waits for and returns every remaining output frame."""
        if self._closed:
            return []
        self._closed = True
        if self._call is None:
            self._close_channel()
            return []
        self._enqueue(_END)
        while not self._ended:
            self._receive(block=True)
        self._close_channel()
        s = self._summary
        self.stats = RemoteStats(s.frames_in, s.frames_out, s.model_calls, s.duplicate_skips, s.scene_changes,
                                 s.seconds)
        return self._take_ready()

    def close(self) -> None:
        """Abandon the session (the daemon frees it at once)."""
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        self._close_channel()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _encode(self, frame: np.ndarray) -> bytes:
        fmt = PixelFormat.of_array(frame.dtype) if isinstance(frame, np.ndarray) else None
        if fmt is None or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"a frame must be an HxWx3 uint8 or uint16 RGB array, got "
                             f"{getattr(frame, 'shape', None)} {getattr(frame, 'dtype', None)}")
        if self._shape is None:
            self._shape, self._dtype, self._wire_dtype = frame.shape, frame.dtype, fmt.dtype
            self.config = session_config(SessionSettings(self.settings, frame.shape[1], frame.shape[0], fmt))
        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise ValueError(f"frame {self.stats.frames_in} is {frame.shape} {frame.dtype}; the stream started with "
                             f"{self._shape} {self._dtype}")
        return np.ascontiguousarray(frame, dtype=self._wire_dtype).tobytes()

    def _requests(self) -> Iterator[mpd_pb2.ClientMessage]:
        yield mpd_pb2.ClientMessage(config=self.config)
        while not self._abandoned.is_set():
            try:
                item = self._send.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item

    def _open_session(self) -> None:
        """Start the call and wait for the daemon's SessionStart (or its refusal)."""
        self._call = self._stub.Interpolate(self._requests(), metadata=self._metadata)
        self._reader = threading.Thread(target=self._read, name="mpd-remote-reader", daemon=True)
        self._reader.start()
        self._last_activity = time.monotonic()
        deadline = self._last_activity + self.start_timeout
        while self.start is None:
            if not self._receive(block=True, until=deadline):
                self._fail(DaemonUnavailableError(f"daemon at {self.address} did not start the session within "
                                                  f"{self.start_timeout:g} s (it accepted the call but does not "
                                                  "answer)", "DEADLINE_EXCEEDED"))
            if self._ended:
                self._fail(DaemonUnavailableError(f"daemon at {self.address} closed the session before it started"))
        self.session_id, self.n_pass, self.adaptive = self.start.session_id, self.start.n_pass, self.start.adaptive
        self._window = max(1, self.start.frames_in_flight)
        announced = fraction(self.start.out_fps, "out_fps")
        if announced != self.out_fps:
            self._fail(RemoteSessionError(f"daemon announced {announced} fps output, expected {self.out_fps}",
                                          "INTERNAL"))

    def _read(self) -> None:
        """Reader thread: every server message (or the call's error) into ``_received``, then None."""
        try:
            for message in self._call:
                self._received.put(message)
        except grpc.RpcError as err:
            self._received.put(error_from_rpc(err, self.address))
        finally:
            self._received.put(None)

    def _receive(self, block: bool, until: float | None = None) -> bool:
        """Handle one message from the daemon; False when none was waiting, or none came by ``until`` (monotonic).

        A blocking wait without ``until`` waits ``stall_timeout`` from the daemon's last message, then fails
        with DaemonUnavailableError. Raises the call's error at its end.
        """
        if self._ended:
            if not block:
                return False
            self._fail(self._error or DaemonUnavailableError(f"daemon at {self.address} ended the session early"))
        wait, stalls = 0.0, False
        if block:
            if until is None:
                self._check_stall()
                until, stalls = self._last_activity + self.stall_timeout, True
            wait = until - time.monotonic()
        try:
            item = self._received.get(timeout=max(0.0, wait)) if block else self._received.get_nowait()
        except queue.Empty:
            if block and stalls:
                self._check_stall()
            return False
        self._last_activity = time.monotonic()
        if item is None:
            self._ended = True
            if self._error is None and self._summary is None:
                self._error = DaemonUnavailableError(f"daemon at {self.address} ended the stream without a summary")
            if self._error is not None:
                self._fail(self._error)
            return True
        if isinstance(item, Exception):
            self._error = item
            return True
        kind = item.WhichOneof("kind")
        if kind == "frame":
            h, w, _ = self._shape
            self._ready.append(np.frombuffer(item.frame.data, dtype=self._wire_dtype).reshape(h, w, 3)
                               .astype(self._dtype))
            self.stats.frames_out += 1
        elif kind == "ack":
            self._acked = item.ack.frames_read
        elif kind == "start":
            self.start = item.start
        elif kind == "summary":
            self._summary = item.summary
        return True

    def _check_stall(self) -> None:
        """Fail when the daemon has sent nothing for ``stall_timeout`` seconds since the client last sent it
        something or heard from it (a client that is slow to send does not count against the daemon)."""
        if time.monotonic() - self._last_activity >= self.stall_timeout:
            self._fail(DaemonUnavailableError(f"daemon at {self.address} sent nothing for {self.stall_timeout:g} s "
                                              "(it holds the session without answering)", "DEADLINE_EXCEEDED"))

    def _take_ready(self) -> list[np.ndarray]:
        out, self._ready = self._ready, []
        return out

    def _enqueue(self, item: object) -> None:
        """Hand a message to gRPC's sender (a short queue: it keeps pace with the acknowledgements)."""
        while True:
            try:
                self._send.put(item, timeout=POLL_SECONDS)
                self._last_activity = time.monotonic()
                return
            except queue.Full:
                if self._ended:
                    self._fail(self._error or DaemonUnavailableError(f"daemon at {self.address} ended the session"))
                if not self._receive(block=False):
                    self._check_stall()

    def _fail(self, error: Exception) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        self._close_channel()
        raise error

    def _close_channel(self) -> None:
        self._abandoned.set()
        if self._own_channel:
            self._channel.close()  # cancels a call still running, which ends the reader
        elif self._call is not None:
            self._call.cancel()
        if self._reader is not None and self._reader is not threading.current_thread():
            # A reader still dropping the call while the interpreter finalizes could abort the process.
            self._reader.join(READER_EXIT_SECONDS)
