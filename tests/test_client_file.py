"""mpd-client file mode (real files, real encoders) and mpd-demo."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest

from helpers.commands import ENV, FFMPEG, client, leftovers, script
from helpers.launch import launched
from helpers.waiting import wait_until

CHAPTERS = """;FFMETADATA1
title=Test clip
[CHAPTER]
TIMEBASE=1/1000
START=0
END=200
title=Opening
[CHAPTER]
TIMEBASE=1/1000
START=200
END=420
title=Part A
"""
SUBTITLES = "1\n00:00:00,000 --> 00:00:00,300\nHello\n\n"


def make_input(folder: Path, frames: int = 10) -> Path:
    """A 10-bit H.264 Matroska file: tagged BT.709 colour, AAC (jpn), ASS subtitles, a font attachment, 2 chapters."""
    (folder / "chapters.txt").write_text(CHAPTERS)
    (folder / "subs.srt").write_text(SUBTITLES)
    (folder / "font.ttf").write_bytes(b"not really a font")
    path = folder / "in.mkv"
    subprocess.run([FFMPEG, "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=128x64:rate=24000/1001",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-i", str(folder / "subs.srt"), "-i", str(folder / "chapters.txt"),
                    "-map", "0:v", "-map", "1:a", "-map", "2:s", "-map_metadata", "3", "-map_chapters", "3",
                    "-frames:v", str(frames), "-t", f"{frames * 1001 / 24000:.4f}",
                    "-vf", "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
                    "-c:a", "aac", "-c:s", "ass", "-metadata:s:a:0", "language=jpn",
                    "-attach", str(folder / "font.ttf"), "-metadata:s:t", "mimetype=font/ttf", str(path)],
                   check=True)
    return path


def packets(path: Path, kind: str) -> list[tuple[Fraction | None, bytes]]:
    """(presentation time, payload) of every packet of the first stream of a kind."""
    with av.open(str(path)) as c:
        stream = getattr(c.streams, kind)[0]
        return [(None if p.pts is None else p.pts * p.time_base, bytes(p)) for p in c.demux(stream) if p.size]


def stream_end(path: Path, kind: str) -> float:
    """When a stream's last packet ends, in seconds."""
    with av.open(str(path)) as c:
        stream = getattr(c.streams, kind)[0]
        ends = [(p.pts + (p.duration or 0)) * p.time_base for p in c.demux(stream) if p.size and p.pts is not None]
    return float(max(ends))


