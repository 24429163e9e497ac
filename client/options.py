"""mpd-client's command line: the original program's flags plus the pipe, daemon and encoder options."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from fractions import Fraction

from .. import __version__
from ..proto.wire import frame_size_problem
from ..settings import EngineSettings, SettingsError, quoted
from .engine_flags import add_engine_flags, add_hwaccel_flag, flag_message, settings_from_options
from .errors import UsageError
from .media.colour import MATRIX_CHOICES
from .placement import DEFAULT_PROBES, Placement, placement_from_environment
from .rates import parse_bitrate, parse_rational, parse_size, parse_time


class UsageParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit code 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see mpd-client --help)")


def _flag_type(parser: Callable[[str, str], Fraction], what: str) -> Callable[[str], Fraction]:
    """An argparse ``type`` for flag ``what``: ``parser``'s ValueError becomes argparse's one-line error."""
    def parse(text: str) -> Fraction:
        try:
            return parser(text, what)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = what
    return parse


def _rational(what: str) -> Callable[[str], Fraction]:
    return _flag_type(parse_rational, what)


def _time(what: str) -> Callable[[str], Fraction]:
    return _flag_type(parse_time, what)


def _bitrate(text: str) -> int:
    try:
        return parse_bitrate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size(text: str) -> tuple[int, int]:
    try:
        size = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if (problem := frame_size_problem(*size)) is not None:
        raise argparse.ArgumentTypeError(problem)
    return size


def build_parser() -> UsageParser:
    p = UsageParser(
        prog="mpd-client", allow_abbrev=False,
        description="Interpolate anime to a higher frame rate with MultiPassDedup. With -i/-o it converts a "
                    "file; without, it filters a YUV4MPEG2, NUT or raw stream from stdin to stdout.",
        epilog="exit codes: 0 ok, 2 usage, 65 bad input data, 69 daemon unavailable/busy (retry), "
               "73 output exists (no -y), 74 output I/O error, 75 temporary failure (retry), 1 other")
    io = p.add_argument_group("input and output")
    io.add_argument("-i", "--input", metavar="IN", help="input video file (file mode); omit to read stdin")
    io.add_argument("-o", "--output", metavar="OUT", help="output video file (file mode)")
    io.add_argument("--raw", metavar="WxH", type=_size, help="stdin carries headerless frames of this size")
    io.add_argument("--pix-fmt", metavar="FMT",
                    help="file mode: the output's pixel format, e.g. yuv420p10le for 10-bit from an 8-bit source "
                         "(default: the source's layout and depth). Pipe mode: the layout of --raw frames: rgb24 "
                         "(default), rgb48le, or a planar YUV format such as yuv420p10le")
    io.add_argument("--in-fps", metavar="RATE", type=_rational("--in-fps"),
                    help="input frame rate (required with --raw; overrides the stream's own)")
    io.add_argument("--cfr", metavar="RATE", type=_rational("--cfr"),
                    help="convert variable-frame-rate input to this constant rate (dropping/repeating frames)")
    io.add_argument("--matrix", choices=MATRIX_CHOICES, default="auto",
                    help="YUV colour matrix when the input does not say (auto: BT.709 for HD, BT.601 for SD)")
    io.add_argument("-ss", dest="cut_start", metavar="POS", type=_time("-ss"),
                    help="file mode: start at POS (seconds or [HH:]MM:SS[.frac]); the output's timestamps start at "
                         "0 there, as with ffmpeg's output -ss")
    io.add_argument("-to", dest="cut_end", metavar="POS", type=_time("-to"),
                    help="file mode: stop at POS, measured like -ss (here -t is the rate multiplier of the original "
                         "program, not a duration)")
    io.add_argument("--frames", "-frames", "-frames:v", "-vframes", dest="cut_frames", metavar="N", type=int,
                    help="file mode: write at most N output video frames; audio, subtitles and chapters stop there too")
    io.add_argument("--deinterlace", nargs="?", const="frame", choices=("frame", "field"), default=None,
                    metavar="frame|field",
                    help="file mode: deinterlace with bwdif before interpolating: frame (the default) gives a frame "
                         "per frame, the rate unchanged; field gives a frame per field, at twice the rate (-fps "
                         "and -t then count from that)")
    io.add_argument("--show-holds", metavar="PNG", dest="show_holds",
                    help="with -i: write what adaptive re-timing decides to PNG instead of converting: each input "
                         "frame (from -ss, --frames of them, default 24) beside itself with the regions it re-draws "
                         "tinted (twos green, threes yellow, fours red); no -o, no model")
    io.add_argument("--jobs", metavar="N", type=int, default=1,
                    help="file mode: split the video at scene cuts into chunks (at least N where the cuts allow) and "
                         "run up to N of them at once, as sessions on the daemons of --server, each on the one "
                         "running the fewest (or in-process with --local); a busy daemon is waited for. The pieces "
                         "are joined without re-encoding (default 1: one session)")
    io.add_argument("--chunk-frames", metavar="N", type=int, default=None,
                    help="with --jobs: the longest chunk in input frames (default 1200). Shorter chunks share the "
                         "work out more evenly and lose less when one is run again, but each costs a session, a "
                         "seek (decoding from the keyframe before it) and a keyframe in the output, and a shot cut "
                         "into pieces is interpolated twice where they overlap (4n-3 frames for n passes; with "
                         "adaptive re-timing shots are never cut)")
    overwrite = io.add_mutually_exclusive_group()
    overwrite.add_argument("-y", dest="overwrite", action="store_const", const="always",
                           help="file mode: overwrite OUT if it exists")
    overwrite.add_argument("-n", dest="overwrite", action="store_const", const="never",
                           help="file mode: never overwrite OUT (exit 73). Without -y or -n: ask on a terminal, "
                                "refuse (exit 73) elsewhere")

    add_engine_flags(p)

    where = p.add_argument_group("where the work runs")
    where.add_argument("--server", metavar="ADDR", action="append",
                       help=f"use the daemon at ADDR (host:port or unix:///path; env MPD_SERVER), or a fleet: "
                            f"A,B,C or --server repeated, or a gRPC target such as dns:///gpu-pool:50051 "
                            f"(sessions spread round-robin over the daemons that are serving). Default: the "
                            f"daemon at {' or '.join(DEFAULT_PROBES)} if one answers (env MPD_PROBE replaces "
                            f"that list), else in-process")
    where.add_argument("--token",
                       help="shared-secret token for the daemon (env MPD_TOKEN keeps it out of ps)")
    where.add_argument("--tls-ca", metavar="PEM", help="verify a TLS daemon with this CA certificate file")
    where.add_argument("--local", action="store_true", help="run the engine in this process, never the daemon")
    where.add_argument("--status", action="store_true",
                       help="show the daemon's status (its sessions, memory budget and queue) and exit")
    where.add_argument("--device", default="auto",
                       help="in-process device: auto (default: CUDA when there, else the CPU), cpu, cuda or cuda:N "
                            "(an explicit CUDA device that is not there is exit 69)")
    where.add_argument("--threads", type=int, default=None, metavar="N",
                       help="in-process CPU threads for the model (default: one per core)")

    enc = p.add_argument_group("encoding (file mode)")
    enc.add_argument("-c", "--codec", default=None,
                     help="video encoder: libx264, libx265, libsvtav1, ffv1, ... (default: the container's, as in "
                          "ffmpeg: libx264 for .mkv/.mp4/.mov, libvpx-vp9 for .webm)")
    enc.add_argument("--crf", type=float, default=None, help="quality (default 18 for x264, 20 for x265)")
    enc.add_argument("--preset", default=None, help="encoder preset (default slow; p5 for NVENC)")
    enc.add_argument("--encoder-opt", metavar="KEY=VALUE", action="append", default=[],
                     help="extra encoder option, repeatable (e.g. x265-params=aq-mode=3)")
    add_hwaccel_flag(enc, "hwaccel")
    enc.add_argument("-f", "--format", dest="container_format", default=None,
                     help="output container format (default: from the output's extension)")
    enc.add_argument("--audio-codec", metavar="ENCODER",
                     help="re-encode audio with this encoder, e.g. libopus for .webm (default: copy, as it is)")
    enc.add_argument("--audio-bitrate", metavar="RATE", type=_bitrate,
                     help="bit rate for --audio-codec, e.g. 128k (default: the encoder's)")

    out = p.add_argument_group("messages")
    prog = out.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show progress even when stderr is not a terminal")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    verbosity = out.add_mutually_exclusive_group()
    verbosity.add_argument("--log-level", choices=LOG_LEVELS, default=None,
                           help="least severe messages written to stderr, as mpd-daemon and mpd-watch spell it "
                                "(default info; debug adds tracebacks to errors)")
    verbosity.add_argument("-q", "--quiet", action="store_const", dest="log_level", const="warning",
                           help="the same as --log-level warning: errors and warnings only")
    verbosity.add_argument("-v", "--verbose", action="store_const", dest="log_level", const="debug",
                           help="the same as --log-level debug: debug messages and tracebacks")
    p.add_argument("--version", action="version", version=f"mpd-client {__version__}")
    p.add_argument("--check-options", action="store_true",
                   help="check the other options and exit: 0, or 2 with the reason; nothing is read, written or "
                        "connected to (mpd-watch checks a folder's options so at start)")
    return p


LOG_LEVELS = ("debug", "info", "warning", "error")


def verbose_requested(argv: list[str]) -> bool:
    """Whether the command line asks for debug output (``-v``, ``--verbose``, ``--log-level debug``), known before it
    is parsed: failures while parsing get a traceback too then."""
    return any(word in ("-v", "--verbose", "--log-level=debug") or (word == "--log-level" and following == "debug")
               for word, following in zip(argv, [*argv[1:], ""]))


def refuse_glued_values(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse ``-crf 18``, ``-c:v x`` or ``-frames:a 5``: argparse reads an unknown word that starts with a short
    option taking a value as that option with the rest glued on (``-c rf``, ``-f rames:a``), which is never what an
    ffmpeg user meant. Known spellings (``-fps``, ``-frames:v``) and ``--``-long options are not touched."""
    known = parser._option_string_actions
    for word in argv:
        if word == "--":
            return
        if word.startswith("--") or not word.startswith("-") or len(word) <= 2 or word.split("=", 1)[0] in known:
            continue
        short = known.get(word[:2])
        if short is None or short.nargs == 0:
            continue
        stem = word[1:].split("=", 1)[0].split(":", 1)[0]
        hint = (f"did you mean --{stem}? " if f"--{stem}" in known else
                f"did you mean -{stem} (there is one video stream to name)? " if f"-{stem}" in known else "")
        raise UsageError(f"unknown option {word} (it would read as {word[:2]} {word[2:]}); {hint}"
                         f"see mpd-client --help")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the command line; raises UsageError."""
    parser = build_parser()
    refuse_glued_values(parser, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.log_level = args.log_level or "info"
    args.quiet, args.verbose = args.log_level in ("warning", "error"), args.log_level == "debug"
    if args.show_holds is not None:
        if args.input is None or args.output is not None:
            raise UsageError("--show-holds takes -i IN and writes a picture, not a video: give -i and no -o")
        return args
    if (args.input is None) != (args.output is None):
        raise UsageError("file mode needs both -i IN and -o OUT (without them, mpd-client filters stdin to stdout)")
    if args.input is not None and args.raw is not None:
        raise UsageError("--raw describes stdin; it cannot be used with -i")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.input is None:
        file_only = {"--jobs": args.jobs if args.jobs > 1 else None, "--chunk-frames": args.chunk_frames,
                     "-ss": args.cut_start, "-to": args.cut_end, "--frames": args.cut_frames,
                     "--deinterlace": args.deinterlace or None, "-y/-n": args.overwrite,
                     "--audio-codec": args.audio_codec, "--audio-bitrate": args.audio_bitrate}
        given = [flag for flag, value in file_only.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} work in file mode (-i IN -o OUT); in a pipe, cut or filter "
                             "with ffmpeg")
    if args.audio_codec == "copy":  # ffmpeg's spelling of the default
        args.audio_codec = None
    if args.audio_bitrate is not None and args.audio_codec is None:
        raise UsageError("--audio-bitrate applies to --audio-codec; copied audio keeps its bit rate")
    if args.server and args.local:
        raise UsageError("--server and --local contradict each other")
    if args.status and (args.local or args.input is not None):
        raise UsageError("--status asks a daemon; it takes --server (and --token, --tls-ca) only")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {quoted(args.device)}")
    engine_settings(args)  # every engine flag checked now, before any input is read
    return args


def engine_settings(args: argparse.Namespace) -> EngineSettings:
    """The engine flags as EngineSettings (the input's rate comes later, from the stream); raises UsageError."""
    try:
        return settings_from_options(vars(args))
    except SettingsError as e:
        raise UsageError(flag_message(e)) from None


def placement(args: argparse.Namespace) -> Placement:
    """Where the work runs, from the flags and the environment (MPD_SERVER, MPD_TOKEN, MPD_PROBE, MPD_BUSY_WAIT)."""
    server = ",".join(args.server) if args.server else None  # repeated --server: one fleet
    return placement_from_environment(server=server, local=args.local, token=args.token, tls_ca=args.tls_ca,
                                      device=args.device, threads=args.threads)
