"""mpd-client's parts without the model: Y4M, colour conversion, stdin sniffing, cadence, flags, exit codes."""

from __future__ import annotations

import io
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from helpers.commands import FFMPEG
from helpers.frames import FILM
from multipassdedup.client.engine import output_frames_for
from multipassdedup.client.errors import ExitCode, InputDataError, UsageError
from multipassdedup.client.file.encoders import EncodeOptions, choose_encoder, pick_pix_fmt
from multipassdedup.client.media.cadence import CfrResampler, ConstantRateGuard, is_constant_rate
from multipassdedup.client.media.colour import ColourSpec, PlanarConverter, matrix_for
from multipassdedup.client.options import engine_settings, parse_args, placement
from multipassdedup.client.pipe.sniff import sniff
from multipassdedup.client.pipe.y4m import Y4mHeader, Y4mReader, Y4mWriter, plane_layout
from multipassdedup.client.progress import Progress
from multipassdedup.client.rates import format_rational, parse_rational


def ffmpeg_y4m(pix_fmt: str, frames: int = 2, size: str = "130x66", extra: str = "") -> bytes:
    """A real YUV4MPEG2 stream from ffmpeg (odd sizes on purpose: chroma planes round up)."""
    src = f"testsrc2=size={size}:rate=24000/1001,format=rgb24{extra}"
    return subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", src, "-frames:v", str(frames),
                           "-pix_fmt", pix_fmt, "-strict", "-1", "-f", "yuv4mpegpipe", "-"],
                          check=True, capture_output=True).stdout


# -- rates and flags ---------------------------------------------------------------------------


def test_rationals_are_exact() -> None:
    assert parse_rational("60000/1001") == Fraction(60000, 1001)
    assert parse_rational("60000:1001") == Fraction(60000, 1001)
    assert parse_rational("2.5") == Fraction(5, 2)
    assert parse_rational("59.94") == Fraction(2997, 50)  # decimals taken literally
    assert format_rational(Fraction(60000, 1001)) == "60000/1001"
    assert format_rational(Fraction(60)) == "60"
    for bad in ("0", "-24", "abc", "1/0"):
        with pytest.raises(ValueError):
            parse_rational(bad)


def test_original_flags_parse() -> None:
    args = parse_args(["-i", "a.mkv", "-o", "b.mkv", "-m", "rife", "-np", "3", "-fps", "60000/1001", "-s",
                       "-st", "0.25", "-scale", "0.5", "-hw"])
    s = engine_settings(args)
    assert (s.model, s.n_pass, s.dst_fps, s.times, s.scdet, s.scdet_threshold, s.scale) == \
        ("rife", 3, Fraction(60000, 1001), None, True, 0.25, 0.5)
    assert args.hwaccel and s.compensate_delay
    assert parse_args(["-nf", "2"]).n_pass == 2
    t = engine_settings(parse_args(["-t", "2.5", "--no-scdet", "--no-compensate-delay"]))
    assert (t.times, t.dst_fps, t.scdet, t.compensate_delay) == (Fraction(5, 2), None, False, False)
    assert FILM * t.times == Fraction(60000, 1001)
    assert engine_settings(parse_args([])).dst_fps == 60
    assert placement(parse_args([])).threads is None
    assert placement(parse_args(["--local", "--threads", "1"])).threads == 1


@pytest.mark.parametrize("argv", [
    ["-fps", "60", "-t", "2"], ["-fps", "abc"], ["-i", "a.mkv"], ["--server", "x:1", "--local"],
    ["-t", "1"], ["-np", "-1"], ["-scale", "0.3"], ["--bogus"], ["--raw", "12by3"], ["--threads", "0"],
])
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(UsageError) as e:
        parse_args(argv)
    assert e.value.exit_code == ExitCode.USAGE == 2


def test_exit_code_contract() -> None:
    assert {c.name: int(c) for c in ExitCode} == {"OK": 0, "FAILURE": 1, "USAGE": 2, "DATA_ERROR": 65,
                                                 "UNAVAILABLE": 69, "CANT_CREATE": 73, "OUTPUT_ERROR": 74,
                                                 "TEMPORARY": 75, "INTERRUPTED": 130}


def test_output_frames_cover_the_input_duration() -> None:
    assert output_frames_for(8, FILM, Fraction(60)) == 21  # ceil(8 * 2.5025)
    assert output_frames_for(10, Fraction(24), Fraction(60)) == 25
    assert output_frames_for(0, FILM, Fraction(60)) == 0


# -- Y4M ---------------------------------------------------------------------------------------


