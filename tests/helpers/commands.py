"""The console scripts run as a user runs them, as processes: ``mpd-client`` and the others, and ffmpeg.

``ENV`` is the environment they run in: without the user's daemon settings (``MPD_SERVER``, ``MPD_TOKEN``,
``MPD_PROBE``), with one torch thread per process (the test machine is shared; oversubscribed threads are
ten times slower).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from helpers.frames import H, W
from multipassdedup.client.pipe.y4m import Y4mReader

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SOURCE = f"testsrc2=size={W}x{H}:rate=24000/1001,format=rgb24"  # ffmpeg's moving test picture, RGB in gamut
ENV = {k: v for k, v in os.environ.items() if k not in ("MPD_SERVER", "MPD_TOKEN", "MPD_PROBE")} | \
    {"OMP_NUM_THREADS": "1"}
# How each command runs without its console script (an install without the scripts next to the interpreter).
MODULES = {"mpd-client": ["multipassdedup.client.main"], "mpd-daemon": ["multipassdedup.daemon.main"],
           "mpd-watch": ["multipassdedup.client.watch.main"], "mpd-demo": ["multipassdedup.client.demo"],
           "mpd-weights": ["multipassdedup.commands", "mpd-weights"]}


def script(name: str) -> list[str]:
    """The command line that runs console script ``name``: the installed script, else ``python -m`` its module."""
    path = Path(sys.executable).with_name(name)
    return [str(path)] if path.exists() else [sys.executable, "-m", *MODULES[name]]


def client(args: list[str], data: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 300,
           text: bool = False, **options) -> subprocess.CompletedProcess:
    """``mpd-client ARGS`` run to its end with ``data`` on stdin (no stdin when None), in ``env`` (``ENV`` unless
    given); its output as bytes, or as text with ``text``. ``options`` go to ``subprocess.run`` (cwd, ...)."""
    stdin = {"input": data} if data is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(script("mpd-client") + args, capture_output=True, env=env or ENV, timeout=timeout,
                          text=text, **stdin, **options)


def y4m(frames: int) -> bytes:
    """``frames`` frames of ``SOURCE`` as a 4:2:0 YUV4MPEG2 stream, as ffmpeg writes it."""
    return subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", SOURCE, "-frames:v", str(frames),
                           "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", "-"], capture_output=True, check=True).stdout


def frames_of(data: bytes) -> list[np.ndarray]:
    """The frames of a YUV4MPEG2 stream, each as its flat bytes."""
    reader = Y4mReader(io.BytesIO(data))
    return [np.frombuffer(f, np.uint8) for f in reader]


def free_port() -> int:
    """A loopback TCP port nothing listens on (free when asked; a test uses it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(folder: Path) -> list[str]:
    """The partial files an output left in ``folder`` (none once a run has ended, well or not)."""
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)
