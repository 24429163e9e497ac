"""``--jobs`` on the files users have: H.264 with B-frames and HEVC sources, the default encoder of .mkv and .mp4
(x264 with B-frames), AAC audio and subtitles -- in-process and over real daemons. The joined file must be one
session's: the same frames (compared exactly through lossless x265, which keeps its B-frames where lossless x264
drops them; the lossy default encoder within its loss), the same container and stream durations (within a frame),
the audio copied in sync; a busy daemon is waited for, a chunk that fails for good ends the job with one line
naming its daemon, and stop signals end it at any moment without a partial output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
from av.video.frame import PictureType

from helpers.frames import panning_shot, psnr
from helpers.waiting import wait_until
from multipassdedup.client.chunks.plan import plan_chunks, spread_cuts
from multipassdedup.client.chunks.recording import ChunkFile, PacketEntry, join_delay, joined_packets
from multipassdedup.client.main import main
from multipassdedup.client.remote.session import RemoteEngine
from multipassdedup.daemon.limits import Limits
from multipassdedup.daemon.server import DaemonOptions, DaemonServer

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FILM = Fraction(24000, 1001)
OUT_FPS = 60
STEP = Fraction(1, OUT_FPS)
H, W = 36, 64
SHOTS = ((5, 1, 2), (6, 2, 3), (5, 3, 1))  # (frames, seed, pan step): three shots, two cuts
SUBTITLES = "1\n00:00:00,000 --> 00:00:00,300\nA\n\n2\n00:00:00,300 --> 00:00:00,600\nB\n\n"
# The passes (cheaper than adaptive re-timing, split alike at cuts), in fp32, the exact mode the daemons serve.
ENGINE = ["-np", "2", "-fps", str(OUT_FPS), "--precision", "fp32"]
LOSSLESS = ["-c", "libx265", "--encoder-opt", "x265-params=log-level=error:lossless=1"]


def shot(n: int, seed: int, step: int) -> list[np.ndarray]:
    """A textured pattern panning ``step`` px a frame with a square moving on twos: one shot to the SSIM test."""
    return panning_shot(n, seed, step, H, W, square=8, top=14, start=4, advance=3)


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-loglevel", "error", "-y", *args], check=True)


def make_source(folder: Path, name: str, shots: tuple = SHOTS, hevc: bool = False) -> Path:
    """The shots as a user's file: H.264 (x264's defaults: B-frames) in .mkv with AAC and SRT subtitles, or HEVC
    (x265) in .mp4 with AAC and mov_text, both at CRF 20."""
    frames = [f for s in shots for f in shot(*s)]
    lossless = folder / f"{name}.nut"
    with av.open(str(lossless), "w") as c:
        stream = c.add_stream("ffv1", rate=FILM)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    (folder / "subs.srt").write_text(SUBTITLES)
    seconds = f"{float(len(frames) / FILM):.4f}"
    video = ["-c:v", "libx265", "-x265-params", "log-level=error", "-tag:v", "hvc1"] if hevc else ["-c:v", "libx264"]
    path = folder / (f"{name}.mp4" if hevc else f"{name}.mkv")
    ffmpeg("-i", str(lossless), "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
           "-i", str(folder / "subs.srt"), "-map", "0:v", "-map", "1:a", "-map", "2:s", *video, "-crf", "20",
           "-c:a", "aac", "-b:a", "64k", "-c:s", "mov_text" if hevc else "srt", str(path))
    lossless.unlink()
    return path


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def has_b_frames(path: Path) -> bool:
    with av.open(str(path)) as c:
        return any(f.pict_type == PictureType.B for f in c.decode(video=0))


def timing(path: Path) -> dict[str, Fraction]:
    """The container's duration and each stream's (Matroska: the muxer's DURATION tags), the first video and audio
    timestamps, in seconds."""
    with av.open(str(path)) as c:
        out = {"container": Fraction(c.duration, av.time_base)}
        for s in c.streams:  # Matroska's tag first: libav estimates a stream duration it does not know
            if "DURATION" in s.metadata:
                h, m, sec = s.metadata["DURATION"].split(":")
                out[s.type] = Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
            elif s.duration:
                out[s.type] = s.duration * s.time_base
        for kind in ("video", "audio"):
            first = next(p for p in c.demux(getattr(c.streams, kind)[0]) if p.size)
            out[f"{kind} start"] = first.pts * first.time_base
    return out


def same_timing(a: dict[str, Fraction], b: dict[str, Fraction]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= STEP for k in a)


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def stream_types(path: Path) -> list[str]:
    with av.open(str(path)) as c:
        return [s.type for s in c.streams]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or ".chunks." in p.name)


def client(*args: str) -> int:
    return main(["-q", "-y", *ENGINE, *args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def h264(folder) -> Path:
    path = make_source(folder, "h264")
    assert has_b_frames(path)
    return path


@pytest.fixture(scope="module")
def h264_one_session(h264, folder) -> Path:
    """One in-process session over the whole file into .mkv, lossless (the engine's frames, exactly)."""
    dst = folder / "one.mkv"
    assert client("-i", str(h264), "-o", str(dst), "--local", *LOSSLESS) == 0
    return dst


def daemons(rife, n: int, **options) -> list[DaemonServer]:
    return [DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], **options), {"rife": rife}).start() for _ in range(n)]