def test_header_parse_and_rate_change() -> None:
    h = Y4mHeader.parse(b"YUV4MPEG2 W130 H66 F24000:1001 Ip A1:1 C420p10 XYSCSS=420P10 XCOLORRANGE=FULL\n")
    assert (h.width, h.height, h.rate, h.pix_fmt, h.color_range) == (130, 66, FILM, "yuv420p10le", "FULL")
    out = h.with_rate(Fraction(60000, 1001)).encode()
    assert out == b"YUV4MPEG2 W130 H66 F60000:1001 Ip A1:1 C420p10 XYSCSS=420P10 XCOLORRANGE=FULL\n"
    assert h.with_rate(Fraction(60)).encode().split()[3] == b"F60:1"
    assert plane_layout("yuv420p10le", 130, 66).planes == [(130, 66), (65, 33), (65, 33)]
    assert plane_layout("yuv422p", 131, 5).frame_bytes == 131 * 5 + 2 * 66 * 5


@pytest.mark.parametrize("line, message", [
    (b"YUV4MPEG2 W64 H32 F24:1 C444alpha\n", "unsupported YUV4MPEG2 colour space"),
    (b"YUV4MPEG2 H32 F24:1\n", "bad YUV4MPEG2 header"),
    (b"YUV4MPEG2 W64 H32 F24:0\n", "bad YUV4MPEG2 header"),
])
def test_bad_headers(line: bytes, message: str) -> None:
    with pytest.raises(InputDataError, match=message):
        Y4mReader(io.BytesIO(line))


def test_truncated_stream_is_bad_input() -> None:
    data = ffmpeg_y4m("yuv420p", frames=2)
    reader = Y4mReader(io.BytesIO(data[:-100]))
    assert reader.read_frame() is not None
    with pytest.raises(InputDataError, match="ends inside frame 1"):
        reader.read_frame()
    with pytest.raises(InputDataError, match="no FRAME marker"):
        list(Y4mReader(io.BytesIO(data.replace(b"FRAME", b"FRAMX", 2))))


# Round-trip PSNR floors on testsrc2 (measured 39.5-43 dB where chroma is subsampled: its sharp
# coloured edges do not survive 4:2:0 -> RGB -> 4:2:0; 73 dB and up for 4:4:4; grey is exact).
@pytest.mark.parametrize("pix_fmt, min_db", [
    ("yuv420p", 38), ("yuv420p10le", 38), ("yuv422p", 38), ("yuv422p10le", 38), ("yuv444p", 70),
    ("yuv444p10le", 80), ("yuv420p12le", 38), ("gray", 150), ("yuvj420p", 38),
])
def test_y4m_through_rgb_and_back(pix_fmt: str, min_db: float) -> None:
    """Every layout converts to RGB of the right depth and back, and ffmpeg reads what we write."""
    data = ffmpeg_y4m(pix_fmt, frames=2)
    reader = Y4mReader(io.BytesIO(data))
    h = reader.header
    conv = PlanarConverter(h.pix_fmt, h.width, h.height, h.layout.sample_bytes,
                           ColourSpec("bt601", h.color_range == "FULL"), remember=0)
    out = io.BytesIO()
    writer = Y4mWriter(out, h.with_rate(h.rate * 2))
    for frame in reader:
        rgb = conv.to_rgb(frame)
        assert rgb.shape == (66, 130, 3)
        assert rgb.dtype == (np.uint16 if h.layout.sample_bytes == 2 else np.uint8)
        back = conv.from_rgb(rgb)
        a = np.frombuffer(frame, conv.sample_dtype).astype(np.int64)
        b = np.frombuffer(back, conv.sample_dtype).astype(np.int64)
        peak = 255 if h.layout.sample_bytes == 1 else (1 << int(pix_fmt[7:9])) - 1
        mse = float(((a - b) ** 2).mean())
        assert 10 * np.log10(peak ** 2 / max(mse, 1e-18)) >= min_db
        writer.write_frame(back)
    # ffmpeg reads our stream back with the same layout at the new rate
    probe = subprocess.run([FFMPEG, "-hide_banner", "-i", "-", "-f", "null", "-"], input=out.getvalue(),
                           capture_output=True)
    assert probe.returncode == 0, probe.stderr[-500:]
    info = probe.stderr.decode()
    assert "48000/1001" in info or "47.95 fps" in info
    assert ("yuv420p(pc" if pix_fmt == "yuvj420p" else pix_fmt) in info  # full range survives as a tag


