"""``mpd-daemon``: load the models once and serve MultiPassDedup sessions over gRPC until SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
import time
from pathlib import Path

import torch

from .. import __version__
from ..core import UnknownModelError, available_models
from ..escaping import EscapingFormatter
from ..stop_signals import StopSignals
from ..systemd_notify import SystemdNotifier
from ..units import format_bytes
from ..weights import WeightsError
from .activation import inherited_sockets
from .errors import DeviceUnavailableError, ListenError, StartupError, TokenFileError
from .limits import Limits
from .memory import auto_budget, parse_budget
from .options import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_LISTEN,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BATCH_PIXELS,
    DEFAULT_SOCKET_MODE,
    DaemonOptions,
)
from .scheduler import DEFAULT_ANTICIPATION
from .server import DaemonServer, load_models, served_precisions

log = logging.getLogger("multipassdedup.daemon")
TOKEN_ENV = "MPD_TOKEN"
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_UNAVAILABLE = 69  # sysexits' EX_UNAVAILABLE: the device asked for is not there
THREAD_EXIT_SECONDS = 10.0


def build_parser() -> argparse.ArgumentParser:
    d = Limits()
    p = argparse.ArgumentParser(
        prog="mpd-daemon",
        description="Keep interpolation models loaded and serve MultiPassDedup sessions over gRPC. Sessions share "
                    "one scheduler that batches same-shape model calls and shares the device fairly between users.")
    p.add_argument("--version", action="version", version=f"mpd-daemon {__version__}")
    p.add_argument("--listen", action="append", metavar="ADDR",
                   help=f"HOST:PORT or unix:///path; repeat for several (default {DEFAULT_LISTEN}). Anything beyond "
                        "loopback needs a token")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--models", default="rife", help=f"comma-separated models to load (default rife; available: "
                                                    f"{','.join(available_models())})")
    p.add_argument("--weights-dir", type=Path, default=None, help="weights directory (default: the weight store)")
    p.add_argument("--precision", default="auto", metavar="P[,P...]",
                   help="arithmetic of the model calls: auto, fp32, bf16, fp16, or several (comma-separated) to "
                        "serve each model in all of them; the first is a session's default, a session may ask for "
                        "another one listed. auto (default): fp16 on CUDA; on a CPU bf16 only for a model whose "
                        "bf16 keeps golden quality and gains enough speed (none yet: the log says why), else fp32")
    p.add_argument("--half", action="store_true", help="the same as --precision fp16 (kept for compatibility)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the models (default: one per core; the scheduler runs one model call "
                        "at a time, so it gets them all)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-sessions", type=int, default=d.max_sessions,
                   help=f"concurrent sessions; more are refused as busy (default {d.max_sessions})")
    g.add_argument("--max-sessions-per-user", type=int, default=d.max_sessions_per_user, metavar="N",
                   help="concurrent sessions of one user (a --tokens user, else the declared name at its host); "
                        "more are refused as busy (default: half of --max-sessions, rounded up)")
    g.add_argument("--max-frame-pixels", type=int, default=d.max_frame_pixels,
                   help=f"largest width*height accepted (default {d.max_frame_pixels}, 4096x2160)")
    g.add_argument("--frames-in-flight", type=int, default=d.frames_in_flight,
                   help=f"per session: input frames a client may send ahead of acknowledgements, and output "
                        f"frames buffered before its input stops being read (default {d.frames_in_flight})")
    g.add_argument("--max-passes", type=int, default=d.max_passes, help=f"largest n_pass (default {d.max_passes})")
    g.add_argument("--idle-timeout", type=float, default=d.idle_timeout,
                   help=f"end a session whose client neither sends nor reads for this many seconds "
                        f"(default {d.idle_timeout:g}; 0 = never)")
    g.add_argument("--start-timeout", type=float, default=d.start_timeout, metavar="SECONDS",
                   help=f"end a session that has not sent its config, and then its first frame, within this many "
                        f"seconds of its start: it holds a slot and memory (default {d.start_timeout:g}; 0 = the "
                        f"idle timeout)")
    g.add_argument("--max-other-streams", type=int, default=d.max_other_streams, metavar="N",
                   help=f"server reflection streams open at once; more are refused (default {d.max_other_streams})")
    g.add_argument("--max-health-watches", type=int, default=d.max_health_watches, metavar="N",
                   help=f"health-watch streams (a fleet client's health checking) open at once; a new one ends the "
                        f"oldest watch of the connection holding the most, none is refused "
                        f"(default {d.max_health_watches})")
    g.add_argument("--stream-idle-timeout", type=float, default=d.stream_idle_timeout, metavar="SECONDS",
                   help=f"close such a stream after this long without a message, and a metrics connection that has "
                        f"not sent its request (default {d.stream_idle_timeout:g}; 0 = never)")
    g.add_argument("--memory-budget", default="auto", metavar="SIZE",
                   help="memory the sessions' frames may hold together, e.g. 12G; a session that does not fit is "
                        "refused as busy (or for good if it alone is larger). auto (default): half the available "
                        "memory on a CPU (within the service's cgroup limit), 60%% of the free device memory on "
                        "CUDA, measured once the models are loaded; none: no budget")
    g.add_argument("--max-memory-per-user", default="auto", metavar="SIZE",
                   help="of the memory budget, what one user's sessions may reserve together, e.g. 6G; more is "
                        "refused as busy (auto, the default: half the budget)")
    g = p.add_argument_group("batching")
    g.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"model evaluations per batched call (default {DEFAULT_MAX_BATCH})")
    g.add_argument("--max-batch-pixels", type=int, default=DEFAULT_MAX_BATCH_PIXELS,
                   help="evaluations x frame pixels per call, so large frames batch less (default 16 x 1920x1088)")
    g.add_argument("--batch-window-ms", type=float, default=0.0,
                   help="wait this long for more same-shape work before a batch starts (default 0)")
    g.add_argument("--fair-wait-ms", type=float, default=DEFAULT_ANTICIPATION * 1000,
                   help=f"how long a session whose step was just computed keeps its place in the fair order while "
                        f"it prepares the next one, so that sessions with work always queued cannot take more than "
                        f"their user's share (default {DEFAULT_ANTICIPATION * 1000:g}; 0: off)")
    g = p.add_argument_group("security")
    g.add_argument("--token-file", type=Path, default=None,
                   help=f"file holding the shared secret clients must send (or set ${TOKEN_ENV})")
    g.add_argument("--token", default=None, help="the shared secret itself (visible in ps; prefer --token-file)")
    g.add_argument("--tokens", type=Path, default=None,
                   help="file of 'user token' lines: per-user tokens; the user name is then the fairness identity")
    g.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain for TCP listeners")
    g.add_argument("--tls-key", type=Path, default=None, help="PEM private key for --tls-cert")
    g.add_argument("--socket-mode", type=_octal_mode, default=DEFAULT_SOCKET_MODE, metavar="MODE",
                   help=f"permissions of the unix sockets the daemon creates, in octal (default "
                        f"{DEFAULT_SOCKET_MODE:o}: its user and group; whoever may connect may use the daemon)")
    g.add_argument("--socket-group", default=None, metavar="GROUP",
                   help="group of the unix sockets the daemon creates (a name or number; default: its own)")
    p.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT,
                   help="on SIGTERM, seconds running sessions get to finish (default 30; a second SIGTERM or "
                        "SIGINT cancels them at once)")
    p.add_argument("--metrics", default=None, metavar="[HOST:]PORT",
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (default host 127.0.0.1; off by default)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="least severe log lines written to stderr (default info: a line per session's start and "
                        "end, refusals and warnings; debug adds idle streams closed and metrics connection errors)")
    return p


def _octal_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode such as 660: {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"not a permission mode (000 to 777): {text!r}")
    return mode


def options_from_args(args: argparse.Namespace) -> DaemonOptions:
    """The options the flags give, as given (``DaemonOptions.load`` validates them); StartupError for a limit
    that cannot work (``Limits`` checks itself)."""
    try:
        budget = parse_budget(args.memory_budget)
        per_user = parse_budget(args.max_memory_per_user, "--max-memory-per-user")
        if per_user == 0 and args.max_memory_per_user.strip().lower() != "auto":
            raise ValueError(f"--max-memory-per-user must be auto or a size like 6G, got {args.max_memory_per_user!r}")
        limits = Limits(max_sessions=args.max_sessions, max_sessions_per_user=args.max_sessions_per_user,
                        max_frame_pixels=args.max_frame_pixels,
                        frames_in_flight=args.frames_in_flight, max_passes=args.max_passes,
                        idle_timeout=args.idle_timeout, start_timeout=args.start_timeout, memory_budget=budget or 0,
                        max_memory_per_user=per_user or 0, max_other_streams=args.max_other_streams,
                        max_health_watches=args.max_health_watches,
                        stream_idle_timeout=args.stream_idle_timeout)
    except ValueError as e:
        raise StartupError(str(e)) from None
    precisions = [p.strip().lower() for p in args.precision.split(",") if p.strip()] or [args.precision]
    if args.half:
        precisions = ["fp16"] + [p for p in precisions if p != "fp16"]
    token, token_from, token_file = args.token, "--token", None  # --token, else --token-file, else $MPD_TOKEN
    if token is None:
        token_file = args.token_file
        if token_file is None:
            token, token_from = os.environ.get(TOKEN_ENV), f"${TOKEN_ENV}"
    return DaemonOptions(
        listen=args.listen or [DEFAULT_LISTEN], device=args.device,
        models=[m.strip() for m in args.models.split(",") if m.strip()], weights_dir=args.weights_dir,
        precisions=precisions, threads=args.threads, limits=limits,
        auto_memory_budget=budget is None, max_batch=args.max_batch,
        max_batch_pixels=args.max_batch_pixels,
        batch_window=args.batch_window_ms / 1000.0, fair_wait=args.fair_wait_ms / 1000.0,
        token=token, token_from=token_from, token_file=token_file,
        tokens_file=args.tokens, tls_cert=args.tls_cert, tls_key=args.tls_key, drain_timeout=args.drain_timeout,
        metrics_listen=args.metrics, socket_mode=args.socket_mode, socket_group=args.socket_group)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s mpd-daemon %(levelname)s %(message)s"))  # peers, users
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    stops = StopSignals().install()
    try:
        options = options_from_args(args).load()
        inherited = inherited_sockets()
        if options.threads is not None:
            torch.set_num_threads(options.threads)
        started = time.monotonic()
        models = load_models(options.models, options.device, options.weights_dir, precisions=options.precisions)
        for name, variants in served_precisions(models, options.precisions).items():
            m = models[name]
            log.info("loaded %s on %s (serving %s; default %s: %s%s)", name, m.device, ", ".join(variants),
                     m.precision, m.precision_reason,
                     f"; {torch.get_num_threads()} threads" if m.device.type == "cpu" else "")
        log.info("models ready in %.1f s", time.monotonic() - started)
        options = with_memory_budget(options, next(iter(models.values())).device)
        daemon = DaemonServer(options, models, inherited).start()
    except DeviceUnavailableError as e:
        log.error("%s", e)
        return EXIT_UNAVAILABLE
    except (StartupError, ListenError, TokenFileError, UnknownModelError) as e:
        log.error("%s", e)
        return EXIT_USAGE
    except WeightsError as e:
        log.error("%s", e)
        return EXIT_FAILURE
    limits = options.limits
    log.info("listening on %s (max %d sessions, %d per user, %d frames in flight, frames up to %d pixels%s)",
             " ".join(daemon.addresses), limits.max_sessions, limits.sessions_per_user, limits.frames_in_flight,
             limits.max_frame_pixels,
             ", token required" if daemon.authenticator.required else "")
    if daemon.metrics_port is not None:
        log.info("metrics on port %d", daemon.metrics_port)
    notifier = SystemdNotifier()
    notifier.ready(f"serving on {' '.join(daemon.addresses)}")
    timeout = notifier.watchdog_timeout
    # Wake twice per ping interval, so that the pings (at most one per interval) are never a wake-up late.
    while not stops.requested.wait(notifier.ping_interval / 2 if notifier.ping_interval else 1.0):
        if timeout and daemon.responsive(within=timeout):
            notifier.watchdog()  # withheld while a batch hangs: systemd then restarts the daemon
    log.info("stopping: no new sessions (a second SIGTERM or SIGINT cancels the running ones)")
    notifier.stopping()
    finished = daemon.drain(options.drain_timeout, cut_short=stops.urgent)
    del daemon, models
    stuck = join_other_threads(THREAD_EXIT_SECONDS)
    log.info("stopped%s", "" if finished else " (sessions still running at the end of the drain were cancelled)")
    if stuck:
        # Finalizing the interpreter under a running thread that frees tensors aborts the process.
        log.warning("threads still running at exit: %s; exiting without interpreter clean-up", ", ".join(stuck))
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)
    return 0


def with_memory_budget(options: DaemonOptions, device: torch.device) -> DaemonOptions:
    """Size an ``auto`` budget now that the models hold their memory, and say what the budget is."""
    budget, how = options.limits.memory_budget, "--memory-budget"
    if options.auto_memory_budget:
        budget, how = auto_budget(device)
        if budget <= 0:
            raise StartupError(f"no memory left for sessions ({how} is 0 bytes): raise the service's memory limit "
                               "or give --memory-budget SIZE")
    if budget:
        log.info("session memory budget %s (%s)", format_bytes(budget), how)
    else:
        log.warning("no session memory budget (--memory-budget none): sessions are limited by count only")
    options.limits = dataclasses.replace(options.limits, memory_budget=budget)
    return options


def join_other_threads(timeout: float) -> list[str]:
    """Wait up to ``timeout`` s for every other thread (gRPC's poller among them) to end; the names of those left.

    gRPC's serving thread ends shortly after the server stops, dropping the last references to the
    service and its models; if the interpreter were finalizing by then, freeing a tensor on that
    thread would abort the process ("terminate called without an active exception").
    """
    deadline = time.monotonic() + timeout
    me = threading.current_thread()
    # Threads started outside the threading module show up as dummies, which cannot be joined.
    others = [t for t in threading.enumerate() if t is not me and not isinstance(t, threading._DummyThread)]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in others if t.is_alive()]


if __name__ == "__main__":
    sys.exit(main())
