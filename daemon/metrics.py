"""Prometheus text metrics: sessions, frames, model calls, batch sizes, queue wait, errors; an optional HTTP port."""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .scheduler import WAIT_BUCKETS, BatchScheduler
from .sessions import SessionRegistry, SessionReport
from .streams import StreamBudget

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
log = logging.getLogger(__name__)
MAX_METRICS_CONNECTIONS = 8  # HTTP connections served at once; more are closed at once (scrapers retry)


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


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: one more is closed at once."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: a burst of connections then waits on the kernel's
    # SYN retries (1 s, 3 s, ...) before the accept loop can even close them.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # the thread releases the slot
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client that goes away mid-request is not an error of the daemon's (socketserver would print a
        traceback to stderr, the journal); anything else is logged as one."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("metrics client %s: %s", client_address[0], error)
            return
        log.exception("metrics request from %s failed", client_address[0])


class MetricsServer:
    """Serves ``/metrics`` over HTTP on its own thread.

    A client has ``request_timeout`` seconds (0: no limit) to send its request and to read the answer, and at
    most ``max_connections`` are served at once: half-sent requests cannot pile up threads.
    """

    def __init__(self, metrics: DaemonMetrics, host: str = "127.0.0.1", port: int = 0,
                 request_timeout: float = 60.0, max_connections: int = MAX_METRICS_CONNECTIONS) -> None:
        render = metrics.render

        class Handler(BaseHTTPRequestHandler):
            timeout = request_timeout or None  # socket timeout for every read and write of the connection

            def do_GET(self) -> None:  # http.server's naming
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics here")
                    return
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:  # scrapes (and timeouts) are not worth a log line each
                return

        self.httpd = _BoundedHTTPServer((host, port), Handler, max_connections)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="mpd-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