def stopped(servers: list[DaemonServer]) -> None:
    for d in servers:
        assert wait_until(lambda d=d: d.registry.active == 0, 10), "a session was never released"
        assert d.registry.created == d.registry.released
        d.stop(0)


def test_h264_with_b_frames_joins_into_mkv_as_one_session(h264, h264_one_session, folder) -> None:
    # Every output with B-frames failed at the join ("non monotonically increasing dts"), after all the work.
    dst = folder / "jobs.mkv"
    assert client("-i", str(h264), "-o", str(dst), "--local", "--jobs", "3", *LOSSLESS) == 0
    one = decoded(h264_one_session)
    assert len(one) == 41  # ceil(16 * 60 / 23.976)
    assert all(np.array_equal(a, b) for a, b in zip(decoded(dst), one, strict=True))
    assert has_b_frames(dst)
    assert same_timing(timing(dst), timing(h264_one_session)), (timing(dst), timing(h264_one_session))
    assert audio_packets(dst) == audio_packets(h264_one_session)  # copied, on the same timeline
    assert stream_types(dst) == ["video", "audio", "subtitle"]
    assert leftovers(folder) == []


def test_hevc_joins_into_the_default_mp4_encoder_lasting_as_long_as_one_session(folder) -> None:
    # An .mp4 from --jobs 2 lasted 22 s for a 5 s input (every packet took the chunk file's duration).
    src = make_source(folder, "hevc", hevc=True)
    one, dst = folder / "one.mp4", folder / "jobs.mp4"
    assert client("-i", str(src), "-o", str(one), "--local") == 0
    assert client("-i", str(src), "-o", str(dst), "--local", "--jobs", "2") == 0
    a, b = timing(dst), timing(one)
    assert same_timing(a, b) and abs(a["container"] - Fraction(16) / FILM) <= STEP, (a, b)
    assert has_b_frames(dst)  # x264's default, as one session's
    # Each frame the one session's, within x264's loss (exactly equal frames: the lossless tests); a frame of another
    # shot or chunk would be far below.
    assert min(psnr(x, y) for x, y in zip(decoded(dst), decoded(one), strict=True)) > 30
    assert audio_packets(dst) == audio_packets(one)
    assert stream_types(dst) == ["video", "audio", "subtitle"]
    assert leftovers(folder) == []


def test_jobs_3_on_three_daemons_runs_one_chunk_on_each_and_gives_one_sessions_file(rife, h264, h264_one_session,
                                                                                    folder) -> None:
    # A file shorter than --chunk-frames was one chunk: one daemon of the fleet worked, the others idled.
    fleet = daemons(rife, 3, limits=Limits(max_sessions=1))  # one session each: no batch shared between chunks
    try:
        dst = folder / "fleet.mkv"
        server = ",".join(d.addresses[0] for d in fleet)
        assert client("-i", str(h264), "-o", str(dst), "--server", server, "--jobs", "3", *LOSSLESS) == 0
        assert all(np.array_equal(a, b) for a, b in zip(decoded(dst), decoded(h264_one_session), strict=True))
        assert same_timing(timing(dst), timing(h264_one_session))
        assert ["mpd_sessions_created_total 1" in d.metrics.render() for d in fleet] == [True] * 3
    finally:
        stopped(fleet)


def test_busy_chunks_wait_for_a_slot(rife, h264, h264_one_session, folder) -> None:
    # Three chunks against one session per user: refused as busy three times within a second, the job failed (69).
    (daemon,) = daemons(rife, 1, limits=Limits(max_sessions=4, max_sessions_per_user=1))
    try:
        dst = folder / "waited.mkv"  # the .mkv default encoder: x264 with B-frames
        assert client("-i", str(h264), "-o", str(dst), "--server", daemon.addresses[0], "--jobs", "3") == 0
        assert has_b_frames(dst) and same_timing(timing(dst), timing(h264_one_session))
        assert min(psnr(a, b) for a, b in zip(decoded(dst), decoded(h264_one_session), strict=True)) > 30
        assert daemon.registry.created == 3 and daemon.registry.rejected >= 1  # refused, waited, then taken
    finally:
        stopped([daemon])


