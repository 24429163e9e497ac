"""The daemon: models loaded once, one scheduler, the gRPC server with its listeners, health, reflection, metrics."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection

from ..core import Interpolator, first_supported, load_model, precision_variants
from ..proto import mpd_pb2_grpc
from ..proto.wire import channel_options
from .activation import SocketRelay, describe, is_local, private_socket_path
from .auth import AuthInterceptor
from .decoding import UndecodableRequests
from .errors import ListenError, StartupError
from .health import HEALTH_SERVICE_NAME, SERVICE_NAME, HealthReporter
from .listen import ListenAddress, prepare_unix_socket
from .metrics import DaemonMetrics, MetricsServer
from .options import DaemonOptions
from .scheduler import BatchScheduler
from .service import MultiPassDedupService
from .sessions import SessionRegistry
from .streams import StreamBudget

log = logging.getLogger(__name__)

# The gRPC pool: one thread per session slot, and these for the short calls (status, model lists,
# refusals). Reflection and health-watch streams and health checks have threads of their own (streams.py).
SPARE_RPC_THREADS = 8


def load_models(names: list[str], device: str, weights_dir: Path | None = None,
                precisions: list[str] | None = None) -> dict[str, Interpolator]:
    """Load each model once, for the daemon's lifetime, in the first of ``precisions`` it runs in."""
    models = {}
    for name in names:
        try:
            precision = first_supported(name, precisions or ["auto"])
            models[name] = load_model(name, device=device, weights_dir=weights_dir, precision=precision)
        except ValueError as e:
            raise StartupError(f"{e} (mpd-daemon --precision)") from None
    return models


def served_precisions(models: dict[str, Interpolator], precisions: list[str]) -> dict[str, dict[str, Interpolator]]:
    """Model name -> precision -> the model computing in it, for every precision each model is served in."""
    return {name: precision_variants(m, precisions) for name, m in models.items()}


