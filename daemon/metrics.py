"""Prometheus text metrics: sessions, frames, model calls, batch sizes, queue wait, errors; an optional HTTP port
served by one thread and a selector."""

from __future__ import annotations

import logging
import math
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .scheduler import WAIT_BUCKETS, BatchScheduler
from .sessions import SessionRegistry, SessionReport
from .streams import StreamBudget

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
log = logging.getLogger(__name__)
MAX_METRICS_CONNECTIONS = 64  # HTTP connections open at once; one more closes the one open longest
MAX_REQUEST_BYTES = 8192  # a scrape's request is a few hundred bytes


class DaemonMetrics:
    """Counters fed by the sessions (frames as they pass, outcomes as they end) and refused calls; the rest is read
    live from the registry and scheduler."""

    def __init__(self, registry: SessionRegistry, scheduler: BatchScheduler,
                 streams: StreamBudget | None = None) -> None:
        self.registry = registry
        self.scheduler = scheduler
        self.streams = streams
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.model_calls = 0
        self.outcomes: Counter = Counter()  # session outcome ("ok", "cancelled", status code) -> count
        self.auth_failures = 0

    def session_ended(self, report: SessionReport) -> None:
        with self._lock:
            self.model_calls += report.model_calls
            self.outcomes[report.outcome] += 1

    def frames_passed(self, frames_in: int, frames_out: int) -> None:
        """Count frames as sessions read and send them (not at their end: a long session is not idle)."""
        with self._lock:
            self.frames_in += frames_in
            self.frames_out += frames_out

    def auth_denied(self, _reason: str) -> None:
        with self._lock:
            self.auth_failures += 1

    def render(self) -> str:
        """The metrics in the Prometheus text exposition format."""
        reg, st = self.registry, self.scheduler.stats_copy()
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
                         for labels, value in samples)

        with self._lock:
            outcomes = dict(self.outcomes)
            frames_in, frames_out, calls, denied = self.frames_in, self.frames_out, self.model_calls, self.auth_failures
        metric("mpd_sessions_active", "gauge", "Sessions streaming now.", [("", reg.active)])
        metric("mpd_sessions_created_total", "counter", "Sessions accepted.", [("", reg.created)])
        metric("mpd_sessions_released_total", "counter", "Sessions ended and freed.", [("", reg.released)])
        metric("mpd_sessions_rejected_total", "counter", "Sessions refused as busy (session limit or memory budget).",
               [("", reg.rejected)])
        metric("mpd_memory_budget_bytes", "gauge", "Memory the sessions' frames may hold together (0: no budget).",
               [("", reg.memory_budget)])
        metric("mpd_memory_reserved_bytes", "gauge", "Memory reserved by the running sessions.",
               [("", reg.memory_reserved)])
        metric("mpd_session_outcomes_total", "counter", "Finished sessions by outcome (ok, cancelled, status code).",
               [(f'{{outcome="{k}"}}', v) for k, v in sorted(outcomes.items())])
        metric("mpd_auth_failures_total", "counter", "Calls refused for a missing or wrong token.", [("", denied)])
        if self.streams is not None:
            metric("mpd_other_streams_open", "gauge", "Reflection streams open now.",
                   [("", self.streams.open_streams)])
            metric("mpd_other_streams_refused_total", "counter",
                   "Reflection streams refused (--max-other-streams).", [("", self.streams.refused)])
            metric("mpd_health_watches_open", "gauge", "Health-watch streams open now.",
                   [("", self.streams.open_watches)])
            metric("mpd_health_watches_ended_total", "counter",
                   "Health watches ended to admit a newer one (--max-health-watches).",
                   [("", self.streams.watches_ended)])
            metric("mpd_other_streams_idle_closed_total", "counter",
                   "Reflection and health-watch streams closed for being idle (--stream-idle-timeout).",
                   [("", self.streams.closed_idle)])
        metric("mpd_frames_in_total", "counter", "Input frames read from the sessions' streams.", [("", frames_in)])
        metric("mpd_frames_out_total", "counter", "Output frames queued for the sessions' clients.", [("", frames_out)])
        metric("mpd_model_calls_total", "counter", "Interpolated frames computed by the models.",
               [("", st.evaluations)])
        metric("mpd_session_model_calls_total", "counter", "Model calls of finished sessions.", [("", calls)])
        metric("mpd_batches_total", "counter", "Batched model invocations.", [("", st.batches)])
        metric("mpd_cross_session_batches_total", "counter", "Batches holding work of more than one session.",
               [("", st.cross_session_batches)])
        metric("mpd_batch_errors_total", "counter", "Batches that raised (including out of memory).",
               [("", st.errors)])
        metric("mpd_out_of_memory_total", "counter", "Batches that ran out of memory.", [("", st.out_of_memory)])
        metric("mpd_queue_depth", "gauge", "Model submissions waiting for the device.",
               [("", self.scheduler.queue_depth)])
        batch_samples, cumulative = [], 0
        sizes = dict(st.batch_evaluations)
        for bound in BATCH_BUCKETS:
            cumulative = sum(n for size, n in sizes.items() if size <= bound)
            batch_samples.append((f'_bucket{{le="{bound}"}}', cumulative))
        batch_samples += [('_bucket{le="+Inf"}', st.batches), ("_sum", st.evaluations), ("_count", st.batches)]
        metric("mpd_batch_size", "histogram", "Model evaluations per batched invocation.", [])
        lines.extend(f"mpd_batch_size{suffix} {value}" for suffix, value in batch_samples)
        metric("mpd_queue_wait_seconds", "histogram", "Time a submission waited for the device.", [])
        cumulative = 0
        for bound, n in zip(WAIT_BUCKETS, st.wait_counts):
            cumulative += n
            lines.append(f'mpd_queue_wait_seconds_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'mpd_queue_wait_seconds_bucket{{le="+Inf"}} {sum(st.wait_counts)}')
        lines.append(f"mpd_queue_wait_seconds_sum {st.wait_sum:g}")
        lines.append(f"mpd_queue_wait_seconds_count {sum(st.wait_counts)}")
        return "\n".join(lines) + "\n"


@dataclass(eq=False)
class _Connection:
    """One metrics client: its socket, when its whole exchange must be over, what it sent and what is left to send."""

    sock: socket.socket
    address: str
    opened: float
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    reply: memoryview | None = None  # set once the request is complete


class MetricsServer:
    """Serves ``/metrics`` over HTTP on one thread of its own, every connection through one selector.

    No connection holds a thread, and none can hold the endpoint: a client has ``request_timeout`` seconds
    (0: no limit) for the whole exchange, from connecting to having read the answer (a deadline for the
    request, not for each read: a client sending a byte at a time cannot stretch it), and at most
    ``max_connections`` are open at once. When one more arrives, the one open longest is closed to make
    room: a scraper sends its request as it connects, so the one left waiting longest is a slow sender.
    """

    def __init__(self, metrics: DaemonMetrics, host: str = "127.0.0.1", port: int = 0,
                 request_timeout: float = 60.0, max_connections: int = MAX_METRICS_CONNECTIONS) -> None:
        self.render = metrics.render
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                             backlog=128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.evicted = 0  # connections closed to make room for a newer one
        self.timed_out = 0  # connections closed at their deadline
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._open: dict[socket.socket, _Connection] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="mpd-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass
        self._thread.join(5)
        for conn in list(self._open.values()):
            self._close(conn)
        self._selector.close()
        for sock in (self.listener, self._wake_read, self._wake_write):
            sock.close()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    # -- the loop --------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            deadlines = [c.deadline for c in self._open.values() if c.deadline < math.inf]
            wait = max(0.0, min(deadlines) - now) if deadlines else None
            for key, events in self._selector.select(wait):
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj is self._wake_read:
                    continue
                else:
                    conn = self._open.get(key.fileobj)
                    if conn is not None:
                        self._step(conn, events)
            now = time.monotonic()
            for conn in [c for c in self._open.values() if c.deadline <= now]:
                self.timed_out += 1
                log.debug("metrics client %s: no complete exchange within %g s", conn.address, self.request_timeout)
                self._close(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors, a connection reset before it was accepted
                log.debug("metrics: accept failed: %s", e)
                return
            if len(self._open) >= self.max_connections:
                self.evicted += 1
                self._close(min(self._open.values(), key=lambda c: c.opened))
            sock.setblocking(False)
            now = time.monotonic()
            conn = _Connection(sock, str(address[0]), now, now + self.request_timeout if self.request_timeout
                               else math.inf)
            self._open[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _step(self, conn: _Connection, events: int) -> None:
        """Read what the client sent (answering once its request is whole), or send what is left of the answer."""
        try:
            if conn.reply is None and events & selectors.EVENT_READ:
                data = conn.sock.recv(4096)
                if not data:
                    self._close(conn)
                    return
                conn.received += data
                if b"\r\n\r\n" in conn.received or len(conn.received) > MAX_REQUEST_BYTES:
                    conn.reply = memoryview(self._answer(bytes(conn.received)))
                    self._selector.modify(conn.sock, selectors.EVENT_WRITE)
            elif conn.reply is not None and events & selectors.EVENT_WRITE:
                sent = conn.sock.send(conn.reply)
                conn.reply = conn.reply[sent:]
                if not conn.reply:
                    self._close(conn)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # the client went away mid-exchange: not the daemon's error
            log.debug("metrics client %s: %s", conn.address, e)
            self._close(conn)

    def _answer(self, request: bytes) -> bytes:
        """The HTTP response to a whole request (or to the first 8 KiB of one that is longer)."""
        head = request.split(b"\r\n\r\n", 1)[0]
        if len(head) > MAX_REQUEST_BYTES:
            return _response(431, "Request Header Fields Too Large", b"request too large\n")
        method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
        path = rest.partition(b" ")[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _response(405, "Method Not Allowed", b"only GET here\n")
        if path not in (b"/metrics", b"/"):
            return _response(404, "Not Found", b"only /metrics here\n")
        try:
            body = self.render().encode()
        except Exception:  # a metrics bug must not stop the endpoint
            log.exception("rendering the metrics failed")
            return _response(500, "Internal Server Error", b"metrics failed\n")
        return _response(200, "OK", body, CONTENT_TYPE, with_body=method == b"GET")

    def _close(self, conn: _Connection) -> None:
        self._open.pop(conn.sock, None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()


def _response(status: int, reason: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
              with_body: bool = True) -> bytes:
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    return head + (body if with_body else b"")
