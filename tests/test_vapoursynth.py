"""The VapourSynth filter with real VapourSynth and a real daemon.

VapourSynth runs in ``.venv-vs`` (Python 3.12 or newer, the base install without torch, VapourSynth's wheel and
BestSource: ``vs_env.py``, which setup.sh runs); its scripts are ``vs_run.py``. A real ``mpd-daemon`` from this
environment serves RIFE on the CPU, with a token, for the whole module; ``mpd-client`` for the references runs from
``.venv-vs`` too, so both ends convert colours with the same libswscale. The clips are tiny (64x48, 12 to 18
frames): drawings held on twos, and a cut to a different picture; the 8-bit one is H.264 at CRF 20 with B-frames.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import vs_env
from helpers.commands import ENV, FFMPEG, free_port, script
from helpers.daemons import status
from helpers.frames import moving_clip
from multipassdedup.client.engine import pump
from multipassdedup.client.engine_flags import settings_from_options
from multipassdedup.client.pipe.y4m import Y4mReader
from multipassdedup.client.placement import Placement, SessionOpener
from multipassdedup.client.progress import Progress
from multipassdedup.client.vapoursynth.access import RandomAccess, SourceFrame

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "docs" / "examples" / "interpolate.vpy"
TOKEN = "vs-filter-secret"
W, H = 64, 48
HELD = f"testsrc2=size={W}x{H}:rate=12000/1001,fps=24000/1001"  # drawings held on twos
OTHER = f"mandelbrot=size={W}x{H}:rate=24000/1001"  # after the cut: moves on every frame
CUT_AT = 10  # the first input frame of the second shot


@pytest.fixture(scope="module")
def vs_python() -> Path:
    """``.venv-vs``'s interpreter: set up by setup.sh, completed here when it is not (fails without Python 3.12)."""
    try:
        return vs_env.ensure()
    except vs_env.MissingPython as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def vs_bin(vs_python: Path) -> Path:
    return vs_python.parent


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real mpd-daemon (rife on the CPU, with a token) on a loopback port, for the module."""
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("vs-daemon") / "daemon.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(script("mpd-daemon") + ["--listen", address, "--device", "cpu", "--models", "rife",
                                                         "--token", TOKEN], stdout=sink, stderr=subprocess.STDOUT,
                                env=ENV)
    try:
        _wait_for_daemon(proc, address, log)
        yield address
    finally:
        proc.terminate()
        proc.wait(60)


def _wait_for_daemon(proc: subprocess.Popen, address: str, log: Path) -> None:
    from multipassdedup.client.remote.session import probe

    deadline = time.monotonic() + 120
    while not probe(address):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "mpd-daemon did not start"
        time.sleep(0.2)


def ffmpeg(*args: str) -> bytes:
    return subprocess.run([FFMPEG, "-loglevel", "error", "-y", *args], capture_output=True, check=True).stdout


def two_shots(frames_a: int, frames_b: int) -> list[str]:
    """ffmpeg inputs and filter for ``frames_a`` frames held on twos, then a cut to ``frames_b`` moving ones."""
    graph = (f"[0]trim=end_frame={frames_a},setpts=PTS-STARTPTS[a];[1]trim=end_frame={frames_b},"
             f"setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1[v]")
    return ["-f", "lavfi", "-i", HELD, "-f", "lavfi", "-i", OTHER, "-filter_complex", graph, "-map", "[v]"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The module's inputs: an H.264 file (CRF 20, B-frames), its decoded 8-bit Y4M, a 10-bit 4:2:0 Y4M, raw RGB24."""
    root = tmp_path_factory.mktemp("vs-clips")
    mkv, y4m8, y4m10, rgb = root / "clip.mkv", root / "clip8.y4m", root / "clip10.y4m", root / "clip.rgb"
    ffmpeg(*two_shots(CUT_AT, 8), "-c:v", "libx264", "-crf", "20", "-bf", "2", "-pix_fmt", "yuv420p", str(mkv))
    ffmpeg("-i", str(mkv), "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", str(y4m8))
    ffmpeg(*two_shots(CUT_AT, 4), "-pix_fmt", "yuv420p10le", "-strict", "-1", "-f", "yuv4mpegpipe", str(y4m10))
    ffmpeg(*two_shots(6, 4), "-pix_fmt", "rgb24", "-f", "rawvideo", str(rgb))
    return {"mkv": mkv, "y4m8": y4m8, "y4m10": y4m10, "rgb": rgb}


