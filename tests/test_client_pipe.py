"""mpd-client as a pipe filter between two real ffmpeg processes: YUV4MPEG2, NUT and raw, and its errors."""

from __future__ import annotations

import io
import os
import select
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from helpers.commands import ENV, FFMPEG, SOURCE, client, script
from helpers.frames import FILM, H, W, psnr
from multipassdedup.client.pipe.y4m import Y4mHeader, Y4mReader
from multipassdedup.core import MultiPassDedup

N = 8
# mpd-client in fp32, the exact mode: outputs are compared with the in-process fp32 engine's.
EXACT_CLIENT = [*script("mpd-client"), "--precision", "fp32"]
def ffmpeg(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run([FFMPEG, "-loglevel", "error", *args], input=data, capture_output=True, check=True).stdout


def source(pix_fmt: str, fmt: str = "yuv4mpegpipe", frames: int = N, extra: tuple[str, ...] = ()) -> list[str]:
    """ffmpeg arguments that write the test clip to stdout."""
    return ["-f", "lavfi", "-i", SOURCE, "-frames:v", str(frames), *extra, "-pix_fmt", pix_fmt, "-strict", "-1",
            "-f", fmt, "-"]


def pipeline(src_args: list[str], client_args: list[str], sink_args: list[str]) -> tuple[bytes, str, int]:
    """``ffmpeg SRC | mpd-client ARGS | ffmpeg -i - SINK`` with real pipes: (sink stdout, client stderr, client rc)."""
    up = subprocess.Popen([FFMPEG, "-loglevel", "error", *src_args], stdout=subprocess.PIPE)
    mid = subprocess.Popen(EXACT_CLIENT + client_args, stdin=up.stdout, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=ENV)
    down = subprocess.Popen([FFMPEG, "-loglevel", "error", "-i", "-", *sink_args], stdin=mid.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    up.stdout.close()
    mid.stdout.close()
    out, down_err = down.communicate(timeout=300)
    err = mid.stderr.read().decode()
    mid.wait(timeout=60)
    up.wait(timeout=60)
    assert down.returncode == 0, down_err.decode()
    return out, err, mid.returncode


def engine_output(model, frames: list[np.ndarray], **kw) -> list[np.ndarray]:
    """The in-process engine's frames with the client's defaults (adaptive re-timing unless passes are given, delay
    compensation, scene detection)."""
    defaults = {"src_fps": FILM, "dst_fps": 60, "compensate_delay": True, "adaptive": "n_pass" not in kw}
    pipe = MultiPassDedup(model, **(defaults | kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like the client under test; restored for the rest of the session
    try:
        out = []
        for f in frames:
            out += pipe.push(f)
        return out + pipe.flush()
    finally:
        torch.set_num_threads(threads)


def y4m_frames(data: bytes) -> tuple[Y4mHeader, list[bytes]]:
    reader = Y4mReader(io.BytesIO(data))
    return reader.header, list(reader)


def expected_count(n_in: int, ratio: Fraction) -> int:
    """Output frames presented before the input ends: ceil(n * out_fps / in_fps)."""
    return -(-n_in * ratio.numerator // ratio.denominator)


# -- YUV4MPEG2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pix_fmt, rgb_fmt, dtype, peak", [
    ("yuv420p", "rgb24", np.uint8, 255), ("yuv420p10le", "rgb48le", np.dtype("<u2"), 1023),
])
def test_y4m_pipe_matches_the_engine(rife, pix_fmt: str, rgb_fmt: str, dtype, peak: int) -> None:
    """ffmpeg | mpd-client -fps 60 | ffmpeg: right header, frame count, depth, and the engine's frames.

    Compared in the stream's own YUV: the reference is the engine run on ffmpeg's RGB of the input,
    converted back by ffmpeg (frames the engine copied from the input are the input's own samples).
    """
    y4m_in = ffmpeg(*source(pix_fmt))
    out, err, rc = pipeline(source(pix_fmt), ["-fps", "60", "-m", "rife", "--local"],
                            ["-c:v", "rawvideo", "-strict", "-1", "-f", "yuv4mpegpipe", "-"])
    assert rc == 0, err
    assert "in-process" in err  # says where the work ran
    header, frames = y4m_frames(out)
    in_header, in_frames = y4m_frames(y4m_in)
    assert (header.width, header.height, header.colour, header.rate) == (W, H, in_header.colour, Fraction(60))
    assert header.pix_fmt == pix_fmt  # 10-bit stays 10-bit
    assert len(frames) == expected_count(N, Fraction(60) / FILM) == 21

    rgb_in = np.frombuffer(ffmpeg("-i", "-", "-pix_fmt", rgb_fmt, "-f", "rawvideo", "-", data=y4m_in),
                           dtype).reshape(N, H, W, 3).astype(np.uint8 if peak == 255 else np.uint16)
    ref = engine_output(rife, list(rgb_in))[: len(frames)]
    ref_yuv = ffmpeg("-f", "rawvideo", "-pix_fmt", rgb_fmt, "-s", f"{W}x{H}", "-i", "-", "-pix_fmt", pix_fmt,
                     "-f", "rawvideo", "-", data=np.stack(ref).tobytes())
    size = len(frames[0])
    sample = np.dtype(dtype)
    for k, (got, want) in enumerate(zip(frames, ref)):
        copies = [j for j, f in enumerate(rgb_in) if np.array_equal(f, want)]
        expected = in_frames[copies[0]] if copies else ref_yuv[k * size: (k + 1) * size]
        db = psnr(np.frombuffer(got, sample), np.frombuffer(expected, sample), peak)
        assert db >= 45, f"frame {k}: {db:.1f} dB"


@pytest.mark.parametrize("pix_fmt, colour", [("yuv422p10le", "422p10"), ("yuv444p", "444")])
def test_y4m_keeps_chroma_layout_and_exact_rates(pix_fmt: str, colour: str) -> None:
    """4:2:2 and 4:4:4 stay as they are; -t 2.5 on 24000/1001 is exactly 60000/1001."""
    out, err, rc = pipeline(source(pix_fmt, frames=5), ["-t", "2.5", "-np", "1", "--local", "-q"],
                            ["-c:v", "rawvideo", "-strict", "-1", "-f", "yuv4mpegpipe", "-"])
    assert rc == 0, err
    assert err == ""  # --quiet
    header, frames = y4m_frames(out)
    assert header.colour == colour and header.pix_fmt == pix_fmt
    assert header.rate == Fraction(60000, 1001) and b"F60000:1001" in out[:80]
    assert len(frames) == expected_count(5, Fraction(5, 2)) == 13


def test_output_starts_before_input_ends() -> None:
    """Frames come out while stdin is still open: the filter streams, it does not buffer the clip."""
    y4m_in = ffmpeg(*source("yuv420p", frames=12))
    header_line, _, body = y4m_in.partition(b"\n")
    frame_len = len(body) // 12
    proc = subprocess.Popen(EXACT_CLIENT + ["-fps", "60", "-np", "1", "--local", "-q"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        proc.stdin.write(header_line + b"\n" + body[: 6 * frame_len])
        proc.stdin.flush()
        got = b""
        deadline = time.monotonic() + 120
        out_frame = len(b"FRAME\n") + W * H * 3 // 2
        while len(got) < len(header_line) + 1 + 2 * out_frame and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                got += os.read(proc.stdout.fileno(), 1 << 16)
        assert proc.poll() is None  # still running: its input has not ended
        assert got.startswith(b"YUV4MPEG2 W128 H64 F60:1")
        assert got.count(b"FRAME\n") >= 2, "no output frames before the end of the input"
        rest, err = proc.communicate(body[6 * frame_len:], timeout=120)  # writes and reads at once
        assert proc.returncode == 0, err.decode()
    finally:
        proc.kill()
    _, frames = y4m_frames(got + rest)
    assert len(frames) == expected_count(12, Fraction(60) / FILM)


# -- NUT and raw -------------------------------------------------------------------------------


def test_nut_rgb48le_with_timestamps(rife) -> None:
    """NUT carries 16-bit RGB and timestamps: same format out, pts continue from the input's start."""
    src = source("rgb48le", fmt="nut", frames=6, extra=("-c:v", "rawvideo", "-output_ts_offset", "10"))
    out, err, rc = pipeline(src, ["-fps", "60000/1001", "--local"], ["-copyts", "-c:v", "rawvideo", "-f", "nut", "-"])
    assert rc == 0, err
    with av.open(io.BytesIO(out), format="nut") as c:
        stream = c.streams.video[0]
        assert stream.codec_context.pix_fmt == "rgb48le"
        frames = list(c.decode(stream))
    assert len(frames) == expected_count(6, Fraction(60000, 1001) / FILM) == 15
    times = [f.pts * (f.time_base or stream.time_base) for f in frames]
    assert times[0] == pytest.approx(10, abs=1 / 60)  # the input started at 10 s
    assert all(b - a == Fraction(1001, 60000) for a, b in zip(times, times[1:]))
    rgb_in = np.frombuffer(ffmpeg(*source("rgb48le", fmt="rawvideo", frames=6)), "<u2").reshape(6, H, W, 3)
    ref = engine_output(rife, [f.astype(np.uint16) for f in rgb_in], dst_fps=Fraction(60000, 1001))
    for got, want in zip(frames, ref):
        # RGB all the way; only float rounding differs (the client runs torch on one thread)
        assert psnr(got.to_ndarray(), want, 65535) >= 60


def test_raw_rgb24_with_progress(rife) -> None:
    rgb = ffmpeg(*source("rgb24", fmt="rawvideo", frames=6))
    proc = client(["--raw", f"{W}x{H}", "--in-fps", "24000/1001", "-fps", "60", "--local", "--precision", "fp32",
                   "--progress"], rgb)
    assert proc.returncode == 0, proc.stderr.decode()
    out = np.frombuffer(proc.stdout, np.uint8).reshape(-1, H, W, 3)
    ref = engine_output(rife, list(np.frombuffer(rgb, np.uint8).reshape(6, H, W, 3).copy()))
    assert len(out) == expected_count(6, Fraction(60) / FILM) == 16
    assert min(psnr(a, b, 255) for a, b in zip(out, ref)) >= 50
    err = proc.stderr.decode()
    assert "| out 16" in err and "fps" in err  # --progress draws even though stderr is a pipe


# -- errors ------------------------------------------------------------------------------------


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and text in errors[0], err


@pytest.mark.parametrize("data, code, text", [
    (b"\x1aE\xdf\xa3 this is matroska, not a pipe stream", 65, "neither YUV4MPEG2 nor NUT"),
    (b"YUV4MPEG2 W64 H32 F24:1 Ip C444alpha\nFRAME\n", 65, "unsupported YUV4MPEG2 colour space C444alpha"),
    (b"", 65, "stdin is empty"),
])
def test_bad_stdin(data: bytes, code: int, text: str) -> None:
    assert_one_line_error(client(["--local"], data, timeout=60), code, text)


def test_truncated_stream() -> None:
    data = ffmpeg(*source("yuv420p", frames=3))
    assert_one_line_error(client(["--local", "-np", "1"], data[:-500]), 65, "ends inside frame 2")


def test_missing_input_file(tmp_path: Path) -> None:
    proc = client(["-i", str(tmp_path / "nope.mkv"), "-o", str(tmp_path / "out.mkv"), "--local"], b"")
    assert_one_line_error(proc, 2, "input file not found")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to fill the disk")
def test_full_disk_is_a_one_line_output_error() -> None:
    """stdout on a full disk (/dev/full: every write fails with ENOSPC): exit 74, one line, no traceback."""
    data = ffmpeg(*source("yuv420p", frames=3))
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(EXACT_CLIENT + ["--local", "-np", "1", "-fps", "60"], input=data, stdout=full,
                              stderr=subprocess.PIPE, env=ENV, timeout=300)
    assert_one_line_error(proc, 74, "cannot write the output: No space left on device")


def test_downstream_exits_early() -> None:
    """The reader (ffmpeg taking 2 frames) goes away: exit 74 with one line, no traceback."""
    src = source("yuv420p", frames=24)
    up = subprocess.Popen([FFMPEG, "-loglevel", "error", *src], stdout=subprocess.PIPE)
    mid = subprocess.Popen(EXACT_CLIENT + ["-fps", "60", "-np", "1", "--local"], stdin=up.stdout,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    down = subprocess.Popen([FFMPEG, "-loglevel", "error", "-i", "-", "-frames:v", "2", "-f", "null", "-"],
                            stdin=mid.stdout)
    up.stdout.close()
    mid.stdout.close()
    assert down.wait(timeout=300) == 0
    err = mid.stderr.read().decode()
    assert mid.wait(timeout=300) == 74, err
    up.wait(timeout=60)
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.strip().splitlines()[-1] == "mpd-client: error: output closed by the reader (broken pipe)"


def test_a_short_body_after_a_huge_header_allocates_the_body_not_the_frame() -> None:
    """A header announcing 1.6 GB frames and a 1 KB body: the reader's buffer follows the bytes that arrive, and the
    stream is refused as truncated (in-process there is no daemon limit to ask first)."""
    import tracemalloc

    from multipassdedup.client.errors import InputDataError

    data = b"YUV4MPEG2 W16384 H16384 F24:1 Ip C444p16\nFRAME\n" + bytes(1024)
    tracemalloc.start()
    try:
        reader = Y4mReader(io.BytesIO(data))
        assert reader.frame_bytes == 16384 * 16384 * 3 * 2
        with pytest.raises(InputDataError, match=r"ends inside frame 0 \(1024 of 1610612736 bytes\)"):
            reader.read_frame()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20  # the first 1 MiB buffer, not the frame