def test_a_slot_is_free_as_soon_as_its_session_ends(rife) -> None:
    (daemon,) = daemons(rife, 1, limits=Limits(max_sessions=4, max_sessions_per_user=1))
    try:
        frames = shot(3, 1, 2)
        for _ in range(6):  # back to back: each starts right after the one before has ended
            engine = RemoteEngine(daemon.addresses[0], n_pass=2, src_fps=FILM, dst_fps=OUT_FPS)
            for frame in frames:
                engine.push(frame)
            engine.flush()
        assert (daemon.registry.created, daemon.registry.rejected) == (6, 0)
    finally:
        stopped([daemon])


def test_a_chunk_refused_for_good_ends_the_job_naming_its_daemon_alone(rife, h264, folder, capsys) -> None:
    good, other = daemons(rife, 1, token="t0k") + daemons(rife, 1, token="another")
    try:
        dst = folder / "never.mkv"
        server = f"{good.addresses[0]},{other.addresses[0]}"
        code = client("-i", str(h264), "-o", str(dst), "--server", server, "--token", "t0k", "--jobs", "2")
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, err
        assert err == [f"mpd-client: error: daemon at {other.addresses[0]}: UNAUTHENTICATED: wrong token: check "
                       "--token or $MPD_TOKEN"]
        assert not dst.exists() and leftovers(folder) == []
    finally:
        stopped([good, other])  # the good daemon's chunk was cancelled, its session freed


def run_client(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPD_")}
    return subprocess.Popen([sys.executable, "-m", "multipassdedup.client.main", "-y", *ENGINE, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def ended(proc: subprocess.Popen) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=120)  # a bound against a hang, not a timing requirement
    return proc.returncode, err.strip().splitlines()


def test_stop_signals_end_the_job_while_chunks_run_and_while_they_wait(rife, folder) -> None:
    # --jobs ignored SIGTERM and SIGINT for minutes after a chunk failed (the pool waited for every worker).
    src = make_source(folder, "long", shots=((16, 1, 2), (16, 2, 3), (16, 3, 1)))
    (daemon,) = daemons(rife, 1, limits=Limits(max_sessions=1))
    try:
        dst = folder / "signalled.mkv"
        proc = run_client(["-i", str(src), "-o", str(dst), "--server", daemon.addresses[0], "--jobs", "3"])
        assert wait_until(lambda: daemon.registry.active == 1 and daemon.registry.rejected >= 1, 60, interval=0.002)
        proc.send_signal(signal.SIGTERM)  # one chunk runs, the others wait for the only slot
        code, err = ended(proc)
        assert (code, err[-1]) == (75, "mpd-client: error: stopped by signal SIGTERM"), err
        assert not dst.exists() and leftovers(folder) == []
        assert wait_until(lambda: daemon.registry.active == 0, 10)

        holder = RemoteEngine(daemon.addresses[0], n_pass=2, src_fps=FILM, dst_fps=OUT_FPS)
        holder.push(shot(1, 1, 2)[0])  # holds the only slot: every chunk is refused, again and again
        rejected = daemon.registry.rejected
        proc = run_client(["-i", str(src), "-o", str(dst), "--server", daemon.addresses[0], "--jobs", "2"])
        assert wait_until(lambda: daemon.registry.rejected >= rejected + 3, 60, interval=0.002)
        proc.send_signal(signal.SIGINT)
        code, err = ended(proc)
        holder.close()
        assert (code, err[-1]) == (130, "mpd-client: interrupted"), err
        assert not dst.exists() and leftovers(folder) == []
    finally:
        stopped([daemon])


def test_the_plan_makes_as_many_chunks_as_jobs_where_the_cuts_allow() -> None:
    ratio = Fraction(OUT_FPS) / FILM
    cuts = [5, 11]  # SHOTS
    assert [len(plan_chunks(16, ratio, 2, cuts, 1200, True, jobs)) for jobs in (1, 2, 3, 8)] == [1, 2, 3, 3]
    assert spread_cuts(100, [10, 20, 30, 40, 50, 60, 70, 80, 90], 4) == {20, 50, 70}
    chunks = plan_chunks(100, ratio, 2, list(range(10, 100, 10)), 1200, False, 4)
    assert [(c.start, c.stop) for c in chunks] == [(0, 21), (20, 51), (50, 71), (70, 100)]


def test_joined_timestamps_increase_and_never_pass_presentation() -> None:
    # Two chunks in x264's B-pyramid order (decoding runs 2 frames ahead); dts was set to pts where the chunk
    # container gave none, and ran backwards.
    order = [0, 4, 2, 1, 3, 8, 6, 5, 7, 9]
    chunk = ChunkFile(Path(os.devnull), [PacketEntry(0, 0, pts, dts, 0, pts == 0) for dts, pts in
                                         enumerate(order, start=-2)])
    delay = join_delay([chunk, chunk])
    packets = list(joined_packets([(0, chunk), (10, chunk)], delay, 3, STEP))
    assert delay == 2 and [p.pts for p in packets] == [3 + p for p in order] + [13 + p for p in order]
    dts = [p.dts for p in packets]
    assert dts == list(range(1, 21)) and all(p.dts <= p.pts for p in packets)
