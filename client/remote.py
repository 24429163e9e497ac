"""The daemon's client library: ``RemoteEngine`` streams frames through a daemon session like MultiPassDedup in-process.

``push(frame) -> [frames]`` / ``flush() -> [frames]`` / ``out_fps`` / ``stats`` behave as the
engine's do (the same frames overall, though a push may return frames a little later). Errors:
``DaemonUnavailableError`` when the daemon cannot be reached, is busy or goes away (try again or
run in-process), ``RemoteSessionError`` when it refuses or fails this session (the same request
would fail again), and ``SettingsError`` (a ValueError) for settings that cannot work, as the
engine raises them, before anything is sent.
"""

from __future__ import annotations

import getpass
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..proto import mpd_pb2, mpd_pb2_grpc
from ..proto.wire import (
    AUTH_HEADER,
    ERROR_HEADER,
    USER_HEADER,
    PixelFormat,
    SessionSettings,
    channel_options,
    fraction,
    session_config,
)
from ..settings import EngineSettings

SEND_AHEAD = 2  # frames queued for sending beyond the one in transit
POLL_SECONDS = 0.1
READER_EXIT_SECONDS = 5.0  # how long closing waits for the reader thread to end
_END = object()


class DaemonUnavailableError(RuntimeError):
    """The daemon cannot be reached, is at its session limit, or went away mid-stream (transient)."""

    def __init__(self, message: str, code: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.code = code


class RemoteSessionError(RuntimeError):
    """The daemon refused or failed this session: bad config or frame, wrong token, out of memory..."""

    def __init__(self, message: str, code: str = "UNKNOWN", tag: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.tag = tag  # the daemon's mpd-error kind, e.g. "memory": larger than its memory budget


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


def open_channel(address: str, root_cert: bytes | str | Path | None = None, tls: bool = False) -> grpc.Channel:
    """A channel to ``host:port`` or ``unix:///path``; TLS when ``root_cert`` (PEM bytes or a file) or ``tls``."""
    options = channel_options()
    if root_cert is None and not tls:
        return grpc.insecure_channel(address, options=options)
    if isinstance(root_cert, (str, Path)):
        try:
            root_cert = Path(root_cert).read_bytes()
        except OSError as e:
            raise RemoteSessionError(f"cannot read TLS root certificate {root_cert}: {e.strerror}",
                                     "INVALID_ARGUMENT") from None
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root_cert), options=options)


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
        raise error_from_rpc(err, address) from None
    finally:
        channel.close()


def probe(address: str, timeout: float = 0.5, root_cert: bytes | str | Path | None = None) -> bool:
    """True when a daemon answers a health check at ``address`` with SERVING within ``timeout`` seconds."""
    try:
        channel = open_channel(address, root_cert)
    except RemoteSessionError:
        return False
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        channel.close()


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


class RemoteEngine:
    """A MultiPassDedup session on a daemon. The session opens at the first frame (it fixes size and depth).

    At most ``frames_in_flight`` (announced by the daemon) input frames are sent ahead of the
    daemon's acknowledgements, so neither side buffers a stream that outruns the device.
    """

    def __init__(self, address: str, *, model: str = "rife", n_pass: int = 0,
                 src_fps: int | str | Fraction = Fraction(24000, 1001), dst_fps: int | str | Fraction | None = 60,
                 times: float | str | Fraction | None = None, scdet: bool = True, scdet_threshold: float = 0.3,
                 scale: float = 1.0, compensate_delay: bool = True, adaptive: bool = False, token: str | None = None,
                 root_cert: bytes | str | Path | None = None, user: str | None = None,
                 connect_timeout: float = 5.0) -> None:
        self.address = address
        self.settings = EngineSettings.from_keywords(  # SettingsError, as MultiPassDedup raises it
            model=model, n_pass=n_pass, src_fps=src_fps, dst_fps=dst_fps, times=times, scdet=scdet,
            scdet_threshold=scdet_threshold, scale=scale, compensate_delay=compensate_delay, adaptive=adaptive)
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
        self._channel = open_channel(address, root_cert)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise DaemonUnavailableError(f"cannot connect to the daemon at {address} "
                                         f"(nothing answered within {connect_timeout:g} s)") from None
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
        while self.start is None:
            self._receive(block=True)
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

    def _receive(self, block: bool) -> bool:
        """Handle one message from the daemon; False when none was waiting. Raises the call's error at its end."""
        if self._ended:
            if not block:
                return False
            self._fail(self._error or DaemonUnavailableError(f"daemon at {self.address} ended the session early"))
        try:
            item = self._received.get() if block else self._received.get_nowait()
        except queue.Empty:
            return False
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

    def _take_ready(self) -> list[np.ndarray]:
        out, self._ready = self._ready, []
        return out

    def _enqueue(self, item: object) -> None:
        """Hand a message to gRPC's sender (a short queue: it keeps pace with the acknowledgements)."""
        while True:
            try:
                self._send.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                if self._ended:
                    self._fail(self._error or DaemonUnavailableError(f"daemon at {self.address} ended the session"))
                self._receive(block=False)

    def _fail(self, error: Exception) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()
        self._close_channel()
        raise error

    def _close_channel(self) -> None:
        self._abandoned.set()
        self._channel.close()  # cancels a call still running, which ends the reader
        if self._reader is not None and self._reader is not threading.current_thread():
            # A reader still dropping the call while the interpreter finalizes could abort the process.
            self._reader.join(READER_EXIT_SECONDS)