class DaemonServer:
    """A running daemon; ``start`` binds every listener or raises, ``drain``/``stop`` end it cleanly.

    ``options`` are loaded here unless they were already (``DaemonOptions.load``, which validates them).
    ``inherited`` are listening sockets from socket activation: each is served through a relay
    (daemon/activation.py), and a ``--listen`` address naming one of them is not bound again.
    """

    def __init__(self, options: DaemonOptions, models: dict[str, Interpolator],
                 inherited: Sequence[socket.socket] = ()) -> None:
        if not models:
            raise StartupError("no models to serve")
        self.options = options if options.loaded else options.load()
        self.models = models
        self.listeners, self.authenticator = options.listeners, options.authenticator
        self.inherited = list(inherited)
        exposed = [describe(s) for s in self.inherited if not is_local(s)]
        if exposed and not self.authenticator.required:
            raise StartupError(f"inherited socket {exposed[0]} is reachable from other machines; a token is required")
        limits = options.limits
        self.registry = SessionRegistry(limits.max_sessions, limits.memory_budget, limits.sessions_per_user,
                                        limits.memory_per_user)
        self.scheduler = BatchScheduler(max_batch=options.max_batch, max_batch_pixels=options.max_batch_pixels,
                                        batch_window=options.batch_window, anticipation=options.fair_wait)
        self.streams = StreamBudget(options.limits.max_other_streams, options.limits.stream_idle_timeout,
                                    options.limits.max_health_watches)
        self.undecodable = UndecodableRequests()  # innermost: each handler decodes its requests through it
        self.metrics = DaemonMetrics(self.registry, self.scheduler, self.streams)
        self.health = HealthReporter()
        self.service = MultiPassDedupService(models, self.scheduler, self.registry, options.limits,
                                             self.authenticator, self.metrics,
                                             served_precisions(models, options.precisions))
        self.addresses: list[str] = []
        self.metrics_server: MetricsServer | None = None
        self.relays: list[SocketRelay] = []
        self._bound_paths: list[Path] = []
        self._private_dirs: list[Path] = []
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None  # gRPC does not shut down the pool it is given

    def _credentials(self) -> grpc.ServerCredentials | None:
        o = self.options
        if not o.tls_cert:
            return None
        try:
            key, cert = Path(o.tls_key).read_bytes(), Path(o.tls_cert).read_bytes()
        except OSError as e:
            raise StartupError(f"cannot read TLS file {e.filename}: {e.strerror}") from None
        return grpc.ssl_server_credentials([(key, cert)])

    def start(self) -> DaemonServer:
        limits = self.options.limits
        self._executor = futures.ThreadPoolExecutor(max_workers=limits.max_sessions + SPARE_RPC_THREADS,
                                                    thread_name_prefix="mpd-rpc")
        server = grpc.server(
            self._executor,
            interceptors=[AuthInterceptor(self.authenticator, self.metrics.auth_denied), self.streams,
                          self.undecodable],
            options=[*channel_options(limits.max_frame_pixels),
                     ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
                     ("grpc.keepalive_time_ms", 60_000),
                     ("grpc.keepalive_timeout_ms", 20_000)])
        mpd_pb2_grpc.add_MultiPassDedupServicer_to_server(self.service, server)
        self.health.add_to(server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server)
        credentials = self._credentials()
        inherited = {describe(s): s for s in self.inherited}
        pending_relays: list[tuple[socket.socket, Path]] = []
        try:
            for address in self.listeners:
                if address.grpc_target() in inherited:
                    continue  # systemd holds this one; served by a relay below
                self.addresses.append(self._bind(server, address, credentials))
                if address.is_unix:
                    self._bound_paths.append(address.path)
                    self._restrict_socket(address.path)
            for name, sock in inherited.items():
                tls = credentials if sock.family != socket.AF_UNIX else None
                pending_relays.append((sock, self._private_upstream(server, tls)))
                self.addresses.append(name)
        except Exception:
            self._remove_files()
            raise
        self.scheduler.start()
        self.streams.start()
        server.start()
        self._server = server
        self.relays = [SocketRelay(sock, target).start() for sock, target in pending_relays]
        if self.options.metrics_address is not None:
            host, port = self.options.metrics_address
            try:
                self.metrics_server = MetricsServer(self.metrics, host, port,
                                                    request_timeout=limits.stream_idle_timeout).start()
            except OSError as e:
                self.stop(0)
                raise StartupError(f"cannot serve metrics on {host}:{port}: {e.strerror}") from None
        self.health.serving()
        return self

    def _private_upstream(self, server: grpc.Server, credentials: grpc.ServerCredentials | None) -> Path:
        """A unix socket only this user can reach, for a relay to feed (TLS passes through to it)."""
        path = private_socket_path()
        self._private_dirs.append(path.parent)
        target = f"unix://{path}"
        if credentials is not None:
            server.add_secure_port(target, credentials)
        else:
            server.add_insecure_port(target)
        return path

    @staticmethod
    def _bind(server: grpc.Server, address: ListenAddress, credentials: grpc.ServerCredentials | None) -> str:
        if address.is_unix:
            prepare_unix_socket(address.path)
        target = address.grpc_target()
        try:
            if credentials is not None and not address.is_unix:  # unix sockets stay plain: the kernel is the transport
                port = server.add_secure_port(target, credentials)
            else:
                # gRPC creates a unix socket here, with the mode the umask leaves: owner only until _restrict_socket.
                with _umask(0o177 if address.is_unix else None):
                    port = server.add_insecure_port(target)
        except RuntimeError as e:
            raise ListenError(f"cannot listen on {target}: {e}") from None
        if not address.is_unix and port == 0:
            raise ListenError(f"cannot listen on {target} (address in use or not available)")
        return address.grpc_target(port)

    def _restrict_socket(self, path: Path) -> None:
        """Give a unix socket ``--socket-mode`` and ``--socket-group`` (whoever may connect may use the daemon)."""
        o = self.options
        try:
            if o.socket_gid is not None:
                os.chown(path, -1, o.socket_gid)
            os.chmod(path, o.socket_mode)
        except OSError as e:
            raise StartupError(f"cannot set the owner group or mode of {path}: {e.strerror}") from None
        if o.socket_mode & stat.S_IWOTH:
            log.warning("unix socket %s is writable by every user (--socket-mode %o): anyone on this machine may "
                        "use the daemon", path, o.socket_mode)

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_server.port if self.metrics_server else None

    def responsive(self, within: float) -> bool:
        """The device thread is alive and no batch has been running for ``within`` seconds (for the watchdog)."""
        stalled = self.scheduler.stalled_for()
        return stalled is not None and stalled < within

    def drain(self, timeout: float | None = None, cut_short: threading.Event | None = None) -> bool:
        """Refuse new sessions, let running ones finish for up to ``timeout`` s, then stop; True if none was cut.

        Setting ``cut_short`` (a second stop signal) ends the wait early: the sessions still running are cancelled.
        """
        timeout = self.options.drain_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self.registry.draining = True
        self.health.draining()
        self.service.refuse_unstarted()  # streams that never sent their config: nothing to finish
        active = self.registry.active
        if active:
            log.info("draining: waiting up to %g s for %d session(s) to finish", timeout, active)
        finished = self.registry.wait_idle(timeout, cut_short)
        if not finished:
            cut = cut_short is not None and cut_short.is_set()
            why = "drain cut short" if cut else "drain timeout"
            log.warning("%s: cancelling %d session(s)", why, self.registry.active)
            self.service.cancel_sessions(f"the daemon is stopping ({why})")
        # A finished session may still be sending its last frames and summary: give the calls the time left.
        self.stop(max(0.0, deadline - time.monotonic()) if finished else 0)
        return finished

    def stop(self, grace: float | None = 0) -> bool:
        """Refuse new calls, give running ones ``grace`` seconds, then cancel them and free everything."""
        self.registry.draining = True
        for relay in self.relays:
            relay.stop()
        self.relays = []
        finished = True
        if self._server is not None:
            self._server.stop(grace).wait()
            self.service.cancel_sessions("the daemon stopped")
            finished = self.registry.wait_idle(5.0)  # cancelled sessions free themselves within a batch
            finished = self.service.join_sessions(5.0) and finished
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)  # idle after the stop: its threads end now
            self._executor = None
        self.scheduler.close()
        self.streams.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        self._remove_files()
        return finished

    def _remove_files(self) -> None:
        """Our own unix sockets and private directories (never the sockets systemd holds)."""
        for path in self._bound_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self._bound_paths = []
        for directory in self._private_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._private_dirs = []

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout) if self._server else True


@contextlib.contextmanager
def _umask(mask: int | None):
    """Set the process umask for the block (None: leave it); the daemon binds before its other threads start."""
    if mask is None:
        yield
        return
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)
