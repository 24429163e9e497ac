"""mpd-client's command line: the original program's flags plus the pipe, daemon and encoder options."""

from __future__ import annotations

import argparse
import os
from fractions import Fraction

from .. import __version__
from ..settings import EngineSettings, SettingsError
from .colour import MATRIX_CHOICES
from .engine_flags import add_engine_flags, flag_message, settings_from_options
from .engines import DEFAULT_PROBES, Placement
from .exitcodes import UsageError
from .rates import parse_rational, parse_size


class UsageParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit code 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see mpd-client --help)")


def _rational(what: str):
    def parse(text: str) -> Fraction:
        try:
            return parse_rational(text, what)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = what
    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> UsageParser:
    p = UsageParser(
        prog="mpd-client", allow_abbrev=False,
        description="Interpolate anime to a higher frame rate with MultiPassDedup. With -i/-o it converts a "
                    "file; without, it filters a YUV4MPEG2, NUT or raw stream from stdin to stdout.",
        epilog="exit codes: 0 ok, 2 usage, 65 bad input data, 69 daemon unavailable/busy (retry), "
               "74 output I/O error, 75 temporary failure (retry), 1 other")
    io = p.add_argument_group("input and output")
    io.add_argument("-i", "--input", metavar="IN", help="input video file (file mode); omit to read stdin")
    io.add_argument("-o", "--output", metavar="OUT", help="output video file (file mode)")
    io.add_argument("--raw", metavar="WxH", type=_size, help="stdin carries headerless frames of this size")
    io.add_argument("--pix-fmt", default="rgb24", help="pixel format of --raw frames: rgb24 (default), rgb48le, "
                    "or a planar YUV format such as yuv420p10le")
    io.add_argument("--in-fps", metavar="RATE", type=_rational("--in-fps"),
                    help="input frame rate (required with --raw; overrides the stream's own)")
    io.add_argument("--cfr", metavar="RATE", type=_rational("--cfr"),
                    help="convert variable-frame-rate input to this constant rate (dropping/repeating frames)")
    io.add_argument("--matrix", choices=MATRIX_CHOICES, default="auto",
                    help="YUV colour matrix when the input does not say (auto: BT.709 for HD, BT.601 for SD)")

    add_engine_flags(p)

    where = p.add_argument_group("where the work runs")
    where.add_argument("--server", metavar="ADDR",
                       help=f"use the daemon at ADDR (host:port or unix:///path; env MPD_SERVER). Default: the "
                            f"daemon at {' or '.join(DEFAULT_PROBES)} if one answers (env MPD_PROBE replaces "
                            f"that list), else in-process")
    where.add_argument("--token",
                       help="shared-secret token for the daemon (env MPD_TOKEN keeps it out of ps)")
    where.add_argument("--tls-ca", metavar="PEM", help="verify a TLS daemon with this CA certificate file")
    where.add_argument("--local", action="store_true", help="run the engine in this process, never the daemon")
    where.add_argument("--status", action="store_true",
                       help="show the daemon's status (its sessions, memory budget and queue) and exit")
    where.add_argument("--device", default="auto", help="in-process device: auto (default), cpu or cuda")
    where.add_argument("--threads", type=int, default=None, metavar="N",
                       help="in-process CPU threads for the model (default: one per core)")

    enc = p.add_argument_group("encoding (file mode)")
    enc.add_argument("-c", "--codec", default="libx264", help="video encoder: libx264 (default), libx265, ...")
    enc.add_argument("--crf", type=float, default=None, help="quality (default 18 for x264, 20 for x265)")
    enc.add_argument("--preset", default=None, help="encoder preset (default slow; p5 for NVENC)")
    enc.add_argument("--encoder-opt", metavar="KEY=VALUE", action="append", default=[],
                     help="extra encoder option, repeatable (e.g. x265-params=aq-mode=3)")
    enc.add_argument("-hw", "--hwaccel", action="store_true", help="encode with NVENC when available")
    enc.add_argument("-f", "--format", dest="container_format", default=None,
                     help="output container format (default: from the output's extension)")

    out = p.add_argument_group("messages")
    prog = out.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show progress even when stderr is not a terminal")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    verbosity = out.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors and warnings only")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug messages and tracebacks")
    p.add_argument("--version", action="version", version=f"mpd-client {__version__}")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the command line; raises UsageError."""
    args = build_parser().parse_args(argv)
    if (args.input is None) != (args.output is None):
        raise UsageError("file mode needs both -i IN and -o OUT (without them, mpd-client filters stdin to stdout)")
    if args.input is not None and args.raw is not None:
        raise UsageError("--raw describes stdin; it cannot be used with -i")
    if args.server and args.local:
        raise UsageError("--server and --local contradict each other")
    if args.status and (args.local or args.input is not None):
        raise UsageError("--status asks a daemon; it takes --server (and --token, --tls-ca) only")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    engine_settings(args)  # every engine flag checked now, before any input is read
    return args


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    """The engine flags as EngineSettings (the input's rate comes later, from the stream); raises UsageError."""
    try:
        return settings_from_options(vars(args))
    except SettingsError as e:
        raise UsageError(flag_message(e)) from None


def placement(args: argparse.Namespace) -> Placement:
    server = args.server or (None if args.local else os.environ.get("MPD_SERVER") or None)
    probes = os.environ.get("MPD_PROBE")
    return Placement(server=server, local=args.local, token=args.token or os.environ.get("MPD_TOKEN") or None,
                     tls_ca=args.tls_ca, device=args.device, threads=args.threads,
                     probes=DEFAULT_PROBES if probes is None else tuple(a.strip() for a in probes.split(",") if a.strip()))
