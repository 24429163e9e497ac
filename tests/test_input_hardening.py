"""Hostile and damaged input through the real mpd-client: absurd frame sizes, truncated files, strange names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from helpers.commands import ENV, FFMPEG, script
from helpers.launch import launched
from multipassdedup.daemon.options import DaemonOptions
from multipassdedup.daemon.server import DaemonServer

ADDRESS_SPACE = 6 << 30  # the client under test may map this much: a 100000x100000 frame (15 GB) does not fit


def client(args: list[str], data: bytes = b"", limited: bool = False, cwd: Path | None = None,
           ) -> subprocess.CompletedProcess:
    command = script("mpd-client") + args
    return subprocess.run(launched(command, address_space=ADDRESS_SPACE) if limited else command, input=data,
                          capture_output=True, env=ENV, timeout=300, cwd=cwd)


def y4m_header(width: int, height: int) -> bytes:
    return f"YUV4MPEG2 W{width} H{height} F24:1 Ip A1:1 C420jpeg\n".encode()


@pytest.fixture(scope="module")
def address(rife):
    """A daemon on loopback with the default limits (4096x2160 pixels at most)."""
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start()
    yield next(a for a in server.addresses if not a.startswith("unix"))
    server.stop(0)


# -- frame sizes over the limits -------------------------------------------------------------------


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
    """5000x5000 fits the client's bounds but not the daemon's 4K limit: refused before a frame is read, exit 65
    as the daemon's own refusal is."""
    width = height = 5000
    data = y4m_header(width, height) + b"FRAME\n" + bytes(width * height * 3 // 2)
    proc = client(["--server", address, "-np", "1"], data)
    err = proc.stderr.decode()
    assert proc.returncode == 65, err
    assert (f"the input's frames are 5000x5000, more than the 8847360 pixels the daemon at {address} serves (its "
            "--max-frame-pixels)") in err


def test_raw_size_over_the_limit_is_a_usage_error() -> None:
    proc = client(["--raw", "20000x10", "--in-fps", "24"], b"")
    assert proc.returncode == 2 and "20000x10 has a side over 16384 pixels" in proc.stderr.decode()


# -- names from outside never reach a message raw -----------------------------------


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


# -- truncated or damaged files told from variable frame rates ----------------------


def encode(path: Path, frames: int, size: str = "128x64", rate: str = "24", *extra: str) -> Path:
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                    "-frames:v", str(frames), *extra, "-c:v", "libx264", "-preset", "ultrafast", str(path)],
                   check=True)
    return path


def truncated(path: Path, keep: int) -> Path:
    """The first ``keep`` bytes of ``path`` (an interrupted download), as t-NAME."""
    cut = path.with_name(f"t-{path.name}")
    cut.write_bytes(path.read_bytes()[:keep])
    return cut


def test_truncated_mkv_is_diagnosed_as_truncated_not_vfr(tmp_path: Path) -> None:
    """``head -c 8000 long.mkv``: a gap in its timestamps, but the file is cut short; --cfr does not hide it."""
    src = truncated(encode(tmp_path / "long.mkv", 96), 8000)
    dst = tmp_path / "out.mkv"
    for flags in ([], ["--cfr", "24"]):
        proc = client(["-i", str(src), "-o", str(dst), "--local", "-np", "1", *flags])
        err = proc.stderr.decode()
        assert proc.returncode == 65, err
        assert "t-long.mkv is truncated or damaged" in err and "of the 4.000 s its container declares" in err
        assert "variable frame rate" not in err
        assert not dst.exists() and "running the engine" not in err  # decided before any work


def test_long_truncated_file_is_found_from_its_end_before_any_work(tmp_path: Path) -> None:
    """Longer than the first scan (600 packets): the file's last seconds are read by a seek, before the engine."""
    whole = encode(tmp_path / "long.mkv", 900, "32x32")
    src = truncated(whole, whole.stat().st_size * 3 // 4)
    proc = client(["-i", str(src), "-o", str(tmp_path / "out.mkv"), "--local", "-np", "1"])
    err = proc.stderr.decode()
    assert proc.returncode == 65, err
    assert "is truncated or damaged" in err and "of the 37.500 s its container declares" in err
    assert "running the engine" not in err
    preview = client(["-i", str(whole), "-o", str(tmp_path / "preview.mkv"), "--local", "-np", "1", "-t", "2",
                      "--frames", "4"])
    assert preview.returncode == 0, preview.stderr.decode()  # the whole file passes the same checks


def test_mp4_without_its_index_says_so(tmp_path: Path) -> None:
    src = truncated(encode(tmp_path / "long.mp4", 96), 20000)
    proc = client(["-i", str(src), "-o", str(tmp_path / "out.mkv"), "--local"])
    err = proc.stderr.decode()
    assert proc.returncode == 65, err
    assert "moov atom not found" in err and "index at the file's end is missing" in err


def test_vfr_refusal_states_the_real_average_rate(tmp_path: Path) -> None:
    """A 3-frame gap among 10 frames: the message gives the rate the timestamps average, not the nominal 23.976."""
    src = encode(tmp_path / "vfr.mkv", 10, "128x64", "24000/1001",
                 "-vf", "setpts='(N+gte(N,4)*3)/(24000/1001)/TB'", "-fps_mode", "passthrough")
    with av.open(str(src)) as container:
        times = [p.pts * p.time_base for p in container.demux(video=0) if p.size]
    average = (len(times) - 1) / (max(times) - min(times))
    assert average < 21  # the gap lowers it well below 23.976
    proc = client(["-i", str(src), "-o", str(tmp_path / "out.mkv"), "--local"])
    err = proc.stderr.decode()
    assert proc.returncode == 65, err
    assert f"vfr.mkv has a variable frame rate ({float(average):.3f} fps on average over its first 10 frames, " \
           f"timestamps for 24000/1001 fps)" in err and "--cfr 24000/1001" in err
    assert "truncated" not in err


def test_audio_outlasting_the_video_is_not_taken_for_truncation(tmp_path: Path) -> None:
    """NUT declares only the whole file's duration (3 s of audio, 0.5 s of video): no damage without the demuxer's
    word for it."""
    src = tmp_path / "av.nut"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=24:duration=0.5",
                    "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=3", "-c:v", "libx264", "-preset",
                    "ultrafast", "-c:a", "aac", str(src)], check=True)
    with av.open(str(src)) as container:
        assert container.duration > 2.9 * av.time_base and not container.streams.video[0].duration
    proc = client(["-i", str(src), "-o", str(tmp_path / "out.mkv"), "--local", "-np", "1"])
    assert proc.returncode == 0, proc.stderr.decode()
