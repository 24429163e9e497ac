"""Hostile and damaged input through the real mpd-client: absurd frame sizes, truncated files, strange names."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import pytest

from multipassdedup.daemon.server import DaemonOptions, DaemonServer

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
ENV = {k: v for k, v in os.environ.items() if k not in ("MPD_SERVER", "MPD_TOKEN", "MPD_PROBE")} | \
    {"OMP_NUM_THREADS": "1"}
ADDRESS_SPACE = 6 << 30  # the client under test may map this much: a 100000x100000 frame (15 GB) does not fit


def script(name: str) -> list[str]:
    path = Path(sys.executable).with_name(name)
    module = {"mpd-client": "multipassdedup.client.main", "mpd-daemon": "multipassdedup.daemon.main"}[name]
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def client(args: list[str], data: bytes = b"", limited: bool = False, cwd: Path | None = None,
           ) -> subprocess.CompletedProcess:
    return subprocess.run(script("mpd-client") + args, input=data, capture_output=True, env=ENV, timeout=300,
                          preexec_fn=_limit_address_space if limited else None, cwd=cwd)


def y4m_header(width: int, height: int) -> bytes:
    return f"YUV4MPEG2 W{width} H{height} F24:1 Ip A1:1 C420jpeg\n".encode()


@pytest.fixture(scope="module")
def address(rife):
    """A daemon on loopback with the default limits (4096x2160 pixels at most)."""
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start()
    yield next(a for a in server.addresses if not a.startswith("unix"))
    server.stop(0)


# -- frame sizes over the limits (issue 15.7) ---------------------------------------------------


@pytest.mark.parametrize("where", ["in-process", "daemon"])
def test_absurd_header_size_is_a_data_error_before_any_allocation(where: str, address: str) -> None:
    """100000x100000 is refused from the header: exit 65, not the 75 of a failed 15 GB allocation."""
    data = y4m_header(100000, 100000) + b"FRAME\n" + bytes(4096)
    flags = ["--local", "--device", "cpu"] if where == "in-process" else ["--server", address]
    proc = client(flags, data, limited=True)
    err = proc.stderr.decode()
    assert proc.returncode == 65, err
    assert "100000x100000 has a side over 16384 pixels" in err and "out of memory" not in err


def test_frame_over_the_daemons_limit_is_a_data_error(address: str) -> None:
    """5000x5000 fits the client's bounds but not the daemon's 4K limit: the daemon's refusal is exit 65 too."""
    width = height = 5000
    data = y4m_header(width, height) + b"FRAME\n" + bytes(width * height * 3 // 2)
    proc = client(["--server", address, "-np", "1"], data)
    err = proc.stderr.decode()
    assert proc.returncode == 65, err
    assert "5000x5000 exceeds this daemon's limit" in err


def test_raw_size_over_the_limit_is_a_usage_error() -> None:
    proc = client(["--raw", "20000x10", "--in-fps", "24"], b"")
    assert proc.returncode == 2 and "20000x10 has a side over 16384 pixels" in proc.stderr.decode()


# -- names from outside never reach a message raw (issue 15.9) -----------------------------------


def test_client_error_shows_a_hostile_file_name_escaped_on_one_line(tmp_path: Path) -> None:
    name = "ep\x1b[2J01\nmpd-client: done, all good.mkv"
    proc = client(["-i", name, "-o", "out.mkv", "--local"], cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.count("\n") == 1 and "\x1b" not in err  # one line, no raw escape sequence
    assert err == "mpd-client: error: input file not found: 'ep\\x1b[2J01\\nmpd-client: done, all good.mkv'\n"


def test_daemon_log_lines_escape_what_they_quote(tmp_path: Path) -> None:
    """A socket path with a newline and an ESC (from the command line) cannot split or colour a log line."""
    socket_path = tmp_path / "mpd\x1b[31m\nINFO forged.sock"
    daemon = subprocess.Popen(script("mpd-daemon") + ["--listen", f"unix://{socket_path}", "--device", "cpu",
                                                      "--models", "rife"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        for line in daemon.stderr:
            if b"listening on" in line:
                break
        else:
            pytest.fail("mpd-daemon did not start")
    finally:
        daemon.terminate()
        rest = daemon.communicate(timeout=60)[1]
    lines = (line + rest).decode()
    assert "\x1b" not in lines and not any(row.startswith("INFO forged") for row in lines.splitlines())
    assert "mpd\\x1b[31m\\nINFO forged.sock" in lines
