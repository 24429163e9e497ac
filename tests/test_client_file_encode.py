"""mpd-client file mode as encoders expect it, through the real command and real files.

Encoders and muxers checked before any work, preview cuts, 10-bit output, choices matched to the
container, -y/-n, interlaced input. Results are read back with PyAV (codec, pixel format, stream
count, durations, start times).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers.commands import ENV, FFMPEG, client, leftovers, script
from multipassdedup.client.errors import UsageError
from multipassdedup.client.file.cut import CutRequest, CutWindow
from multipassdedup.client.file.encoders import nvenc_works
from multipassdedup.client.options import engine_settings, parse_args
from multipassdedup.client.rates import parse_time

FAST = ("-np", "1", "--local")  # one pass, in-process: the engine's work is not what is tested here
ENGINE_STARTED = "running the engine"  # logged when the model is about to load
CHAPTERS = """;FFMETADATA1
[CHAPTER]
TIMEBASE=1/1000
START=0
END=1200
title=Opening
[CHAPTER]
TIMEBASE=1/1000
START=1200
END=3000
title=Part A
"""
SUBTITLES = ("1\n00:00:00,000 --> 00:00:01,500\nA\n\n2\n00:00:01,500 --> 00:00:02,500\nB\n\n"
             "3\n00:00:02,500 --> 00:00:03,000\nC\n\n")


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of 8-bit H.264 at 24 fps (96x64) with AAC, three ASS events (0-1.5, 1.5-2.5, 2.5-3 s), two chapters."""
    folder = tmp_path_factory.mktemp("clip")
    (folder / "chapters.txt").write_text(CHAPTERS)
    (folder / "subs.srt").write_text(SUBTITLES)
    path = folder / "in.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-i", str(folder / "subs.srt"), "-i", str(folder / "chapters.txt"),
           "-map", "0:v", "-map", "1:a", "-map", "2:s", "-map_chapters", "3", "-t", "3",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "ass", str(path))
    return path