def test_copies_pass_through_bit_exact() -> None:
    data = ffmpeg_y4m("yuv420p", frames=3)
    reader = Y4mReader(io.BytesIO(data))
    h = reader.header
    conv = PlanarConverter(h.pix_fmt, h.width, h.height, 1, ColourSpec("bt601"))
    frames = list(reader)
    rgbs = [conv.to_rgb(f) for f in frames]
    assert conv.from_rgb(rgbs[0].copy()) == frames[0]
    assert conv.passed_through == 1
    assert conv.from_rgb(rgbs[0] // 2 + rgbs[1] // 2) not in frames


def test_matrix_choice() -> None:
    assert matrix_for("auto", 1920, 1080) == "bt709"
    assert matrix_for("auto", 640, 480) == "bt601"
    assert matrix_for("auto", 640, 480, stream_colorspace=1) == "bt709"  # the stream's own tag wins
    assert matrix_for("bt2020", 640, 480, stream_colorspace=1) == "bt2020"  # and --matrix beats both


# -- stdin sniffing ----------------------------------------------------------------------------


def test_sniff_keeps_every_byte() -> None:
    data = ffmpeg_y4m("yuv420p", frames=1)
    kind, stream = sniff(io.BytesIO(data))
    assert kind == "y4m"
    assert stream.readline(4096) + stream.read() == data
    kind, stream = sniff(io.BytesIO(b"nut/multimedia container\x00rest"))
    assert kind == "nut" and stream.read(3) == b"nut" and stream.read() == b"/multimedia container\x00rest"
    with pytest.raises(InputDataError, match="neither YUV4MPEG2 nor NUT"):
        sniff(io.BytesIO(b"\x1aE\xdf\xa3 matroska..."))
    with pytest.raises(InputDataError, match="stdin is empty"):
        sniff(io.BytesIO(b""))


# -- constant and variable rates ---------------------------------------------------------------


def test_constant_rate_guard() -> None:
    guard = ConstantRateGuard(FILM)
    for i in range(5):
        guard.check(Fraction(round(i * 1001 / 24), 1000) + 7)  # Matroska's 1 ms rounding, any start
    with pytest.raises(InputDataError, match="--cfr"):
        guard.check(Fraction(7) + Fraction(7 * 1001, 24000))  # frame 5 missing: frame 6's time
    assert is_constant_rate([Fraction(i, 24) for i in (0, 2, 1, 3)], Fraction(24))  # B-frame order is fine
    assert not is_constant_rate([Fraction(i, 24) for i in (0, 1, 2, 4, 5)], Fraction(24))
    assert not is_constant_rate([Fraction(i, 48) for i in range(8)], Fraction(24))


def test_cfr_resampler_drops_and_repeats() -> None:
    r: CfrResampler[str] = CfrResampler(Fraction(10))
    times = {"a": 0, "b": Fraction(1, 10), "c": Fraction(12, 100), "d": Fraction(4, 10), "e": Fraction(5, 10)}
    out = []
    for name, t in times.items():
        out += r.push(name, Fraction(t) + 3)
    out += r.flush()
    # b and c land in the same slot (the later one wins); slots 2 and 3 repeat c until d
    assert out == ["a", "c", "c", "c", "d", "e"]
    assert (r.dropped, r.repeated) == (1, 2)


# -- progress ----------------------------------------------------------------------------------


def test_progress_line() -> None:
    stream = io.StringIO()
    p = Progress(True, total_out=100, stream=stream)
    p.started -= 10  # ten seconds in
    p.update(20, 50)
    p.update(21, 52)  # within the log interval: not drawn
    p.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in stream.getvalue()  # not a terminal: whole lines
    assert lines[0].startswith("in 20 | out 50/100 (50%) | 5.00 fps | 0:00:10 | ETA 0:00:10")
    assert lines[1].startswith("in 21 | out 52/100 (52%)")
    silent = io.StringIO()
    q = Progress(False, stream=silent)
    q.update(1, 2)
    q.close()
    assert silent.getvalue() == ""


# -- encoder choice ----------------------------------------------------------------------------


def test_encoder_keeps_depth_and_layout() -> None:
    assert pick_pix_fmt("libx264", "yuv420p10le") == "yuv420p10le"
    assert pick_pix_fmt("libx264", "yuv422p") == "yuv422p"
    assert pick_pix_fmt("libx265", "yuv444p12le") == "yuv444p10le"
    assert pick_pix_fmt("libx264", "yuv420p") == "yuv420p"
    assert pick_pix_fmt("libsvtav1", "yuv444p10le") == "yuv420p10le"  # falls back to 4:2:0, keeps 10-bit
    c = choose_encoder(EncodeOptions("libx264", crf=16, preset="fast", extra={"g": "48"}), "yuv420p")
    assert c.options == {"crf": "16", "preset": "fast", "tune": "animation", "g": "48"}
    with pytest.raises(UsageError, match="unknown video encoder"):
        choose_encoder(EncodeOptions("nosuchcodec"), "yuv420p")


def test_hw_without_nvenc_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    """This machine has no NVIDIA GPU: -hw says so and encodes on the CPU."""
    import logging

    logging.getLogger("multipassdedup.client").propagate = True
    with caplog.at_level(logging.WARNING, logger="multipassdedup.client"):
        c = choose_encoder(EncodeOptions("libx264", hwaccel=True), "yuv420p")
    assert c.codec == "libx264"
    assert "NVENC" in caplog.text and "not available" in caplog.text
