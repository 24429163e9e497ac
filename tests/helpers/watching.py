"""mpd-watch as its tests run it: the real watcher as a subprocess on real folders, with a fake client unless
asked for the real one; the systemd units it ships with; the videos it writes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av

from multipassdedup.client.watch.journal import Job, Journal

UNITS_DIR = Path(__file__).resolve().parents[2] / "systemd"
INSTALL_BIN = "/opt/multipassdedup/bin"              # where the units expect the console scripts
FAKE_CLIENT = Path(__file__).resolve().parents[1] / "watch" / "fake_client.py"  # a stand-in mpd-client
FAKE_CLIENT_COMMAND = f"{sys.executable} {FAKE_CLIENT}"


class DropFolder:
    """An input/output folder pair with a state dir, and watcher processes run on it."""

    def __init__(self, root: Path, state: str = "state") -> None:
        self.root = root
        self.inbox = root / "in"
        self.outbox = root / "out"
        self.state = root / state
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.client_log = root / "client-runs.log"
        self._runs = 0

    def start(self, *extra: str, state: Path | None = None, env: dict[str, str] | None = None,
              client: str | None = FAKE_CLIENT_COMMAND, settle: float = 0.5) -> subprocess.Popen:
        """Start `mpd-watch` on this folder (fake client unless `client` is None); stderr goes to a log file."""
        self._runs += 1
        argv = [sys.executable, "-m", "multipassdedup.client.watch.main", "--in", str(self.inbox),
                "--out", str(self.outbox), "--state-dir", str(state or self.state), "--settle", str(settle),
                "--scan-interval", "1", "--retry-base", "0.2", "--retry-max", "1", "--summary-interval", "1"]
        if client is not None:
            argv += ["--client-command", client]
        argv += list(extra)
        full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        full_env.update({"FAKE_CLIENT_LOG": str(self.client_log), **(env or {})})
        log = open(self.root / f"watcher-{self._runs}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        proc.log_path = log.name  # type: ignore[attr-defined]
        log.close()
        return proc

    def jobs(self, state: Path | None = None) -> list[Job]:
        """All journal rows, oldest first."""
        journal = Journal.in_state_dir(state or self.state)
        try:
            return sorted(journal.recent(), key=lambda j: j.id)
        finally:
            journal.close()

    def client_runs(self) -> list[str]:
        """One line per fake-client run."""
        return self.client_log.read_text().splitlines() if self.client_log.exists() else []

    def outputs(self) -> list[str]:
        """Names in the output folder (hidden work dirs included)."""
        return sorted(p.name for p in self.outbox.iterdir())

    def drop(self, name: str, data: bytes) -> Path:
        """Drop a complete file the cooperative way: write NAME.part, then rename."""
        part = self.inbox / f"{name}.part"
        part.write_bytes(data)
        final = self.inbox / name
        os.rename(part, final)
        return final


READY_LINE = b"mpd-watch ready:"


def wait_ready(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until a watcher has logged that it is ready (its stop signals are handled from before that line),
    or has exited. A SIGTERM sent earlier, while Python still imports the watcher (over a second on a loaded
    machine), meets the default action and kills it with -15: not what a test of stopping means. A watcher not
    started by ``DropFolder.start`` has no log file here: its test knows readiness its own way (READY=1)."""
    log_path = getattr(proc, "log_path", None)
    if log_path is None:
        return
    deadline = time.monotonic() + timeout
    while proc.poll() is None and READY_LINE not in Path(log_path).read_bytes():
        if time.monotonic() > deadline:
            raise AssertionError(f"the watcher did not get ready within {timeout:.0f} s:\n{log_of(proc)}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM a watcher once it is ready and return its exit code."""
    wait_ready(proc)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def log_of(proc: subprocess.Popen) -> str:
    """What a watcher process logged."""
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def unit_directives(unit: str) -> dict[str, list[str]]:
    """Key -> values of a unit file in systemd/ (all sections; comments dropped)."""
    values: dict[str, list[str]] = {}
    for line in (UNITS_DIR / unit).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def video_facts(path: Path) -> tuple[int, Fraction, tuple[int, int]]:
    """(decoded frame count, average rate, size) of a video file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count, Fraction(stream.average_rate), (stream.codec_context.width, stream.codec_context.height)


def expected_frames(frames: int) -> int:
    """Output frames for `frames` input frames at 24000/1001 -> 60 fps: the input's duration at 60 fps."""
    return math.ceil(Fraction(frames * 60 * 1001, 24000))
