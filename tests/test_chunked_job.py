"""``--jobs``: one file split into chunks at scene cuts (a long shot into overlapping pieces), run as separate
sessions -- in-process workers, or three real daemons on loopback ports -- and joined without re-encoding.
The joined output must be one session's output frame for frame (lossless FFV1 decoded and compared)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from daemon_harness import wait_until
from multipassdedup.client.chunk_plan import lead_in, overlap_frames, plan_chunks, run_on, total_steps
from multipassdedup.client.chunked_job import ChunkOptions, run_chunked
from multipassdedup.client.cut import CutRequest
from multipassdedup.client.encoders import EncodeOptions
from multipassdedup.client.engines import Placement
from multipassdedup.client.main import main
from multipassdedup.client.output_file import Overwrite
from multipassdedup.client.pipe_filter import PipeInput
from multipassdedup.client.scene_cuts import CutFinder, ssim, thumbnail
from multipassdedup.client.transcode import FileChoices, run_file
from multipassdedup.daemon.limits import Limits
from multipassdedup.daemon.server import DaemonOptions, DaemonServer
from multipassdedup.settings import EngineSettings

FILM = Fraction(24000, 1001)
H, W = 64, 128
SHOTS = ((6, 1, 2), (15, 2, 3), (5, 3, 2))  # (frames, seed, pan step): three shots, the middle one long
CUTS = [6, 21]
CHUNK_FRAMES = 8  # the long shot becomes two overlapping pieces


def smooth_shot(n: int, seed: int, step: int) -> list[np.ndarray]:
    """A smooth pattern panning ``step`` px a frame with a textured square moving on twos (a held drawing the
    adaptive hold map finds): one shot to the SSIM test."""
    rng = np.random.default_rng(seed)
    fx, fy = rng.uniform(1.5, 3.0), rng.uniform(1.0, 2.0)
    base = rng.uniform(60, 180, 3)
    paint = rng.uniform(0, 255, (16, 16, 3))
    y, x = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(n):
        u, v = (x + i * step) / W * 2 * np.pi, y / H * 2 * np.pi
        f = base + 50 * np.stack([np.sin(fx * u + fy * v), np.cos(fx * u - v), np.sin(u + fy * v)], -1)
        s = 8 + (i // 2) * 4
        f[24:40, s: s + 16] = paint
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


CLIP = [f for shot in SHOTS for f in smooth_shot(*shot)]


def write_input(path: Path) -> Path:
    """Lossless RGB FFV1 at 23.976 fps with a FLAC sine and two chapters, in Matroska."""
    with av.open(str(path), "w") as c:
        video = c.add_stream("ffv1", rate=FILM)
        video.width, video.height, video.pix_fmt = W, H, "bgr0"
        audio = c.add_stream("flac", rate=48000)
        audio.layout = "mono"
        for i, rgb in enumerate(CLIP):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")
            frame.pts = i
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
        samples = int(len(CLIP) / FILM * 48000)
        tone = (np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)
        for start in range(0, samples, 4096):
            block = av.AudioFrame.from_ndarray(tone[None, start:start + 4096], format="s16", layout="mono")
            block.sample_rate, block.pts = 48000, start
            c.mux(audio.encode(block))
        c.mux(audio.encode(None))
    return path


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


SETTINGS = EngineSettings(dst_fps=Fraction(60), precision="fp32")  # exact: the daemons serve the fp32 fixture
ENCODE = EncodeOptions(codec="ffv1")
SPEC = PipeInput(None, "rgb24", None, None, "auto")


def choices() -> FileChoices:
    return FileChoices(None, CutRequest(), False, Overwrite("always"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("chunks")


@pytest.fixture(scope="module")
def source(folder) -> Path:
    return write_input(folder / "in.mkv")


@pytest.fixture(scope="module")
def one_session(source, folder) -> list[np.ndarray]:
    """The reference: one in-process session over the whole file, FFV1."""
    dst = folder / "one.mkv"
    run_file(source, dst, SPEC, SETTINGS, Placement(local=True, device="cpu"), ENCODE, choices(), False)
    return decoded(dst)


def same_frames(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or ".chunks." in p.name)


def test_the_client_finds_the_cuts_the_engine_sees() -> None:
    import torch

    from multipassdedup.core.pipeline.scene import SceneDetector

    finder = CutFinder(0.3)
    for frame in CLIP:
        finder.push(frame)
    assert finder.cuts == CUTS
    engine = SceneDetector(0.3)
    as_tensor = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for f in CLIP[:8]]
    for i in range(7):  # the same SSIM as the engine's, to float32 rounding
        mine = ssim(thumbnail(CLIP[i]), thumbnail(CLIP[i + 1]))
        assert abs(mine - engine.ssim(as_tensor[i], as_tensor[i + 1])) < 1e-5


def test_the_plan_covers_every_output_step_once() -> None:
    ratio = Fraction(60) / FILM
    for n_pass in (2, 3, 4):
        bound = max(CHUNK_FRAMES, overlap_frames(n_pass) + 1)
        chunks = plan_chunks(len(CLIP), ratio, n_pass, CUTS, bound)
        assert chunks[0].first_step == 0 and chunks[-1].end_step == total_steps(len(CLIP), ratio)
        assert all(a.end_step == b.first_step for a, b in zip(chunks, chunks[1:]))
        assert all(c.stop - c.start <= bound + overlap_frames(n_pass) for c in chunks)
        assert all(c.skip >= 0 and c.start <= c.stop for c in chunks)
        if n_pass == 2:  # chunks end one frame after a cut; the piece from 10 starts 3 before its handover at 13
            assert [(c.start, c.stop, c.skip) for c in chunks] == [(0, 7, 0), (6, 15, 0), (10, 22, 6), (21, 26, 0)]
    assert (lead_in(2), run_on(2), overlap_frames(2)) == (3, 2, 5)


def test_jobs_2_in_process_gives_one_sessions_frames(source, folder, one_session) -> None:
    dst = folder / "local.mkv"
    result = run_chunked(source, dst, SPEC, SETTINGS, Placement(local=True, device="cpu"), ENCODE, choices(), False,
                         ChunkOptions(jobs=2, max_frames=CHUNK_FRAMES))
    assert same_frames(decoded(dst), one_session)
    assert result.frames_out == len(one_session) == 66  # ceil(26 * 60 / 23.976), as file mode writes
    assert audio_packets(dst) == audio_packets(source)  # copied as in file mode
    assert leftovers(folder) == []


def test_adaptive_chunks_are_whole_shots_and_give_one_sessions_frames(source, folder) -> None:
    adaptive = dataclasses.replace(SETTINGS, adaptive=True)
    one = folder / "one_adaptive.mkv"
    run_file(source, one, SPEC, adaptive, Placement(local=True, device="cpu"), ENCODE, choices(), False)
    dst = folder / "local_adaptive.mkv"
    result = run_chunked(source, dst, SPEC, adaptive, Placement(local=True, device="cpu"), ENCODE, choices(), False,
                         ChunkOptions(jobs=2, max_frames=3))  # below the passes' bound: unused, shots are not split
    assert result.stats.get("held_groups", 0) > 0, result.stats
    assert same_frames(decoded(dst), decoded(one)) and len(decoded(one)) == 66
    ratio = Fraction(60) / FILM
    assert [(c.start, c.stop) for c in plan_chunks(len(CLIP), ratio, 2, CUTS, 3, split_shots=False)] == \
        [(0, 7), (6, 22), (21, 26)]  # one chunk per shot, each running on to the next cut's frame


@pytest.fixture
def fleet(rife):
    """Three daemons of one session each: no daemon batches two chunks' model calls together (which may round a
    pixel differently), and a chunk sent to a busy one is refused and retried on the next."""
    one_each = DaemonOptions(listen=["127.0.0.1:0"], limits=Limits(max_sessions=1))
    daemons = [DaemonServer(one_each, {"rife": rife}).start() for _ in range(3)]
    yield daemons
    for d in daemons:
        assert wait_until(lambda d=d: d.registry.active == 0, 10)
        assert d.registry.created == d.registry.released
        d.stop(0)


def test_jobs_3_over_three_daemons_gives_one_sessions_frames(source, folder, one_session, fleet) -> None:
    dst = folder / "fleet.mkv"
    server = ",".join(d.addresses[0] for d in fleet)
    run_chunked(source, dst, SPEC, SETTINGS, Placement(server=server), ENCODE, choices(), False,
                ChunkOptions(jobs=3, max_frames=CHUNK_FRAMES))
    assert same_frames(decoded(dst), one_session)
    assert sum(d.registry.created for d in fleet) == 4  # four chunks, one session each (refusals are not created)
    assert sum(1 for d in fleet if d.registry.created) >= 2  # spread by round_robin


def test_a_chunk_whose_daemon_dies_is_retried_on_another(source, folder, one_session, fleet, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="multipassdedup.client")
    victim = fleet[0]

    def kill_on_first_session() -> None:
        if wait_until(lambda: victim.registry.active > 0, 120, 0.002):
            victim.stop(0)

    killer = threading.Thread(target=kill_on_first_session)
    killer.start()
    dst = folder / "retried.mkv"
    server = ",".join(d.addresses[0] for d in fleet)
    try:
        run_chunked(source, dst, SPEC, SETTINGS, Placement(server=server), ENCODE, choices(), False,
                    ChunkOptions(jobs=2, max_frames=CHUNK_FRAMES))
    finally:
        killer.join()
    assert victim.registry.created >= 1  # it took a chunk and died with it
    assert any("running it again" in r.getMessage() for r in caplog.records)
    assert same_frames(decoded(dst), one_session)


def test_no_daemon_to_take_a_chunk_is_one_line_and_no_output(source, folder, fleet, capsys) -> None:
    server = ",".join(d.addresses[0] for d in fleet)
    for d in fleet:
        d.stop(0)
    dst = folder / "never.mkv"
    code = main(["-i", str(source), "-o", str(dst), "-c", "ffv1", "-fps", "60", "--server", server,
                 "--jobs", "2", "--chunk-frames", str(CHUNK_FRAMES), "-y"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 69, err
    assert err[-1].startswith("mpd-client: error: chunk 1 (input frames 0-") and "failed 4 times" in err[-1]
    assert not dst.exists() and leftovers(folder) == []


def test_first_index_travels_and_is_checked() -> None:
    from multipassdedup.proto.wire import PixelFormat, SessionSettings, session_config, session_settings
    from multipassdedup.settings import SettingsError

    chunk = EngineSettings(src_fps=FILM, dst_fps=Fraction(60), first_index=1234)
    wire = session_config(SessionSettings(chunk, W, H, PixelFormat.RGB24))
    assert wire.first_index == 1234 and session_settings(wire).engine.first_index == 1234
    with pytest.raises(SettingsError, match="first_index must be a whole number >= 0"):
        EngineSettings(dst_fps=Fraction(60), first_index=-1)
    with pytest.raises(SettingsError, match="first_index needs delay compensation"):
        EngineSettings(dst_fps=Fraction(60), first_index=5, compensate_delay=False)
    assert EngineSettings(dst_fps=Fraction(60), first_index=5, adaptive=True).first_index == 5  # a chunk from a cut


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["--jobs", "2", "-ss", "1"], "--jobs does not take -ss/-to/--frames"),
    (["--jobs", "2", "--deinterlace"], "--jobs does not take --deinterlace"),
    (["--jobs", "2", "-np", "2", "--chunk-frames", "3"], "--chunk-frames must be at least 6 for 2 passes, got 3"),
])
def test_jobs_usage_errors(source, folder, capsys, args, message) -> None:
    code = main(["-i", str(source), "-o", str(folder / "x.mkv"), "--local", "-y", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"mpd-client: error: {message}"), err


def test_mpd_watch_passes_jobs_to_the_client(tmp_path) -> None:
    from multipassdedup.client.watch.config import ConfigError, build_folder

    folder = build_folder({"in": str(tmp_path), "out": str(tmp_path / "out"), "server": "a:1,b:2", "jobs": 3}, "t")
    folder.validate()
    argv = folder.client_argv(Path("in.mkv"), Path("out.mkv"))
    assert argv[-4:] == ["--server", "a:1,b:2", "--jobs", "3"]
    same = build_folder({"in": str(tmp_path), "out": str(tmp_path / "out"), "server": "a:1,b:2"}, "t")
    assert same.options_digest() == folder.options_digest()  # the same output either way
    with pytest.raises(ConfigError, match="jobs must be a whole number >= 1"):
        build_folder({"in": str(tmp_path), "out": str(tmp_path / "out"), "jobs": 0}, "t").validate()
