"""A thin install: the wheel without the ``engine`` extra in a fresh virtual environment, against a real daemon.

The wheel is built from the repository and installed with its base dependencies only (pip takes them from
its cache or the package index) into a new venv, where torch cannot be imported. A daemon from this (full)
environment listens on loopback; from the thin venv the y4m pipe and file mode go through it (the same
frames as in-process here), ``mpd-client --status`` reads it, ``mpd-watch`` processes a file with it, and
without it every command refuses in one line, exit 69.
"""

from __future__ import annotations

import subprocess
import sys
import time
import venv
from pathlib import Path

import av
import numpy as np
import pytest

from helpers.commands import ENV, FFMPEG, SOURCE, client, frames_of, free_port, script, y4m
from helpers.frames import psnr
from helpers.wheel import build_wheel
from multipassdedup.client.remote.session import probe


@pytest.fixture(scope="session")
def thin_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv holding the wheel and its base dependencies, no engine."""
    root = tmp_path_factory.mktemp("thin")
    wheel = build_wheel(root / "dist")
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    # This environment's pip installs into the new one: the base dependencies only (grpcio, protobuf, PyAV,
    # numpy, watchdog), from pip's cache when an earlier run fetched them.
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)],
                               capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    return root / "venv" / "bin"


@pytest.fixture(scope="module")
def daemon_address(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real mpd-daemon from the full environment (rife on the CPU) on a loopback port."""
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("daemon") / "daemon.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(script("mpd-daemon") + ["--listen", address, "--device", "cpu", "--models", "rife"],
                                stdout=sink, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not probe(address):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "mpd-daemon did not start"
            time.sleep(0.2)
        yield address
    finally:
        proc.terminate()
        proc.wait(60)


def thin(bin_dir: Path, command: str, args: list[str], data: bytes = b"", env: dict | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / command), *args], input=data, capture_output=True, env=env or ENV,
                          timeout=300, cwd=cwd)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_the_thin_install_has_no_torch(thin_env: Path) -> None:
    code = ("import importlib.util, sys\n"
            "import multipassdedup.client.main, multipassdedup.client.watch.main, multipassdedup.weights.cli\n"
            "assert importlib.util.find_spec('torch') is None, 'torch is importable'\n"
            "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('multipassdedup.core')]\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([str(thin_env / "python"), "-c", code], capture_output=True, text=True, cwd=thin_env)
    assert proc.returncode == 0, proc.stderr
    listed = thin(thin_env, "mpd-weights", ["list"])
    assert listed.returncode == 0, listed.stderr.decode()
    assert "no engine installed" in listed.stdout.decode() and "rife.pkl" in listed.stdout.decode()


def test_pipe_through_the_daemon_gives_the_in_process_frames(thin_env: Path, daemon_address: str) -> None:
    data = y4m(8)
    remote = thin(thin_env, "mpd-client", ["--server", daemon_address, "-fps", "60"], data)
    assert remote.returncode == 0, remote.stderr.decode()
    found = thin(thin_env, "mpd-client", ["-fps", "60"], data, env=ENV | {"MPD_PROBE": daemon_address})
    assert found.returncode == 0, found.stderr.decode()
    assert f"using the daemon at {daemon_address}" in found.stderr.decode()
    local = client(["--local", "-fps", "60"], data)  # the full environment's in-process engine
    assert local.returncode == 0, local.stderr.decode()
    a, b, c = frames_of(remote.stdout), frames_of(found.stdout), frames_of(local.stdout)
    assert len(a) == len(b) == len(c) == 21
    assert min(psnr(x, y) for x, y in zip(a, c)) >= 45 and min(psnr(x, y) for x, y in zip(b, c)) >= 45


def test_file_mode_through_the_daemon_gives_the_in_process_frames(thin_env: Path, daemon_address: str,
                                                                  tmp_path: Path) -> None:
    src = tmp_path / "in.mkv"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", SOURCE, "-frames:v", "6", "-c:v", "ffv1",
                    str(src)], check=True)
    remote = thin(thin_env, "mpd-client", ["-i", str(src), "-o", str(tmp_path / "remote.mkv"), "--server",
                                           daemon_address, "-np", "1", "-c", "ffv1"])
    assert remote.returncode == 0, remote.stderr.decode()
    local = client(["-i", str(src), "-o", str(tmp_path / "local.mkv"), "--local", "-np", "1", "-c", "ffv1"])
    assert local.returncode == 0, local.stderr.decode()
    a, b = decoded(tmp_path / "remote.mkv"), decoded(tmp_path / "local.mkv")
    assert len(a) == len(b) == 16
    assert min(psnr(x, y) for x, y in zip(a, b)) >= 45


def test_status_and_the_drop_folder_through_the_daemon(thin_env: Path, daemon_address: str, tmp_path: Path) -> None:
    status = thin(thin_env, "mpd-client", ["--status", "--server", daemon_address])
    assert status.returncode == 0, status.stderr.decode()
    assert status.stdout.decode().startswith(f"daemon at {daemon_address}: cpu, models rife, up ")
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outbox.mkdir()
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", SOURCE, "-frames:v", "4", "-c:v", "libx264",
                    "-preset", "ultrafast", str(inbox / "clip.mkv")], check=True)
    watched = thin(thin_env, "mpd-watch", ["--in", str(inbox), "--out", str(outbox), "--once", "--settle", "0.2",
                                           "--state-dir", str(tmp_path / "state"), "-np", "1", "--", "--preset",
                                           "ultrafast"], env=ENV | {"MPD_PROBE": daemon_address})
    assert watched.returncode == 0, watched.stderr.decode()
    (output,) = outbox.glob("clip*.mkv")
    assert len(decoded(output)) == 11  # ceil(4 * 60 / (24000/1001))


def test_without_daemon_and_engine_every_command_refuses_in_one_line(thin_env: Path, tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    env = ENV | {"MPD_PROBE": nobody}
    refusal = (f"no daemon answered at {nobody}, and the engine is not installed to run in-process: give --server "
               f"ADDR")
    piped = thin(thin_env, "mpd-client", ["-np", "1"], y4m(2), env=env)
    assert piped.returncode == 69
    last = piped.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"mpd-client: error: {refusal}") and last.endswith("or install multipassdedup[engine]")
    assert "Traceback" not in piped.stderr.decode()
    local = thin(thin_env, "mpd-client", ["--local", "-np", "1"], y4m(2), env=env)
    assert local.returncode == 69 and "install multipassdedup[engine]" in local.stderr.decode()
    inbox = tmp_path / "in"
    inbox.mkdir()
    watched = thin(thin_env, "mpd-watch", ["--in", str(inbox), "--out", str(tmp_path / "out"), "--once",
                                           "--state-dir", str(tmp_path / "state")], env=env)
    assert watched.returncode == 69
    assert watched.stderr.decode().splitlines() == [f"mpd-watch: error: {refusal} (server in a config file), or "
                                                    f"install multipassdedup[engine]"]
    daemon = thin(thin_env, "mpd-daemon", ["--listen", nobody])
    assert daemon.returncode == 69
    assert daemon.stderr.decode().splitlines()[0].startswith("mpd-daemon: error: this install has no engine")
