"""``-m gimm`` end to end, on synthetic weights written as the user's two files into a temporary weights folder:
the engine, ``mpd-client`` in-process and ``mpd-client`` through a real ``mpd-daemon --models gimm`` give the
same frames; without the files every entry point says, in one line, which file is missing; ``mpd-weights
verify`` loads the files when they are there; ``mpd-watch`` passes the model on."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.commands import FFMPEG
from helpers.daemons import DaemonProcess, clean_env
from helpers.gimm_synthetic import GIMM_FILE, RAFT_FILE, synthetic_state_dict, write_user_files
from multipassdedup.client.engine import pump
from multipassdedup.client.pipe.formats import Y4mSource
from multipassdedup.client.pipe.y4m import Y4mReader
from multipassdedup.client.progress import Progress
from multipassdedup.client.watch.config import build_folder
from multipassdedup.core import MultiPassDedup, load_model
from multipassdedup.settings import EngineSettings

W, H, N = 128, 64, 3  # GIMM takes about a second per time t at this size on one thread
FLAGS = ["-m", "gimm", "-np", "1", "-fps", "60", "--threads", "1"]
SETTINGS = EngineSettings(model="gimm", n_pass=1, src_fps=Fraction(24000, 1001), dst_fps=Fraction(60))
CLIENT = str(Path(sys.executable).with_name("mpd-client"))
WEIGHTS = [sys.executable, "-m", "multipassdedup.commands", "mpd-weights"]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gimm-user-weights")
    write_user_files(folder, synthetic_state_dict())
    return folder


@pytest.fixture(scope="module")
def y4m_clip() -> bytes:
    """A moving 128x64 yuv420p clip of N frames at 24000/1001 fps, as YUV4MPEG2."""
    return subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i",
                           f"testsrc2=size={W}x{H}:rate=24000/1001", "-frames:v", str(N), "-pix_fmt", "yuv420p",
                           "-f", "yuv4mpegpipe", "-"], capture_output=True, check=True).stdout


def client_env(weights: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MPD_SERVER", "MPD_TOKEN")}
    return env | {"MPD_WEIGHTS_DIR": str(weights), "OMP_NUM_THREADS": "1"} | extra


def run_client(args: list[str], data: bytes, weights: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CLIENT, *args], input=data, capture_output=True, env=client_env(weights), timeout=600)


def engine_y4m(data: bytes, weights: Path) -> tuple[bytes, list[np.ndarray], list[np.ndarray]]:
    """The engine run in this process on the frames mpd-client reads from ``data``, written the way mpd-client
    writes them: (the YUV4MPEG2 bytes, the RGB input frames, the RGB output frames)."""
    model = load_model("gimm", device="cpu", weights_dir=weights)
    source = Y4mSource(io.BytesIO(data))
    engine = MultiPassDedup.from_settings(model, SETTINGS)
    stdout = io.BytesIO()
    sink = source.sink(stdout, engine.out_fps)
    frames_in: list[np.ndarray] = []
    frames_out: list[np.ndarray] = []

    def read() -> object:
        for frame in source:
            frames_in.append(frame)
            yield frame

    def write(frame: np.ndarray) -> None:
        frames_out.append(frame)
        sink.write(frame)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the client and the daemon under test run
    try:
        pump(read(), engine, source.rate, write, Progress(False))
    finally:
        torch.set_num_threads(threads)
    sink.close()
    return stdout.getvalue(), frames_in, frames_out


def frames_of(data: bytes) -> list[bytes]:
    return [bytes(f) for f in Y4mReader(io.BytesIO(data))]


def test_engine_client_and_daemon_give_the_same_frames(weights_dir: Path, y4m_clip: bytes, work_dir: Path) -> None:
    """Bit-equal YUV4MPEG2 output three ways (the client's colour conversion applied to the engine's frames)."""
    want, rgb_in, rgb_out = engine_y4m(y4m_clip, weights_dir)
    assert len(rgb_out) == 8  # ceil(3 * 60 / 23.976)
    made = [f for f in rgb_out if not any(np.array_equal(f, x) for x in rgb_in)]
    assert len(made) >= 5  # most output frames are the network's, not copies of the input
    assert all(np.abs(f.astype(int) - rgb_in[0]).mean() > 1 for f in made[-3:])  # and the clip moves

    local = run_client([*FLAGS, "--local"], y4m_clip, weights_dir)
    assert local.returncode == 0, local.stderr.decode()
    assert "in-process" in local.stderr.decode()
    assert frames_of(local.stdout) == frames_of(want)
    assert local.stdout == want  # the header too: same size, rate and colour

    daemon = DaemonProcess(["--listen", "127.0.0.1:0", "--models", "gimm", "--weights-dir", str(weights_dir),
                            "--threads", "1"], env=clean_env(OMP_NUM_THREADS="1"))
    try:
        (address,) = daemon.address()
        remote = run_client([*FLAGS, "--server", address], y4m_clip, work_dir)  # the client's own folder is empty
        assert remote.returncode == 0, remote.stderr.decode() + daemon.log
        assert address in remote.stderr.decode()
        assert remote.stdout == want
    finally:
        daemon.kill()


def test_missing_files_are_named_in_one_line(tmp_path: Path, y4m_clip: bytes) -> None:
    """The first file the folder lacks, where it comes from and where to put it; exit codes as for any missing
    weights. In-process (mpd-client) and at daemon start (mpd-daemon)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    half = tmp_path / "half"
    write_user_files(half, synthetic_state_dict()).get("gimm").unlink()
    for folder, missing in [(empty, RAFT_FILE), (half, GIMM_FILE)]:
        client = run_client([*FLAGS, "--local"], y4m_clip, folder)
        err = client.stderr.decode()
        assert client.returncode != 0 and "Traceback" not in err
        (line,) = [x for x in err.splitlines() if "error" in x]
        assert f"{folder / missing}" in line and "GIMM-VFI" in line and str(folder) in line
        daemon = DaemonProcess(["--listen", "127.0.0.1:0", "--models", "gimm", "--weights-dir", str(folder)],
                               env=clean_env())
        assert daemon.wait(120) == 1
        assert len(daemon.lines) == 1 and f"{folder / missing}" in daemon.log, daemon.log


