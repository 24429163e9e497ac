"""Watcher configuration: per-folder options (processing, output, source handling) and watcher-wide ones."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from ...settings import SettingsError
from ..engine_flags import ENGINE_KEYS, adaptive_by_default, client_args, settings_from_options
from ..errors import WatchConfigError

AFTER_CHOICES = ("keep", "move", "delete")




def default_client_command() -> tuple[str, ...]:
    """mpd-client run by the same interpreter as the watcher (works in venvs and without PATH)."""
    return (sys.executable, "-m", "multipassdedup.client.main")


def default_state_dir() -> Path:
    """$STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/multipassdedup/watch (~/.local/state/...)."""
    systemd_dirs = os.environ.get("STATE_DIRECTORY")
    if systemd_dirs:
        return Path(systemd_dirs.split(":")[0])
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "multipassdedup" / "watch"


@dataclass(frozen=True)
class FolderConfig:
    """One input folder: where things go, how files are processed, and what happens to sources."""

    in_dir: Path
    out_dir: Path
    processing_dir: Path
    failed_dir: Path
    done_dir: Path
    after: str = "move"                  # keep | move (to done/) | delete: the source after success
    container: str = "mkv"               # output file extension
    settle_seconds: float = 10.0
    poll: bool | None = None             # None: poll only on network filesystems
    poll_interval: float = 5.0
    max_attempts: int = 3                # attempts a job may use (transient failures use none)
    quarantine_after: int = 2            # failed jobs on the same content before new drops of it are set aside
    reprocess_duplicates: bool = False   # process content already done with the same options again
    retry_base: float = 5.0              # first backoff, doubled per retry
    retry_max: float = 300.0
    server: str | None = None            # one daemon, or a fleet: "A,B,C" or "dns:///gpu-pool:50051"
    local: bool = False
    jobs: int = 1                        # >1: each file split into chunks, this many at once (mpd-client --jobs)
    model: str | None = None
    n_pass: int | None = None
    fps: str | None = None
    times: str | None = None
    scdet: bool | None = None
    scdet_threshold: float | None = None
    scale: float | None = None
    compensate_delay: bool = True       # False: the original program's timing
    precision: str | None = None        # auto, fp32, bf16, fp16 (mpd-client --precision)
    adaptive: bool | None = None        # keyframe re-timing (unset: mpd-client's default, adaptive_by_default)
    hw: bool = False
    client_args: tuple[str, ...] = ()
    client_command: tuple[str, ...] = field(default_factory=default_client_command)

    def engine_options(self) -> dict[str, Any]:
        """The engine options of this folder by config key, as written (unset ones None)."""
        return {key: getattr(self, key) for key in ENGINE_KEYS}

    def processing_args(self) -> list[str]:
        """Client options that shape the output (not where it runs)."""
        args = client_args(self.engine_options())
        if self.hw:
            args.append("-hw")
        return args + list(self.client_args)

    def where_args(self) -> list[str]:
        """Client options that choose the daemon or the in-process engine."""
        jobs = ["--jobs", str(self.jobs)] if self.jobs > 1 else []  # same output, so not in the options digest
        if self.local:
            return ["--local", *jobs]
        if self.server:
            return ["--server", self.server, *jobs]
        return jobs

    def options_digest(self) -> str:
        """Hash of everything that shapes the output: equal digests on equal content mean equal results. Keyframe
        re-timing is named, so a folder that left ``adaptive`` unset does not match jobs done before it became
        mpd-client's default (folders that use the passes keep their digests)."""
        content: dict[str, Any] = {"args": self.processing_args(), "container": self.container}
        options = {k: v for k, v in self.engine_options().items() if v is not None and v != ""}
        if options.get("adaptive", adaptive_by_default(options)):
            content["method"] = "adaptive"
        payload = json.dumps(content)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def client_argv(self, source: Path, output: Path) -> list[str]:
        """The full mpd-client command line for one job (progress lines go to the job's log)."""
        return [*self.client_command, "-i", str(source), "-o", str(output), "--progress", *self.processing_args(),
                *self.where_args()]

    def validate(self) -> None:
        """Raise WatchConfigError for settings that cannot work."""
        if self.after not in AFTER_CHOICES:
            raise WatchConfigError(f"after must be one of {', '.join(AFTER_CHOICES)}, not {self.after!r}")
        if self.local and self.server:
            raise WatchConfigError(f"{self.in_dir}: choose either server or local, not both")
        if self.fps and self.times:
            raise WatchConfigError(f"{self.in_dir}: choose either fps or times, not both")
        try:
            settings_from_options(self.engine_options())
        except SettingsError as e:
            raise WatchConfigError(f"{self.in_dir}: {e}") from None
        if not self.container or "/" in self.container or self.container.startswith("."):
            raise WatchConfigError(f"{self.in_dir}: container must be an extension like mkv or mp4")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise WatchConfigError(f"{self.in_dir}: jobs must be a whole number >= 1, not {self.jobs!r}")
        if self.max_attempts < 1 or self.quarantine_after < 1:
            raise WatchConfigError(f"{self.in_dir}: max_attempts and quarantine_after must be at least 1")
        if self.settle_seconds < 0 or self.retry_base <= 0 or self.retry_max < self.retry_base:
            raise WatchConfigError(f"{self.in_dir}: settle must be >= 0 and 0 < retry_base <= retry_max")
        if not self.client_command:
            raise WatchConfigError(f"{self.in_dir}: client_command is empty")
        dirs = {"in": self.in_dir, "out": self.out_dir, "processing": self.processing_dir,
                "failed": self.failed_dir, "done": self.done_dir}
        for name, other in dirs.items():
            if name != "in" and other.resolve() == self.in_dir.resolve():
                raise WatchConfigError(f"{self.in_dir}: the {name} folder must differ from the input folder")


