"""``mpd-client``: the entry point.

Parses flags, picks file or pipe mode, turns every failure into one line and an exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from ..escaping import EscapingFormatter, escaped
from ..stop_signals import StopSignals, accept_signals
from .errors import ClientError, ExitCode, OutputError, TemporaryFailure, UsageError
from .file.encoders import EncodeOptions, parse_encoder_opts
from .media.input_options import InputOptions
from .options import engine_settings, parse_args, placement, verbose_requested
from .pipe.filter import run_pipe
from .placement import CLIENT_REFUSALS, Placement, name_refusing_daemon
from .remote.grpc_logging import quiet_grpc_core

# Not __name__: run as ``python -m multipassdedup.client.main`` this module is __main__.
log = logging.getLogger("multipassdedup.client")
ENGINE_LOGGERS = ("multipassdedup.core", "multipassdedup.weights")  # what runs in-process logs here
#: mpd-client stops on these (exit 75: a service manager may retry); Ctrl-C (SIGINT) stays a KeyboardInterrupt,
#: reported as "interrupted" (exit 130: its user stopped it).
CLIENT_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(TemporaryFailure):
    """SIGTERM or SIGHUP arrived: stop, clean up, and let a supervisor retry the job later."""


def _terminate(signal_name: str, _again: bool) -> NoReturn:
    """Unwind the job from wherever the main thread is, so that its clean-up (partial output, session) runs."""
    raise Terminated(f"stopped by signal {signal_name}")


def configure_logging(level: str, command: str = "mpd-client") -> None:
    """Log lines of the client's loggers at ``level`` (debug, info, warning, error) and above, and of the
    in-process engine's (``multipassdedup.core``, ``.weights``: a precision note), to stderr as
    ``COMMAND: message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(f"{command}: %(message)s"))
    for logger in (log, *(logging.getLogger(name) for name in ENGINE_LOGGERS)):
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(level.upper())


def _silence_stdout() -> None:
    """After the reader went away, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def run(argv: list[str] | None) -> None:
    args = parse_args(argv)
    try:
        run_parsed(args)
    except Exception as e:  # a fleet's refusal names its daemon; every error goes on to guarded
        if getattr(e, "code", None) not in CLIENT_REFUSALS:
            raise
        named = name_refusing_daemon(e, placement(args))
        if named is e:
            raise
        raise named from None


def run_parsed(args: argparse.Namespace) -> None:
    """The command for parsed flags: status, file mode (one session or chunks) or the pipe filter."""
    configure_logging(args.log_level)
    show_progress = args.progress if args.progress is not None else sys.stderr.isatty()
    if args.quiet and args.progress is None:
        show_progress = False
    spec = InputOptions(args.raw, args.pix_fmt or "rgb24", args.in_fps, args.cfr, args.matrix)
    settings = engine_settings(args)
    where = placement(args)
    if args.check_options:
        parse_encoder_opts(args.encoder_opt)
        return
    if args.status:
        show_status(where)
        return
    if args.show_holds is not None:
        from .file.show_holds import write_hold_sheet

        write_hold_sheet(Path(args.input), Path(args.show_holds), args.cut_start, args.cut_frames,
                         settings.scdet_threshold if settings.scdet else None)
        return
    if args.input is not None:
        from .file.cut import CutRequest
        from .file.output_file import Overwrite
        from .file.transcode import FileChoices, run_file

        encode = EncodeOptions(args.codec, args.crf, args.preset, parse_encoder_opts(args.encoder_opt), args.hwaccel,
                               args.pix_fmt, args.audio_codec, args.audio_bitrate)
        choices = FileChoices(args.container_format, CutRequest(args.cut_start, args.cut_end, args.cut_frames),
                              args.deinterlace, Overwrite(args.overwrite or "ask"))
        if args.jobs > 1 or args.chunk_frames is not None:
            from .chunks.job import DEFAULT_CHUNK_FRAMES, ChunkOptions, run_chunked

            run_chunked(Path(args.input), Path(args.output), spec, settings, where, encode, choices, show_progress,
                        ChunkOptions(args.jobs, args.chunk_frames or DEFAULT_CHUNK_FRAMES))
            return
        run_file(Path(args.input), Path(args.output), spec, settings, where, encode, choices, show_progress)
        return
    if sys.stdin.isatty():
        raise UsageError("nothing to read: pipe a stream into mpd-client, or give -i IN -o OUT")
    if sys.stdout.isatty():
        raise UsageError("refusing to write video to a terminal: pipe the output into ffmpeg or a file")
    run_pipe(sys.stdin.buffer, sys.stdout.buffer, spec, settings, where, show_progress)


def show_status(where: Placement) -> None:
    """Print the status of the daemon at ``--server``, else of the first one that answers (draining ones too)."""
    from .errors import DaemonUnavailableError
    from .placement import find_daemon
    from .remote.daemon_status import format_status
    from .remote.session import daemon_status

    if where.server:
        from .remote.channel import parse_target
        from .remote.fleet_status import fleet_status

        target = parse_target(where.server)
        if target.fleet:
            print(fleet_status(target, where.token, where.tls_ca))
            return
    address = where.server or find_daemon(where)
    if address is None:
        raise DaemonUnavailableError(f"no daemon answers at {' or '.join(where.probes) or 'any address'}; "
                                     "give --server ADDR")
    print(format_status(address, daemon_status(address, where.token, where.tls_ca)))


def main(argv: list[str] | None = None) -> int:
    """Run mpd-client; returns (and exits with) a code from errors.ExitCode."""
    args = sys.argv[1:] if argv is None else argv
    verbose = verbose_requested(args)
    quiet_grpc_core(verbose)
    return guarded(lambda: run(argv), verbose=verbose)


def guarded(job: Callable[[], None], verbose: bool = False) -> int:
    """Run ``job``; every failure becomes one line on stderr and an exit code, tracebacks only with -v."""
    code = ExitCode.OK
    try:
        # Inside the try: a stop signal that a parent left blocked, and so pending, arrives as these unblock it.
        StopSignals().install(CLIENT_STOP_SIGNALS, on_signal=_terminate)
        accept_signals([signal.SIGINT])  # Ctrl-C: Python's KeyboardInterrupt
        job()
    except ClientError as e:
        code = e.exit_code
        _report(e, verbose)
        if isinstance(e, OutputError):
            _silence_stdout()
    except BrokenPipeError:
        code = ExitCode.OUTPUT_ERROR
        print("mpd-client: error: output closed by the reader (broken pipe)", file=sys.stderr)
        _silence_stdout()
    except KeyboardInterrupt:  # the user's Ctrl-C: not a failure to retry
        code = ExitCode.INTERRUPTED
        # On a terminal a progress line (or the ^C echo) may be open: end it, so the message has a line of its own.
        print("\nmpd-client: interrupted" if sys.stderr.isatty() else "mpd-client: interrupted", file=sys.stderr)
    except MemoryError as e:  # a bare one from the allocator, or a model's refusal that says why
        code = ExitCode.TEMPORARY
        print(f"mpd-client: error: {(str(e).splitlines() or ['out of memory'])[0]}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 -- the contract is one line and exit code 1, never a traceback
        code = ExitCode.FAILURE
        _report(e, verbose, unexpected=True)
    return int(code)


def _report(e: BaseException, verbose: bool, unexpected: bool = False) -> None:
    if verbose:
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    text = (str(e) or type(e).__name__).strip()
    if unexpected:
        text = f"unexpected {type(e).__name__}: {text}"
    # One line whatever the message holds: a file name with a newline or an ESC is shown escaped.
    print(f"mpd-client: error: {escaped(text, quote=False)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