@pytest.fixture(scope="module")
def interlaced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 interlaced frames at 25 fps (50 fps motion woven into fields), coded as interlaced H.264."""
    path = tmp_path_factory.mktemp("interlaced") / "il.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=50", "-frames:v", "20",
           "-vf", "tinterlace=mode=interleave_top,setfield=tff", "-c:v", "libx264", "-preset", "ultrafast",
           "-flags", "+ildct+ilme", str(path))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return client([*args, *FAST], text=True)


def packet_list(path: Path, kind: str) -> list[tuple[Fraction, Fraction, bytes]]:
    """(time, duration, payload) of every packet of the first stream of a kind, in seconds."""
    with av.open(str(path)) as c:
        stream = getattr(c.streams, kind)[0]
        return sorted(((p.pts * p.time_base, (p.duration or 0) * p.time_base, bytes(p))
                       for p in c.demux(stream) if p.size and p.pts is not None), key=lambda t: t[0])


def video_facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        frames = list(c.decode(video=0))
        return {"codec": ctx.name, "pix_fmt": ctx.pix_fmt, "profile": ctx.profile, "field_order": ctx.field_order,
                "frames": len(frames), "first": frames[0].time, "rate": v.average_rate,
                "streams": {s.type: sum(1 for t in c.streams if t.type == s.type) for s in c.streams}}


def rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24").astype(np.int16)


# -- 1. an encoder or muxer that cannot open: usage error, libav's reason, nothing done ---------

CANNOT_OPEN = [
    (["--preset", "nosuch"], "out.mkv", "cannot open the libx264 encoder: Error setting preset/tune nosuch"),
    (["--encoder-opt", "nosuch=1"], "out.mkv", "libx264 has no option nosuch (from --encoder-opt)"),
    (["--crf", "99"], "out.mkv", "--crf 99 is outside libx264's scale (0 to 51)"),
    (["-c", "ffv1", "--crf", "3"], "out.mkv", "ffv1 has no option crf (from --crf)"),
    (["-c", "libx264"], "out.y4m", "cannot write libx264 video into yuv4mpegpipe (out.y4m): ERROR: Codec not supported"),
    (["-c", "libx264"], "out.webm", "webm cannot hold libx264 video; leave out -c for its default (libvpx-vp9)"),
    (["--pix-fmt", "yuv420p12le"], "out.mkv", "libx264 cannot encode yuv420p12le"),
]


@pytest.mark.parametrize("flags,name,reason", CANNOT_OPEN, ids=[" ".join(c[0]) + " " + c[1] for c in CANNOT_OPEN])
def test_wrong_encoder_choice_is_a_usage_error_before_any_work(clip: Path, tmp_path: Path, flags: list[str],
                                                               name: str, reason: str) -> None:
    dst = tmp_path / name
    proc = run("-i", str(clip), "-o", str(dst), *flags)
    assert proc.returncode == 2, proc.stderr
    assert f"mpd-client: error: {reason}" in proc.stderr
    assert ENGINE_STARTED not in proc.stderr  # refused before the model loaded or a frame was decoded
    assert "Traceback" not in proc.stderr and not dst.exists() and leftovers(tmp_path) == []


def test_encoder_the_machine_lacks_is_a_usage_error(clip: Path, tmp_path: Path) -> None:
    if nvenc_works("h264_nvenc") is None:
        pytest.skip("this machine has NVENC")
    proc = run("-i", str(clip), "-o", str(tmp_path / "out.mkv"), "-c", "h264_nvenc")
    assert proc.returncode == 2, proc.stderr
    assert "cannot open the h264_nvenc encoder: " in proc.stderr and ENGINE_STARTED not in proc.stderr


@pytest.mark.skipif("libsvtav1" not in av.codecs_available, reason="PyAV's libav lacks SVT-AV1")
def test_value_out_of_the_encoders_range_names_the_range(clip: Path, tmp_path: Path) -> None:
    proc = run("-i", str(clip), "-o", str(tmp_path / "out.mkv"), "-c", "libsvtav1", "--crf", "99")
    assert proc.returncode == 2
    assert "Value 99.000000 for parameter 'crf' out of range [0 - 63]" in proc.stderr


def test_mpd_watch_fails_the_file_with_the_encoders_reason(clip: Path, tmp_path: Path) -> None:
    """Exit 2 is permanent for mpd-watch: the file goes to failed/ at once, its .log says why."""
    from helpers.watching import DropFolder

    drop = DropFolder(tmp_path)
    shutil.copy(clip, drop.inbox / "episode.mkv")
    watcher = drop.start("--local", "--once", "--max-attempts", "3", "--", "--preset", "nosuch", client=None,
                         settle=0.2)
    assert watcher.wait(timeout=300) == 1  # --once: a job failed
    report = (drop.inbox / "failed" / "episode.mkv.log").read_text()
    assert "usage error" in report and "Error setting preset/tune nosuch" in report
    assert "attempts used: 1" in report and "last exit code: 2" in report
    assert [j.state.value for j in drop.jobs()] == ["failed"]


# -- 2. preview: -ss, -to, --frames cut every stream alike ---------------------------------------

def test_cut_gives_one_second_of_every_stream_in_sync(clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "cut.mkv"
    proc = run("-i", str(clip), "-o", str(dst), "-ss", "1", "-to", "2", "-fps", "60", "--preset", "ultrafast")
    assert proc.returncode == 0, proc.stderr
    facts = video_facts(dst)
    assert facts["frames"] == 60 and facts["first"] == 0  # 24 input frames -> one second at 60 fps, from 0
    video = packet_list(dst, "video")
    assert abs(video[-1][0] + video[-1][1] - 1) <= Fraction(2, 1000)  # Matroska keeps milliseconds

    # Audio: exactly the input's packets from 1 s to 2 s, each moved 1 s earlier (copied, not re-encoded).
    src_audio = [(t - 1, d, data) for t, d, data in packet_list(clip, "audio") if 1 <= t < 2]
    assert [(t, data) for t, _, data in packet_list(dst, "audio")] == [(t, data) for t, _, data in src_audio]
    aac_frame = Fraction(1024, 48000)
    assert 0 <= src_audio[0][0] < aac_frame and 1 - aac_frame <= src_audio[-1][0] < 1  # a second of it

    # Subtitles: events clipped to the cut; chapters too (ffmpeg keeps the ones overlapping it).
    subs = [(t, d, data.decode().rsplit(",", 1)[1]) for t, d, data in packet_list(dst, "subtitles")]
    assert subs == [(0, Fraction(1, 2), "A"), (Fraction(1, 2), Fraction(1, 2), "B")]
    with av.open(str(dst)) as c:
        chapters = [(ch["start"] * ch["time_base"], ch["end"] * ch["time_base"], ch["metadata"]["title"])
                    for ch in c.chapters()]
    assert chapters == [(0, Fraction(1, 5), "Opening"), (Fraction(1, 5), 1, "Part A")]

    # The first output frame is the input frame at 1 s (frame 24), not a neighbour.
    with av.open(str(clip)) as c:
        source = [rgb(f) for i, f in enumerate(c.decode(video=0)) if 23 <= i <= 25]
    with av.open(str(dst)) as c:
        first = rgb(next(c.decode(video=0)))
    errors = [float(np.abs(first - s).mean()) for s in source]
    assert errors.index(min(errors)) == 1, errors


def test_cut_far_into_the_file_seeks_and_stays_in_sync(tmp_path: Path) -> None:
    """-ss beyond the seek margin: read from a keyframe before it, not from the start; nothing lost at the cut."""
    src = tmp_path / "long.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=24", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
           "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-g", "24", "-c:a", "aac", str(src))
    dst = tmp_path / "cut.mkv"
    proc = run("-i", str(src), "-o", str(dst), "-ss", "6", "-to", "6.5", "-fps", "60", "--preset", "ultrafast", "-v")
    assert proc.returncode == 0, proc.stderr
    assert "reading from the keyframe before 4.000 s" in proc.stderr
    assert video_facts(dst)["frames"] == 30
    src_audio = [(t - 6, data) for t, _, data in packet_list(src, "audio") if 6 <= t < Fraction(13, 2)]
    assert [(t, data) for t, _, data in packet_list(dst, "audio")] == src_audio
    with av.open(str(src)) as c:
        source = [rgb(f) for i, f in enumerate(c.decode(video=0)) if 143 <= i <= 145]
    with av.open(str(dst)) as c:
        first = rgb(next(c.decode(video=0)))
    errors = [float(np.abs(first - s).mean()) for s in source]
    assert errors.index(min(errors)) == 1, errors  # input frame 144, at 6 s


def test_frames_limit_in_ffmpegs_spelling_cuts_audio_too(clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "ten.mkv"
    proc = run("-i", str(clip), "-o", str(dst), "-ss", "0.5", "-frames:v", "10", "-fps", "60", "--preset",
               "ultrafast")
    assert proc.returncode == 0, proc.stderr
    assert video_facts(dst)["frames"] == 10
    audio = packet_list(dst, "audio")
    end = Fraction(10, 60)  # the audio stops with the video: packets starting before its end
    aac_frame = Fraction(1024, 48000)
    assert audio[0][0] < aac_frame and audio[-1][0] < end <= audio[-1][0] + aac_frame + Fraction(1, 1000)
    assert packet_list(dst, "subtitles") == [(0, Fraction(round(end * 1000), 1000), b"0,0,Default,,0,0,0,,A")]


def test_cut_outside_the_input_is_a_usage_error(clip: Path, tmp_path: Path) -> None:
    late = run("-i", str(clip), "-o", str(tmp_path / "a.mkv"), "-ss", "5")
    assert late.returncode == 2 and "at or after the end of the input" in late.stderr
    backwards = run("-i", str(clip), "-o", str(tmp_path / "b.mkv"), "-ss", "2", "-to", "1")
    assert backwards.returncode == 2 and "-to 1 must come after -ss 2" in backwards.stderr
    assert ENGINE_STARTED not in late.stderr + backwards.stderr and leftovers(tmp_path) == []


def test_cut_flags_parse_as_ffmpeg_users_type_them() -> None:
    args = parse_args(["-i", "a.mkv", "-o", "b.mkv", "-frames:v", "10", "-ss", "1:02.5", "-to", "90", "-y"])
    assert (args.cut_frames, args.container_format, args.cut_start, args.cut_end) == (10, None, Fraction(125, 2), 90)
    assert args.overwrite == "always" and args.times is None
    assert parse_args(["-i", "a", "-o", "b", "-vframes", "3", "-n"]).cut_frames == 3
    assert parse_args(["-i", "a", "-o", "b", "--audio-codec", "copy"]).audio_codec is None
    assert engine_settings(parse_args(["-i", "a", "-o", "b", "--frames", "3", "-t", "2.5"])).times == Fraction(5, 2)  # a rate
    for argv in (["-ss", "1"], ["--frames", "2"], ["-y"], ["--deinterlace"], ["-i", "a", "-o", "b", "-y", "-n"],
                 ["-i", "a", "-o", "b", "-ss", "-1"], ["-i", "a", "-o", "b", "--audio-bitrate", "128k"]):
        with pytest.raises(UsageError):
            parse_args(argv)


def test_parse_time_takes_ffmpegs_forms() -> None:
    assert parse_time("90") == 90 and parse_time("1.5") == Fraction(3, 2) and parse_time("01:30") == 90
    assert parse_time("1:02:03.5") == 3723 + Fraction(1, 2)
    for bad in ("-1", "1:60", "abc", "1e3", ""):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_cut_window_clips_events_and_chapters() -> None:
    window = CutWindow(CutRequest(start=Fraction(1), end=Fraction(2)), input_start=Fraction(1, 2))
    assert (window.origin, window.start, window.end) == (Fraction(3, 2), Fraction(3, 2), Fraction(5, 2))
    assert window.clip_event(Fraction(1), Fraction(1)) == (Fraction(3, 2), Fraction(1, 2))  # starts before
    assert window.clip_event(Fraction(2), Fraction(2)) == (Fraction(2), Fraction(1, 2))  # ends after
    assert window.clip_event(Fraction(3), Fraction(1)) is None and window.clip_event(Fraction(0), Fraction(1)) is None
    chapters = [{"start": 0, "end": 2000, "time_base": Fraction(1, 1000), "metadata": {"title": "x"}},
                {"start": 2000, "end": 9000, "time_base": Fraction(1, 1000), "metadata": {"title": "y"}},
                {"start": 9000, "end": 9500, "time_base": Fraction(1, 1000), "metadata": {"title": "z"}}]
    assert [(c["start"], c["end"]) for c in window.chapters(chapters)] == [(0, 500), (500, 1000)]
    frames = CutWindow(CutRequest(frames=10), input_start=Fraction(0))
    assert not frames.end_known
    assert frames.settle_frames(Fraction(1, 100), Fraction(60)) == 1 and frames.end_known  # 0.6 frame in
    assert frames.frame_limit == 11 and frames.end == Fraction(11, 60)


# -- 3. 10-bit output from an 8-bit source -------------------------------------------------------

@pytest.mark.parametrize("flags", [["--encoder-opt", "profile=main10"], ["--pix-fmt", "yuv420p10le"]],
                         ids=["profile=main10", "--pix-fmt"])
def test_eight_bit_source_to_x265_main10(clip: Path, tmp_path: Path, flags: list[str]) -> None:
    dst = tmp_path / "ten.mkv"
    proc = run("-i", str(clip), "-o", str(dst), "-c", "libx265", "--preset", "ultrafast", "--frames", "6", *flags)
    assert proc.returncode == 0, proc.stderr
    facts = video_facts(dst)
    assert (facts["codec"], facts["pix_fmt"], facts["profile"], facts["frames"]) == ("hevc", "yuv420p10le", "Main 10", 6)
    with av.open(str(clip)) as a, av.open(str(dst)) as b:
        src, out = next(a.decode(video=0)), next(b.decode(video=0))
    assert out.format.name == "yuv420p10le"
    # The same picture, compared as YUV (planes stacked as PyAV returns them: Y, then U and V):
    # colours converted once with the right matrix and range, in 10 bits rather than 8 shifted.
    before, after = src.to_ndarray().astype(np.float64), out.to_ndarray()
    assert after.dtype == np.uint16 and np.any(after % 4)
    height = src.height
    assert float(np.abs(before[:height] - after[:height] / 4).mean()) < 3  # luma, 8-bit steps
    assert float(np.abs(before[height:] - after[height:] / 4).mean()) < 5  # chroma


# -- 4. choices matched to the container -----------------------------------------------------------

def test_hevc_in_mp4_is_tagged_hvc1_as_players_expect(clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "hevc.mp4"
    proc = run("-i", str(clip), "-o", str(dst), "-c", "libx265", "--preset", "ultrafast", "--frames", "3")
    assert proc.returncode == 0, proc.stderr
    with av.open(str(dst)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.name, ctx.codec_tag) == ("hevc", "hvc1")  # libav's default was hev1, which Apple's players refuse


def test_webm_gets_vp9_and_says_what_happens_to_the_audio(clip: Path, tmp_path: Path) -> None:
    fast_vp9 = ("--encoder-opt", "deadline=realtime", "--encoder-opt", "cpu-used=8", "--frames", "6")
    dropped = run("-i", str(clip), "-o", str(tmp_path / "a.webm"), *fast_vp9)
    assert dropped.returncode == 0, dropped.stderr
    assert "leaving out audio stream #1 (aac): webm cannot hold aac; --audio-codec libopus re-encodes it" \
        in dropped.stderr
    assert "leaving out subtitle stream #2" in dropped.stderr
    facts = video_facts(tmp_path / "a.webm")
    assert facts["codec"] == "vp9" and facts["streams"] == {"video": 1}

    kept = run("-i", str(clip), "-o", str(tmp_path / "b.webm"), "--audio-codec", "libopus", "--audio-bitrate", "48k",
               "-ss", "1", *fast_vp9)
    assert kept.returncode == 0, kept.stderr
    with av.open(str(tmp_path / "b.webm")) as c:
        assert [s.codec_context.name for s in c.streams] == ["vp9", "opus"]
        audio = c.streams.audio[0]
        assert audio.codec_context.sample_rate == 48000
        samples = sum(f.samples for f in c.decode(audio))
    assert abs(samples / 48000 - 6 / 60) < 0.05  # re-encoded, cut like the video (to a 20 ms frame)


def test_audio_codec_reencodes_into_matroska(clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "flac.mkv"
    proc = run("-i", str(clip), "-o", str(dst), "--audio-codec", "flac", "--preset", "ultrafast", "--frames", "12")
    assert proc.returncode == 0, proc.stderr
    with av.open(str(dst)) as c:
        assert [s.codec_context.name for s in c.streams] == ["h264", "flac", "ssa"]
    wrong = run("-i", str(clip), "-o", str(tmp_path / "x.mkv"), "--audio-codec", "libx264")
    assert wrong.returncode == 2 and "libx264 is a video encoder" in wrong.stderr


# -- 5. an existing output: -y, -n, a prompt on a terminal, refusal elsewhere --------------------

def test_existing_output_is_not_replaced_without_leave(clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.mkv"
    dst.write_bytes(b"precious")
    for flags in ([], ["-n"]):
        proc = run("-i", str(clip), "-o", str(dst), *flags)
        assert proc.returncode == 73, proc.stderr
        assert "exists" in proc.stderr and ENGINE_STARTED not in proc.stderr
        assert dst.read_bytes() == b"precious" and leftovers(tmp_path) == []
    replaced = run("-i", str(clip), "-o", str(dst), "-y", "--frames", "3", "--preset", "ultrafast")
    assert replaced.returncode == 0, replaced.stderr
    assert video_facts(dst)["frames"] == 3


def prompted(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run mpd-client with a terminal on stdin, answer its question; (exit code, stderr)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(script("mpd-client") + argv, stdin=terminal, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=ENV)
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 60
    while b"Overwrite?" not in seen and time.monotonic() < deadline:  # the question is echoed on the terminal
        if select.select([proc.stderr], [], [], 0.5)[0]:
            seen += os.read(proc.stderr.fileno(), 1024)
    os.write(controller, answer)
    _, err = proc.communicate(timeout=300)
    os.close(controller)
    return proc.returncode, (seen + err).decode()


def test_existing_output_asks_on_a_terminal(clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.mkv"
    dst.write_bytes(b"precious")
    argv = ["-i", str(clip), "-o", str(dst), "--frames", "3", "--preset", "ultrafast", *FAST]
    code, err = prompted(argv, b"n\n")
    assert code == 73 and f"{dst} exists. Overwrite? [y/N]" in err and "not overwriting" in err
    assert dst.read_bytes() == b"precious"
    code, err = prompted(argv, b"y\n")
    assert code == 0, err
    assert video_facts(dst)["frames"] == 3 and leftovers(tmp_path) == []


# -- 6. interlaced input -----------------------------------------------------------------------------

def combing(frame: av.VideoFrame) -> float:
    """How much odd lines differ from the average of their neighbours (woven fields of a moving picture)."""
    y = frame.to_ndarray(format="gray").astype(np.float64)
    return float(np.abs(y[1:-1:2] - (y[0:-2:2] + y[2::2]) / 2).mean())


def test_interlaced_input_warns_or_is_deinterlaced_by_frame_or_by_field(interlaced: Path, tmp_path: Path) -> None:
    woven, clean, fields = tmp_path / "woven.mkv", tmp_path / "clean.mkv", tmp_path / "fields.mkv"
    proc = run("-i", str(interlaced), "-o", str(woven), "-fps", "50", "--preset", "ultrafast")
    assert proc.returncode == 0, proc.stderr
    assert "the input is interlaced" in proc.stderr and "--deinterlace" in proc.stderr
    with av.open(str(interlaced)) as c:
        source_order = c.streams.video[0].codec_context.field_order
    assert source_order in (2, 3, 4, 5)
    # Interpolated frames at a new rate are not the input's fields shown in turn: the output is progressive (it
    # kept the input's "top coded first" tag, and players then deinterlaced interpolated frames).
    assert video_facts(woven)["field_order"] == 1

    proc = run("-i", str(interlaced), "-o", str(clean), "-fps", "50", "--preset", "ultrafast", "--deinterlace")
    assert proc.returncode == 0, proc.stderr
    assert "the input is interlaced" not in proc.stderr and "bwdif" in proc.stderr
    facts = video_facts(clean)
    assert facts["field_order"] == 1 and facts["frames"] == video_facts(woven)["frames"] == 40  # a frame per frame
    with av.open(str(woven)) as a, av.open(str(clean)) as b:
        assert combing(next(b.decode(video=0))) < 0.5 * combing(next(a.decode(video=0)))

    # bwdif's send_field: a frame per field, 50 fps to the interpolation (20 frames, 40 fields), 100 fps out.
    proc = run("-i", str(interlaced), "-o", str(fields), "-fps", "100", "--preset", "ultrafast",
               "--deinterlace", "field")
    assert proc.returncode == 0, proc.stderr
    assert "a frame per field: 25 fps in, 50 fps to the interpolation" in proc.stderr
    facts = video_facts(fields)
    assert facts["field_order"] == 1 and facts["frames"] == 80 and facts["rate"] == 100
    with av.open(str(woven)) as a, av.open(str(fields)) as b:
        assert combing(next(b.decode(video=0))) < 0.5 * combing(next(a.decode(video=0)))