@dataclass(frozen=True)
class WatchConfig:
    """Everything one mpd-watch process does."""

    folders: tuple[FolderConfig, ...]
    state_dir: Path
    concurrency: int = 1
    scan_interval: float = 30.0
    summary_interval: float = 300.0
    once: bool = False
    log_level: str = "info"

    def validate(self) -> None:
        """Raise WatchConfigError for settings that cannot work."""
        if not self.folders:
            raise WatchConfigError("no folder to watch: give --in and --out, or a config file with [[folder]] tables")
        if self.concurrency < 1:
            raise WatchConfigError("concurrency must be at least 1")
        if self.scan_interval <= 0:
            raise WatchConfigError("scan_interval must be positive")
        seen: set[Path] = set()
        for folder in self.folders:
            folder.validate()
            key = folder.in_dir.resolve()
            if key in seen:
                raise WatchConfigError(f"{folder.in_dir} is listed twice")
            seen.add(key)
            self._check_state_dir_outside(folder)

    def _check_state_dir_outside(self, folder: FolderConfig) -> None:
        """Refuse a state directory inside one of the folder's directories.

        The journal is this watcher's alone and belongs on its local disk: a drop folder is what several
        watchers (and hosts) share, and SQLite's WAL journal does not work on a network filesystem.
        """
        state = Path(os.path.abspath(self.state_dir))
        for setting, directory in (("in", folder.in_dir), ("out", folder.out_dir),
                                   ("processing", folder.processing_dir), ("failed", folder.failed_dir),
                                   ("done", folder.done_dir)):
            directory = Path(os.path.abspath(directory))
            if state == directory or directory in state.parents:
                raise WatchConfigError(f"state_dir {state} is inside the {setting} folder {directory}: give each"
                                  " watcher its own state directory on its local disk")


# Config-file / CLI names of folder settings -> FolderConfig field names.
FOLDER_KEYS = {
    "in": "in_dir", "out": "out_dir", "processing": "processing_dir", "failed": "failed_dir",
    "done": "done_dir", "after": "after", "container": "container", "settle": "settle_seconds",
    "poll": "poll", "poll_interval": "poll_interval", "max_attempts": "max_attempts",
    "quarantine_after": "quarantine_after", "reprocess_duplicates": "reprocess_duplicates",
    "retry_base": "retry_base", "retry_max": "retry_max", "server": "server", "local": "local", "jobs": "jobs",
    "hw": "hw",
    "client_args": "client_args", "client_command": "client_command",
    **{key: key for key in ENGINE_KEYS},
}
WATCH_KEYS = {"state_dir", "concurrency", "scan_interval", "summary_interval", "log_level"}
_PATH_FIELDS = {"in_dir", "out_dir", "processing_dir", "failed_dir", "done_dir"}
_TUPLE_FIELDS = {"client_args", "client_command"}


def _coerce(field_name: str, value: Any, where: str) -> Any:
    """Convert a config value to the field's type, with an error naming the setting."""
    if field_name in _PATH_FIELDS:
        return Path(str(value)).expanduser()
    if field_name in _TUPLE_FIELDS:
        if isinstance(value, str):
            return tuple(shlex.split(value))
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise WatchConfigError(f"{where}: {field_name} must be a list of strings")
        return tuple(value)
    if field_name in ("fps", "times") and value is not None:
        return str(value)
    return value


def build_folder(settings: Mapping[str, Any], where: str) -> FolderConfig:
    """A FolderConfig from config-file names (`in`, `out`, `settle`, ...), defaults filled in."""
    unknown = set(settings) - set(FOLDER_KEYS)
    if unknown:
        raise WatchConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    values = {FOLDER_KEYS[k]: _coerce(FOLDER_KEYS[k], v, where) for k, v in settings.items() if v is not None}
    if "in_dir" not in values or "out_dir" not in values:
        raise WatchConfigError(f"{where}: every folder needs `in` and `out`")
    in_dir = values["in_dir"]
    values.setdefault("processing_dir", in_dir / "processing")
    values.setdefault("failed_dir", in_dir / "failed")
    values.setdefault("done_dir", in_dir / "done")
    try:
        return FolderConfig(**values)
    except TypeError as exc:
        raise WatchConfigError(f"{where}: {exc}") from None


def load_config_file(path: Path) -> tuple[dict[str, Any], list[FolderConfig]]:
    """Parse a TOML config: watcher settings and folder defaults at top level, one [[folder]] table each."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise WatchConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise WatchConfigError(f"{path}: {exc}") from None
    folders = data.pop("folder", [])
    if not isinstance(folders, list):
        raise WatchConfigError(f"{path}: use [[folder]] tables (an array), not [folder]")
    watch = {k: data.pop(k) for k in list(data) if k in WATCH_KEYS}
    defaults = data
    unknown = set(defaults) - set(FOLDER_KEYS)
    if unknown:
        raise WatchConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    built = [build_folder({**defaults, **table}, f"{path} folder {i + 1}") for i, table in enumerate(folders)]
    return watch, built