def test_file_mode_carries_everything_over(tmp_path: Path) -> None:
    src = make_input(tmp_path)
    dst = tmp_path / "out.mkv"
    proc = client(["-i", str(src), "-o", str(dst), "-fps", "60", "-np", "1", "--local", "--preset", "ultrafast"],
                  text=True)
    assert proc.returncode == 0, proc.stderr
    assert "in-process" in proc.stderr and f"wrote {dst}" in proc.stderr
    assert leftovers(tmp_path) == []
    assert dst.stat().st_mode & 0o777 == 0o666 & ~current_umask()

    with av.open(str(src)) as a, av.open(str(dst)) as b:
        vin, vout = a.streams.video[0], b.streams.video[0]
        assert vout.average_rate == 60
        assert vout.codec_context.pix_fmt == "yuv420p10le"  # 10-bit stays 10-bit
        for tag in ("colorspace", "color_primaries", "color_trc", "color_range"):
            assert getattr(vout.codec_context, tag) == getattr(vin.codec_context, tag) != 2, tag
        assert b.chapters() == a.chapters() and len(b.chapters()) == 2
        assert b.metadata.get("title") == "Test clip"
        assert b.streams.audio[0].metadata.get("language") == "jpn"
        fonts = [(t.metadata.get("filename"), t.mimetype, t.data) for t in b.streams.attachments]
        assert fonts == [("font.ttf", "font/ttf", b"not really a font")]
        n_out = sum(1 for _ in b.decode(video=0))
    assert n_out == 26  # ceil(10 frames * 60 / (24000/1001)) = ceil(25.025)
    assert packets(dst, "audio") == packets(src, "audio")  # copied, not re-encoded
    assert packets(dst, "subtitles") == packets(src, "subtitles")
    frame = 1 / 60 + 0.002  # one output frame, plus Matroska's millisecond rounding on both sides
    assert abs(stream_end(dst, "audio") - stream_end(src, "audio")) <= frame
    assert abs(stream_end(dst, "video") - stream_end(src, "video")) <= frame


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_variable_frame_rate_refused_then_converted(tmp_path: Path) -> None:
    src = tmp_path / "vfr.mkv"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=128x64:rate=24000/1001",
                    "-frames:v", "10", "-vf", "setpts='(N+gte(N,4)*3)/(24000/1001)/TB'",  # a 3-frame gap
                    "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast", str(src)], check=True)
    dst = tmp_path / "out.mkv"
    refused = client(["-i", str(src), "-o", str(dst), "--local"], text=True)
    assert refused.returncode == 65, refused.stderr
    assert "variable frame rate" in refused.stderr and "--cfr 24000/1001" in refused.stderr
    assert "Traceback" not in refused.stderr and not dst.exists()

    done = client(["-i", str(src), "-o", str(dst), "--cfr", "24000/1001", "-np", "1", "--local",
                   "--preset", "ultrafast"], text=True)
    assert done.returncode == 0, done.stderr
    with av.open(str(dst)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 31  # 13 slots (the gap filled by repeats) -> ceil(12 * 2.5025)
    assert leftovers(tmp_path) == []


def test_interrupted_job_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    """SIGTERM mid-encode: exit 75 (retry later), the temporary file removed, no output file."""
    src = tmp_path / "long.mkv"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=128x64:rate=24000/1001",
                    "-frames:v", "400", "-c:v", "libx264", "-preset", "ultrafast", str(src)], check=True)
    dst = tmp_path / "out.mkv"
    proc = subprocess.Popen(script("mpd-client") + ["-i", str(src), "-o", str(dst), "-np", "1", "--local",
                                                    "--preset", "ultrafast"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            text=True)
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert leftovers(tmp_path), "the temporary output never appeared"
    time.sleep(1.0)  # well into the work
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "stopped by signal SIGTERM" in err and "Traceback" not in err
    assert not dst.exists() and leftovers(tmp_path) == []


def test_ctrl_c_on_a_terminal_exits_130_on_a_line_of_its_own(tmp_path: Path) -> None:
    """A user's Ctrl-C, typed on the terminal the client runs in (a pty: the kernel sends SIGINT to its foreground
    process group): exit 130, not 75 (which asks a wrapper to retry), "interrupted" below the progress line, and
    no output left behind."""
    import pty

    src = tmp_path / "long.mkv"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=128x64:rate=24000/1001",
                    "-frames:v", "400", "-c:v", "libx264", "-preset", "ultrafast", str(src)], check=True)
    dst = tmp_path / "out.mkv"
    master, slave = pty.openpty()

    command = script("mpd-client") + ["-i", str(src), "-o", str(dst), "-np", "1", "--local", "--preset", "ultrafast",
                                      "--progress"]
    # a session of its own, with the pty as its controlling terminal
    proc = subprocess.Popen(launched(command, controlling_terminal=True), stdin=slave, stdout=subprocess.DEVNULL,
                            stderr=slave, env=ENV, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while b"fps" not in seen and time.monotonic() < deadline:  # the progress line is up: work is under way
            seen += os.read(master, 4096)
        assert b"fps" in seen, seen
        os.write(master, b"\x03")  # Ctrl-C, as typed
        assert proc.wait(60) == 130
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's last process has gone: nothing more to read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode(errors="replace").replace("\r", "")
    assert "\nmpd-client: interrupted\n" in text, text  # not glued to the progress line
    assert "Traceback" not in text
    assert not dst.exists() and leftovers(tmp_path) == []


def test_mp4_output_without_nvenc(tmp_path: Path) -> None:
    """-hw on a machine without NVENC says so and falls back; ASS cannot go into MP4: reported and left out."""
    src = make_input(tmp_path, frames=6)
    dst = tmp_path / "out.mp4"
    proc = client(["-i", str(src), "-o", str(dst), "-hw", "-np", "1", "--local", "--preset", "ultrafast"], text=True)
    assert proc.returncode == 0, proc.stderr
    assert "NVENC" in proc.stderr and "not available" in proc.stderr
    assert "leaving out subtitle stream" in proc.stderr and "leaving out 1 attachment" in proc.stderr
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert len(c.streams.audio) == 1 and len(c.streams.subtitles) == 0
    assert packets(dst, "audio") == packets(src, "audio")


def test_file_mode_usage_errors(tmp_path: Path) -> None:
    src = make_input(tmp_path, frames=3)
    same = client(["-i", str(src), "-o", str(src), "--local"], text=True)
    assert same.returncode == 2 and "overwrite the input" in same.stderr
    nodir = client(["-i", str(src), "-o", str(tmp_path / "no" / "out.mkv"), "--local"], text=True)
    assert nodir.returncode == 2 and "output folder does not exist" in nodir.stderr
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(random.Random(0).randbytes(4096))  # fixed: now and then random bytes probe as a subtitle
    bad = client(["-i", str(garbage), "-o", str(tmp_path / "out.mkv"), "--local"], text=True)
    assert bad.returncode == 65 and "cannot read" in bad.stderr and "Traceback" not in bad.stderr
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.mkv").exists()


def test_demo_runs_without_a_daemon(tmp_path: Path) -> None:
    proc = subprocess.run(script("mpd-demo") + ["--out-dir", str(tmp_path), "--frames", "8"], capture_output=True,
                          text=True, env=ENV | {"MPD_SERVER": "127.0.0.1:1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    out = Path(lines["output"].split(" (")[0])
    assert out == tmp_path / "sample_60fps.mp4" and out.exists()
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == 60 and len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 21  # ceil(8 * 2.5025)
    assert "model calls" in lines["figures"]


@pytest.mark.parametrize(("stop", "code", "message"),
                         [(signal.SIGTERM, 75, "mpd-client: error: stopped by signal SIGTERM"),
                          (signal.SIGINT, 130, "mpd-client: interrupted")], ids=["SIGTERM", "SIGINT"])
def test_stop_signals_blocked_by_the_parent_still_stop_the_client(stop: signal.Signals, code: int,
                                                                  message: str) -> None:
    """A process inherits its parent's blocked signals: started by a parent that blocks SIGTERM and SIGINT (a
    thread pool's, a wrapper's), the client must still stop on them, not leave them pending and run on."""
    command = launched(script("mpd-client") + ["-np", "1", "--local"], blocked=(signal.SIGTERM, signal.SIGINT))
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=ENV)
    def signal_safe() -> bool:  # blocked by the launcher (pending until the client accepts it), or the client's
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if ":\t" in line)
        bit = 1 << (stop - 1)
        launcher = b"TIOCSCTTY" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        return bool(int(fields["SigBlk"], 16) & bit or (not launcher and int(fields["SigCgt"], 16) & bit))

    try:
        assert wait_until(signal_safe, 60, "the launcher or the client to take the signal")
        time.sleep(0.5)  # most likely waiting for the stream's first bytes by now; either way the signal must stop it
        proc.send_signal(stop)
        proc.wait(timeout=60)  # stdin stays open: only the signal can end it
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.stderr.close()
    assert proc.returncode == code, err.decode()
    assert err.decode().splitlines()[-1] == message


@pytest.mark.parametrize(("stop", "code", "message"),
                         [(signal.SIGTERM, 75, "mpd-client: error: stopped by signal SIGTERM"),
                          (signal.SIGINT, 130, "mpd-client: interrupted")], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_pending_at_start_ends_the_client_in_one_line(stop: signal.Signals, code: int,
                                                                    message: str) -> None:
    """A stop signal sent while a parent still had it blocked is pending when the client starts (it survives exec)
    and arrives as the client unblocks it: its exit code and one line, not a traceback."""
    pending = ("import os, signal, sys\n"
               f"signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.Signals({int(stop)})}})\n"
               f"os.kill(os.getpid(), {int(stop)})\n"
               "os.execv(sys.argv[1], sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", pending, *script("mpd-client"), "-np", "1", "--local"],
                          input=b"", capture_output=True, env=ENV, timeout=120)
    assert done.returncode == code, done.stderr.decode()
    assert done.stderr.decode().splitlines() == [message]