def test_an_empty_weight_file_says_so_when_loading(tmp_path: Path) -> None:
    from multipassdedup.core.models.gimm import GimmWeightsError

    files = write_user_files(tmp_path, synthetic_state_dict())
    files["gimm"].write_bytes(b"")
    with pytest.raises(GimmWeightsError) as refused:  # was "cannot read gimm weight file ...:" and nothing more
        load_model("gimm", device="cpu", weights_dir=tmp_path)
    assert str(refused.value) == f"cannot read gimm weight file {files['gimm']}: the file is empty"


def test_weights_verify_loads_the_gimm_files_when_present(tmp_path: Path) -> None:
    def verify(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*WEIGHTS, "--dir", str(folder), "verify"], capture_output=True, text=True,
                              timeout=300)

    absent = verify(tmp_path)  # no gimm files: not checked, not an error of theirs
    assert RAFT_FILE not in absent.stdout and GIMM_FILE not in absent.stdout
    state = synthetic_state_dict()
    files = write_user_files(tmp_path, state)
    good = verify(tmp_path)
    assert f"ok        {files['raft']}" in good.stdout and f"ok        {files['gimm']}" in good.stdout
    gimm_bytes = files["gimm"].read_bytes()
    for bad_bytes, why in [(b"", "the file is empty"), (bytes(range(256)) * 20, "not a checkpoint torch can read")]:
        files["gimm"].write_bytes(bad_bytes)  # an empty or random file: verify said ok
        broken = verify(tmp_path)
        assert broken.returncode == 1, broken.stdout
        assert f"invalid   {files['gimm']}" in broken.stdout and f"unchecked {files['raft']}" in broken.stdout
        assert f"gimm: {files['gimm']}: {why}" in broken.stderr and "Traceback" not in broken.stderr
    files["gimm"].write_bytes(gimm_bytes)
    write_user_files(tmp_path, {k: v for k, v in state.items() if k != "amt_fproj.weight"}, repeat_raft_in_gimm=False)
    bad = verify(tmp_path)
    assert bad.returncode == 1
    assert f"invalid   {files['gimm']}" in bad.stdout
    (reason,) = [line for line in bad.stderr.splitlines() if "gimm" in line]
    assert "amt_fproj.weight" in reason and "Traceback" not in bad.stderr
    files["raft"].unlink()
    incomplete = verify(tmp_path)
    assert incomplete.returncode == 1 and f"missing   {files['raft']}" in incomplete.stdout
    assert f"unchecked {files['gimm']}" in incomplete.stdout  # never loaded: not "ok"


def test_watch_config_runs_gimm() -> None:
    folder = build_folder({"in": "/a", "out": "/b", "model": "gimm", "n_pass": 1, "fps": "60"}, "cli")
    folder.validate()
    assert folder.processing_args()[:2] == ["-m", "gimm"]
