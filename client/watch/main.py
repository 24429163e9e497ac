"""`mpd-watch`: process every video dropped into watched folders, unattended; `mpd-watch status` shows the journal."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ... import __version__
from ...escaping import EscapingFormatter, escaped
from ...stop_signals import StopSignals
from ..engine_flags import ENGINE_KEYS, add_engine_flags, add_hwaccel_flag
from ..errors import WatchConfigError
from ..remote.grpc_logging import quiet_grpc_core
from .config import AFTER_CHOICES, FolderConfig, WatchConfig, build_folder, default_state_dir, load_config_file
from .journal import JOURNAL_FILE, Journal
from .placement import nowhere_to_run
from .process import client_options_problem
from .status import render_json, render_table

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69  # no daemon to use and no engine installed (as mpd-client)
LOGGER_NAME = "multipassdedup.watch"

# CLI dest -> config-file name, for the folder options of the single-folder form.
_CLI_FOLDER_OPTIONS = {
    "in_dir": "in", "out_dir": "out", "processing_dir": "processing", "failed_dir": "failed", "done_dir": "done",
    "after": "after", "container": "container", "settle": "settle", "poll": "poll", "poll_interval": "poll_interval",
    "max_attempts": "max_attempts", "quarantine_after": "quarantine_after",
    "reprocess_duplicates": "reprocess_duplicates", "retry_base": "retry_base", "retry_max": "retry_max",
    "server": "server", "local": "local", "jobs": "jobs", "hw": "hw", "client_command": "client_command",
    **{key: key for key in ENGINE_KEYS},
}


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpd-watch", allow_abbrev=False,
        description="Watch drop folders and run every video that appears through mpd-client. "
                    "Anything after `--` is passed to mpd-client as is. Other commands: "
                    "`mpd-watch status`, `mpd-watch forget`.",
        epilog="Uploaders: write NAME.part (or any temporary name) and rename it when complete.")
    parser.add_argument("--version", action="version", version=f"mpd-watch {__version__}")
    where = parser.add_argument_group("folders (one folder on the command line, several with --config)")
    where.add_argument("--config", type=Path, help="TOML file with settings and [[folder]] tables")
    where.add_argument("--in", dest="in_dir", type=Path, help="input (drop) folder")
    where.add_argument("--out", dest="out_dir", type=Path, help="output folder")
    where.add_argument("--processing", dest="processing_dir", type=Path, help="claimed files (default IN/processing)")
    where.add_argument("--failed", dest="failed_dir", type=Path, help="failed sources + logs (default IN/failed)")
    where.add_argument("--done", dest="done_dir", type=Path, help="finished sources with --after move (IN/done)")
    handling = parser.add_argument_group("file handling")
    handling.add_argument("--after", choices=AFTER_CHOICES, help="the source after success (default move)")
    handling.add_argument("--container", help="output file extension (default mkv)")
    handling.add_argument("--settle", type=float, help="seconds a file must stay unchanged (default 10)")
    handling.add_argument("--poll", action=argparse.BooleanOptionalAction, default=None,
                          help="poll instead of inotify (default: only on network filesystems)")
    handling.add_argument("--poll-interval", type=float, help="seconds between polls (default 5)")
    handling.add_argument("--max-attempts", type=int, help="attempts per job (default 3)")
    handling.add_argument("--quarantine-after", type=int, help="failed jobs on the same content before it is "
                          "quarantined (default 2)")
    handling.add_argument("--reprocess-duplicates", action="store_true", default=None,
                          help="process content already done with the same options again")
    handling.add_argument("--retry-base", type=float, help="first retry delay in seconds (default 5)")
    handling.add_argument("--retry-max", type=float, help="longest retry delay in seconds (default 300)")
    client = parser.add_argument_group("processing (passed to mpd-client)")
    client.add_argument("--server", help="daemon address (host:port or unix:///path), or a fleet: A,B,C or "
                                         "dns:///name:port")
    client.add_argument("--jobs", type=int, help="split each file into chunks, this many at once (mpd-client --jobs)")
    client.add_argument("--local", action="store_true", default=None, help="run the engine in-process")
    add_hwaccel_flag(client, "hw", default=None)  # -hw, --hwaccel, --hw: as mpd-client spells it
    client.add_argument("--client-command", help="how to run mpd-client (default: this Python's module)")
    add_engine_flags(parser)  # -m, -np, -fps, -t, ... as mpd-client spells them
    watcher = parser.add_argument_group("watcher")
    watcher.add_argument("--state-dir", type=Path, help="journal and logs (default $STATE_DIRECTORY or "
                         "~/.local/state/multipassdedup/watch)")
    watcher.add_argument("--concurrency", type=int, help="jobs at once (default 1)")
    watcher.add_argument("--scan-interval", type=float, help="seconds between full listings (default 30)")
    watcher.add_argument("--summary-interval", type=float, help="seconds between summary lines (default 300)")
    watcher.add_argument("--once", action="store_true", help="process what is there, then exit")
    watcher.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    return parser


def _state_parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"mpd-watch {command}", description=description, allow_abbrev=False)
    parser.add_argument("--state-dir", type=Path, help="the watcher's state directory")
    parser.add_argument("--config", type=Path, help="take the state directory from this config file")
    return parser


def build_config(args: argparse.Namespace, client_args: list[str]) -> WatchConfig:
    """The WatchConfig of a run command line (single folder) or its --config file."""
    given = {name: getattr(args, dest) for dest, name in _CLI_FOLDER_OPTIONS.items()
             if getattr(args, dest) is not None}
    watch_settings: dict[str, Any] = {}
    if args.config is not None:
        if given or client_args:
            raise WatchConfigError("with --config, folder options go in the config file "
                              f"(got {', '.join(sorted(given)) or 'arguments after --'})")
        watch_settings, folders = load_config_file(args.config)
    elif args.in_dir is None or args.out_dir is None:
        raise WatchConfigError("give --in DIR and --out DIR (or --config FILE)")
    else:
        if client_args:
            given["client_args"] = client_args
        folders = [build_folder(given, "command line")]
    folders = [_absolute(f) for f in folders]
    cli_watch = {"state_dir": args.state_dir, "concurrency": args.concurrency, "scan_interval": args.scan_interval,
                 "summary_interval": args.summary_interval, "log_level": args.log_level}
    watch_settings.update({k: v for k, v in cli_watch.items() if v is not None})
    state_dir = Path(str(watch_settings.pop("state_dir", default_state_dir()))).expanduser()
    try:
        config = WatchConfig(folders=tuple(folders), state_dir=state_dir.absolute(), once=args.once,
                             **watch_settings)
    except TypeError as exc:
        raise WatchConfigError(str(exc)) from None
    config.validate()
    return config


def _absolute(folder: FolderConfig) -> FolderConfig:
    """Folder paths made absolute (event paths are compared with them)."""
    paths = {name: Path(os.path.abspath(getattr(folder, name)))
             for name in ("in_dir", "out_dir", "processing_dir", "failed_dir", "done_dir")}
    return dataclasses.replace(folder, **paths)


def _setup_logging(level: str) -> logging.Logger:
    """Log lines to stderr; timestamps unless journald adds its own."""
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(fmt))  # a dropped file's name cannot split or colour a line
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    return logging.getLogger(LOGGER_NAME)


def _run(argv: list[str]) -> int:
    from .service import Watcher

    if "--" in argv:
        cut = argv.index("--")
        argv, client_args = argv[:cut], argv[cut + 1:]
    else:
        client_args = []
    args = _run_parser().parse_args(argv)
    if args.client_command is not None:
        args.client_command = shlex.split(args.client_command)
    config = build_config(args, client_args)
    for folder in config.folders:  # the options each job will pass: refused now, not file after file
        problem = client_options_problem(folder.client_argv(folder.in_dir / "input.mkv",
                                                            folder.out_dir / f"output.{folder.container}")
                                         + ["--check-options"])
        if problem is not None:
            raise WatchConfigError(f"{folder.in_dir}: mpd-client refuses this folder's options: "
                              f"{problem.removeprefix('mpd-client: error: ')}")
    nowhere = nowhere_to_run(config)
    if nowhere is not None:
        print(f"mpd-watch: error: {nowhere}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    log = _setup_logging(config.log_level)
    watcher = Watcher(config, log)
    # A second signal finds the watcher already stopping: its clients have had their SIGTERM.
    StopSignals().install(on_signal=lambda _name, _again: watcher.request_stop())
    return watcher.run()


def _state_dir_of(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return args.state_dir
    if args.config is not None:
        watch_settings, _ = load_config_file(args.config)
        if "state_dir" in watch_settings:
            return Path(str(watch_settings["state_dir"])).expanduser()
    return default_state_dir()


def _open_journal(args: argparse.Namespace) -> Journal:
    state_dir = _state_dir_of(args)
    if not (state_dir / JOURNAL_FILE).exists():
        raise WatchConfigError(f"no journal in {state_dir} (has mpd-watch run with this --state-dir?)")
    return Journal.in_state_dir(state_dir)


def _status(argv: list[str]) -> int:
    parser = _state_parser("status", "Show the job journal: counts per state, unfinished jobs, recent ones.")
    parser.add_argument("--limit", type=int, default=20, help="finished jobs to show (default 20)")
    parser.add_argument("--all", action="store_true", help="show every job")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    journal = _open_journal(args)
    try:
        limit = None if args.all else args.limit
        print(render_json(journal, limit) if args.json else render_table(journal, limit))
    finally:
        journal.close()
    return 0


def _forget(argv: list[str]) -> int:
    parser = _state_parser("forget", "Forget jobs so their content may be processed again (duplicates) or "
                                     "retried (quarantine).")
    parser.add_argument("selector", help="a job id or a fingerprint prefix (at least 8 hex digits)")
    args = parser.parse_args(argv)
    journal = _open_journal(args)
    try:
        jobs = journal.forget(args.selector)
    except ValueError as exc:
        raise WatchConfigError(str(exc)) from None
    finally:
        journal.close()
    if not jobs:
        raise WatchConfigError(f"no job matches {args.selector}")
    for job in jobs:
        print(f"forgot job {job.id} ({escaped(job.name)}, {job.state.value})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mpd-watch` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_grpc_core()
    commands = {"status": _status, "forget": _forget}
    try:
        if args and args[0] in commands:
            return commands[args[0]](args[1:])
        return _run(args)
    except WatchConfigError as exc:
        print(f"mpd-watch: error: {escaped(str(exc), quote=False)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"mpd-watch: error: {escaped(str(exc), quote=False)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