def vs_env_vars(**extra: str) -> dict[str, str]:
    return ENV | {"PYTHONUNBUFFERED": "1"} | extra


def mpd_client(vs_bin: Path, args: list[str], data: bytes, env: dict | None = None) -> subprocess.CompletedProcess:
    """mpd-client of the VapourSynth environment (the base install)."""
    return subprocess.run([str(vs_bin / "mpd-client"), *args], input=data, capture_output=True,
                          env=env or vs_env_vars(), timeout=300)


def run_vs(vs_python: Path, tmp: Path, job: dict, env: dict | None = None, timeout: float = 300) -> tuple[dict, dict]:
    """Run ``vs_run.py`` on ``job``: (summary, frames of each run as arrays of samples)."""
    job = job | {"out": str(tmp / "out.npz")}
    (tmp / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([str(vs_python), str(HERE / "vs_run.py"), str(tmp / "job.json")], capture_output=True,
                          text=True, env=env or vs_env_vars(), timeout=timeout, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp / "out.npz") as z:
        frames = {k: z[k] for k in z.files}
    return json.loads(proc.stdout.splitlines()[-1]), frames


def y4m_frames(data: bytes) -> tuple[Y4mReader, np.ndarray]:
    import io

    reader = Y4mReader(io.BytesIO(data))
    return reader, np.stack([np.frombuffer(bytes(f), np.uint8) for f in reader])


def last_error_line(stderr: bytes) -> str:
    line = stderr.decode().strip().splitlines()[-1]
    assert line.startswith("mpd-client: error: "), stderr.decode()
    return line.removeprefix("mpd-client: error: ")


def vs_error(summary: dict, run: str, when: str = "frame") -> str:
    """The message of a run's error, one line: the filter's Error raised by ``interpolate`` (``when="made"``), or a
    frame request's VapourSynth error that holds the filter's Error and its message, without a traceback."""
    error = summary["runs"][run]
    lines = [line for line in error["error"].splitlines() if line.strip()]
    assert len(lines) == 1, error
    if when == "made":
        assert error["type"] == "multipassdedup.vapoursynth.Error", error
        return lines[0]
    assert error["type"] == "vapoursynth.Error" and lines[0].startswith("multipassdedup.vapoursynth.Error: "), error
    return lines[0].removeprefix("multipassdedup.vapoursynth.Error: ")


ORDERS = [{"name": "forward"}, {"name": "reverse", "order": "reverse"},
          {"name": "random", "order": "random", "seed": 7}, {"name": "threads", "order": "threads"}]


def in_process_frames(settings, opener: SessionOpener, frames: list[np.ndarray],
                      order: list[int]) -> tuple[dict[int, bytes], int]:
    """Output frames by step, asked for in ``order`` from ``RandomAccess`` over the in-process engine (samples as the
    RGB bytes), and how many sessions it started."""
    access = RandomAccess(settings, len(frames), lambda i: SourceFrame(frames[i], frames[i].tobytes()), opener.open,
                          lambda rgb, copies: rgb.tobytes(), cache_frames=8)
    try:
        return {k: access.frame(k).packed for k in order}, access.sessions_started
    finally:
        access.close()


@pytest.fixture
def one_torch_thread():
    """One torch thread for the in-process engine, as the daemon here runs (a shared 2-core machine), then restored."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("options", [{}, {"n_pass": 2}], ids=["adaptive", "passes"])
def test_in_process_random_access_gives_the_streams_frames(options, one_torch_thread) -> None:
    """Without VapourSynth: the in-process engine (the engine extra is installed here) behind ``RandomAccess`` gives,
    in reverse and shuffled order with a small cache, the frames one stream gives in order."""
    frames = moving_clip(10, height=H, width=W) + moving_clip(6, height=H, width=W, step=5, seed=3)[::-1]
    settings = settings_from_options(options | {"fps": 60}, Fraction(24000, 1001))
    opener = SessionOpener(settings, settings.src_fps, Placement(local=True, device="cpu", threads=1))
    expected: list[bytes] = []
    pump(frames, opener.open(0), settings.src_fps, lambda f: expected.append(f.tobytes()), Progress(False))
    n_out = len(expected)
    assert n_out == 41  # ceil(16 * 2.5025)
    reverse, seeks = in_process_frames(settings, opener, frames, list(reversed(range(n_out))))
    assert [reverse[k] for k in range(n_out)] == expected and seeks > 3
    shuffled = list(range(n_out))
    random.Random(5).shuffle(shuffled)
    got, _ = in_process_frames(settings, opener, frames, shuffled)
    assert [got[k] for k in range(n_out)] == expected


def test_the_environment_is_the_base_install_with_vapoursynth(vs_python: Path) -> None:
    code = ("import importlib.util, sys, vapoursynth\n"
            "import multipassdedup.vapoursynth\n"
            "assert importlib.util.find_spec('torch') is None, 'torch is importable'\n"
            "loaded = [m for m in sys.modules if m == 'torch' or m.startswith(('multipassdedup.core', "
            "'multipassdedup.daemon'))]\n"
            "assert not loaded, loaded\n"
            "print(sys.version_info[:2] >= (3, 12), vapoursynth.__version__)\n")
    proc = subprocess.run([str(vs_python), "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("True"), proc.stdout
    # From the repository's root (the package, which holds vapoursynth.py) ``import vapoursynth`` is VapourSynth's.
    root = subprocess.run([str(vs_python), "-c", "import vapoursynth as vs, multipassdedup.vapoursynth as m\n"
                           "print(vs.core.std.BlankClip().num_frames, m.interpolate.__name__)"], capture_output=True,
                          text=True, cwd=REPO)
    assert root.returncode == 0 and root.stdout.split() == ["240", "interpolate"], root.stderr


def test_8_bit_frames_equal_mpd_client_in_every_order(vs_python, vs_bin, daemon, clips, tmp_path) -> None:
    data = clips["y4m8"].read_bytes()
    ref = mpd_client(vs_bin, ["--server", daemon, "--token", TOKEN, "-fps", "60"], data)
    assert ref.returncode == 0, ref.stderr.decode()
    _, expected = y4m_frames(ref.stdout)
    n_in = len(y4m_frames(data)[1])
    created = status(daemon, TOKEN).sessions_created
    summary, runs = run_vs(vs_python, tmp_path, {"source": {"y4m": str(clips["y4m8"])}, "runs": ORDERS,
                                                 "kwargs": {"fps": 60, "server": daemon, "token": TOKEN}})
    ratio = Fraction(60) / Fraction(24000, 1001)
    assert summary["frames"] == len(expected) == -(-n_in * ratio // 1) and summary["fps"] == "60"
    assert summary["format"] == "YUV420P8"
    for run in ORDERS:
        assert np.array_equal(runs[run["name"]], expected), run["name"]
    assert status(daemon, TOKEN).sessions_created - created > len(ORDERS), "the out-of-order runs seek"
    props = summary["runs"]["random"]["props"]
    cut_step = -(-CUT_AT * ratio // 1)  # the cut lands at its own time: its first step shows the new shot
    assert [k for k, p in enumerate(props) if p["_SceneChangePrev"]] == [cut_step]
    assert [k for k, p in enumerate(props) if p["_SceneChangeNext"]] == [cut_step - 1]
    assert all(p["_DurationNum"] == 1 and p["_DurationDen"] == 60 and p["_Range"] == 0 for p in props)


def test_10_bit_frames_equal_mpd_client_with_the_passes_in_every_order(vs_python, vs_bin, daemon, clips,
                                                                        tmp_path) -> None:
    data = clips["y4m10"].read_bytes()
    args = ["-fps", "60000/1001", "-np", "3"]
    ref = mpd_client(vs_bin, ["--server", daemon, "--token", TOKEN, *args], data)
    assert ref.returncode == 0, ref.stderr.decode()
    reader, expected = y4m_frames(ref.stdout)
    assert reader.header.pix_fmt == "yuv420p10le"
    summary, runs = run_vs(vs_python, tmp_path, {
        "source": {"y4m": str(clips["y4m10"])}, "runs": ORDERS,
        "kwargs": {"fps": "60000/1001", "n_pass": 3, "server": daemon, "token": TOKEN}})
    assert summary["format"] == "YUV420P10" and summary["fps"] == "60000/1001"
    assert summary["frames"] == len(expected) == 35  # ceil(14 * 2.5)
    for run in ORDERS:
        assert np.array_equal(runs[run["name"]], expected), run["name"]
    props = summary["runs"]["forward"]["props"]
    assert [k for k, p in enumerate(props) if p["_SceneChangePrev"]] == [25]  # ceil(10 * 2.5)


def test_rgb_frames_equal_mpd_client(vs_python, vs_bin, daemon, clips, tmp_path) -> None:
    data = clips["rgb"].read_bytes()
    ref = mpd_client(vs_bin, ["--server", daemon, "--token", TOKEN, "--raw", f"{W}x{H}", "--pix-fmt", "rgb24",
                              "--in-fps", "24000/1001", "-fps", "60"], data)
    assert ref.returncode == 0, ref.stderr.decode()
    expected = np.frombuffer(ref.stdout, np.uint8).reshape(-1, H, W, 3)
    summary, runs = run_vs(vs_python, tmp_path, {
        "source": {"rgb": str(clips["rgb"]), "width": W, "height": H, "fps": "24000/1001"},
        "runs": [{"name": "forward"}, {"name": "random", "order": "random", "seed": 3}],
        "kwargs": {"fps": 60, "server": daemon, "token": TOKEN}})
    assert summary["format"] == "RGB24" and summary["frames"] == len(expected) == 26  # ceil(10 * 2.5025)
    for name in ("forward", "random"):
        planar = runs[name].reshape(-1, 3, H, W)
        assert np.array_equal(planar.transpose(0, 2, 3, 1), expected), name


def test_vspipe_runs_the_example_script_as_the_pipe_filter(vs_bin, daemon, clips, tmp_path) -> None:
    """The documented example through vspipe (the automatic choice finds the daemon) gives the Y4M that
    ``vspipe -c y4m`` of the plain source piped through mpd-client gives."""
    config = tmp_path / "config"
    env = vs_env_vars(XDG_CONFIG_HOME=str(config), MPD_PROBE=daemon, MPD_TOKEN=TOKEN)
    configured = subprocess.run([str(vs_bin / "vapoursynth"), "config"], capture_output=True, text=True, env=env)
    assert configured.returncode == 0, configured.stdout + configured.stderr
    plain = tmp_path / "source.vpy"
    plain.write_text("import vapoursynth as vs\nvs.core.bs.VideoSource(source).set_output()\n")

    def vspipe(path: Path) -> bytes:
        proc = subprocess.run([str(vs_bin / "vspipe"), "-c", "y4m", "-a", f"source={clips['mkv']}", str(path), "-"],
                              capture_output=True, env=env, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout

    ref = mpd_client(vs_bin, ["-fps", "60000/1001"], vspipe(plain), env=env)
    assert ref.returncode == 0, ref.stderr.decode()
    assert f"using the daemon at {daemon}" in ref.stderr.decode()
    ref_reader, expected = y4m_frames(ref.stdout)
    out_reader, got = y4m_frames(vspipe(EXAMPLE))
    assert (out_reader.header.width, out_reader.header.height, out_reader.header.pix_fmt) == (W, H, "yuv420p")
    assert out_reader.header.rate == ref_reader.header.rate == Fraction(60000, 1001)
    assert len(got) == len(expected) == 45 and np.array_equal(got, expected)  # ceil(18 * 2.5)


def test_no_daemon_and_no_engine_fails_the_frame_request_with_mpd_clients_line(vs_python, vs_bin, clips,
                                                                                tmp_path) -> None:
    env = vs_env_vars(MPD_PROBE=f"127.0.0.1:{free_port()}")
    ref = mpd_client(vs_bin, ["-fps", "60"], clips["y4m8"].read_bytes(), env=env)
    assert ref.returncode == 69
    summary, _ = run_vs(vs_python, tmp_path, {"source": {"y4m": str(clips["y4m8"])}, "runs": [{"name": "forward"}],
                                              "kwargs": {"fps": 60}}, env=env)
    assert summary["frames"] == 46  # the clip was made: the frame request failed
    assert vs_error(summary, "forward") == last_error_line(ref.stderr)
    assert "the engine is not installed" in vs_error(summary, "forward")


def test_a_wrong_token_fails_the_frame_request_with_mpd_clients_line(vs_python, vs_bin, daemon, clips,
                                                                      tmp_path) -> None:
    ref = mpd_client(vs_bin, ["--server", daemon, "--token", "wrong", "-fps", "60"], clips["y4m8"].read_bytes())
    assert ref.returncode == 2
    summary, _ = run_vs(vs_python, tmp_path, {"source": {"y4m": str(clips["y4m8"])},
                                              "runs": [{"name": "forward"}, {"name": "seek", "order": [30]}],
                                              "kwargs": {"fps": 60, "server": daemon, "token": "wrong"}})
    assert vs_error(summary, "forward") == vs_error(summary, "seek") == last_error_line(ref.stderr)
    assert "UNAUTHENTICATED" in vs_error(summary, "forward")


def test_unsupported_formats_and_settings_fail_when_the_clip_is_made(vs_python, clips, tmp_path) -> None:
    summary, _ = run_vs(vs_python, tmp_path, {"source": {"blank": "YUV444PS"}, "runs": [{"name": "float"}]})
    assert "frames" not in summary  # interpolate() raised: no clip was made
    assert vs_error(summary, "float", "made").startswith(
        "unsupported format YUV444PS (the filter takes what mpd-client's pipe takes: 8- to 16-bit integer YUV")
    summary, _ = run_vs(vs_python, tmp_path, {"source": {"y4m": str(clips["y4m8"])}, "runs": [
        {"name": "slow", "kwargs": {"fps": 20}}, {"name": "scale", "kwargs": {"scale": 3}},
        {"name": "both", "kwargs": {"fps": 60, "times": 2}}]})
    assert vs_error(summary, "slow", "made") == (
        "-fps: target frame rate 20 must exceed the source frame rate 24000/1001; give -fps above 24000/1001, "
        "or -t N for N times the input's rate")
    assert vs_error(summary, "scale", "made").startswith("-scale: scale must be one of 0.25, 0.5, 1.0, 2.0, 4.0")
    assert vs_error(summary, "both", "made") == "-t: give fps or times, not both"


def test_a_daemon_that_dies_mid_clip_fails_the_frame_request_and_nothing_hangs(vs_python, clips, tmp_path) -> None:
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(script("mpd-daemon") + ["--listen", address, "--device", "cpu", "--models", "rife"],
                                stdout=sink, stderr=subprocess.STDOUT, env=ENV)
    try:
        _wait_for_daemon(proc, address, log)
        started = time.monotonic()
        summary, runs = run_vs(vs_python, tmp_path, {
            "source": {"y4m": str(clips["y4m8"])}, "kill_pid": proc.pid, "kwargs": {"fps": 60, "server": address},
            "runs": [{"name": "before", "order": [0]}, {"name": "kill", "order": "kill"},
                     {"name": "mid_clip", "order": [20], "reuse": True},
                     {"name": "later", "order": [40], "reuse": True}]}, timeout=120)
        assert time.monotonic() - started < 100
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    assert runs["before"].shape[0] == 1
    assert vs_error(summary, "mid_clip").startswith(f"daemon at {address}")
    assert vs_error(summary, "later").startswith(f"cannot connect to the daemon at {address}")
