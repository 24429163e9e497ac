"""mpd-client against a real daemon: the same frames as in-process, the automatic choice, and daemon failures."""

from __future__ import annotations

import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers.commands import ENV, FFMPEG, SOURCE, client, frames_of, free_port, script, y4m
from helpers.frames import H, W, psnr
from multipassdedup.client.remote.session import RemoteEngine
from multipassdedup.daemon.limits import Limits
from multipassdedup.daemon.options import DaemonOptions
from multipassdedup.daemon.server import DaemonServer
from multipassdedup.units import format_bytes


@pytest.fixture(scope="module")
def daemon(rife):
    """An in-process daemon on loopback TCP serving the session's RIFE model."""
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start()
    yield server
    server.stop(0)


@pytest.fixture(scope="module")
def address(daemon) -> str:
    return next(a for a in daemon.addresses if not a.startswith("unix"))


def test_server_and_embedded_give_the_same_frames(address: str) -> None:
    data = y4m(8)
    remote = client(["--server", address, "-fps", "60"], data)
    local = client(["--local", "-fps", "60", "--precision", "fp32"], data)  # the daemon serves the fp32 fixture
    assert remote.returncode == 0, remote.stderr.decode()
    assert local.returncode == 0, local.stderr.decode()
    assert f"using the daemon at {address}" in remote.stderr.decode()
    assert remote.stdout.split(b"\n", 1)[0] == local.stdout.split(b"\n", 1)[0]  # same header, F60:1
    a, b = frames_of(remote.stdout), frames_of(local.stdout)
    assert len(a) == len(b) == 21
    assert min(psnr(x, y) for x, y in zip(a, b)) >= 45  # float rounding of batched calls aside, identical


def test_automatic_choice(address: str) -> None:
    data = y4m(3)
    found = client(["-np", "1"], data, env=ENV | {"MPD_PROBE": f"127.0.0.1:{free_port()},{address}"})
    assert found.returncode == 0, found.stderr.decode()
    assert f"using the daemon at {address}" in found.stderr.decode()
    none = client(["-np", "1"], data, env=ENV | {"MPD_PROBE": f"127.0.0.1:{free_port()}"})
    assert none.returncode == 0, none.stderr.decode()
    assert "no daemon at 127.0.0.1:" in none.stderr.decode() and "running the engine in-process" in \
        none.stderr.decode()
    assert len(frames_of(found.stdout)) == len(frames_of(none.stdout)) == 8


def test_file_mode_through_the_daemon(address: str, tmp_path: Path) -> None:
    src = tmp_path / "in.mkv"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", SOURCE, "-f", "lavfi", "-i",
                    "sine=sample_rate=48000", "-frames:v", "6", "-t", "0.25", "-c:v", "libx264", "-preset",
                    "ultrafast", "-c:a", "aac", str(src)], check=True)
    dst = tmp_path / "out.mkv"
    proc = client(["-i", str(src), "-o", str(dst), "--server", address, "-np", "1", "--preset", "ultrafast"])
    assert proc.returncode == 0, proc.stderr.decode()
    with av.open(str(dst)) as c:
        assert len(c.streams.audio) == 1
        assert sum(1 for _ in c.decode(video=0)) == 16  # ceil(6 * 2.5025)


def test_unreachable_server_is_exit_69() -> None:
    proc = client(["--server", f"127.0.0.1:{free_port()}"], y4m(2))
    err = proc.stderr.decode()
    assert proc.returncode == 69, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("mpd-client: error: ")


def test_status_shows_the_running_sessions_and_the_memory_budget(rife) -> None:
    limits = Limits(memory_budget=2 ** 30)
    # fp32 only: with auto, a CPU with native bf16 would serve a bf16 variant too (the line below depends on it)
    options = DaemonOptions(listen=["127.0.0.1:0"], token="s3cret", limits=limits, precisions=["fp32"])
    server = DaemonServer(options, {"rife": rife}).start()
    frames = [np.zeros((H, W, 3), np.uint8) for _ in range(2)]
    try:
        addr = server.addresses[0]
        engine = RemoteEngine(addr, token="s3cret", n_pass=3, src_fps=Fraction(24000, 1001), dst_fps=60)
        engine.push(frames[0])
        proc = client(["--status", "--server", addr, "--token", "s3cret"])
        out = proc.stdout.decode()
        assert proc.returncode == 0, proc.stderr.decode()
        assert out.startswith(f"daemon at {addr}: cpu, models rife, up ")
        assert out.splitlines()[1] == f"precisions: rife fp32 ({rife.precision_reason})"
        assert "sessions: 1 of 8 running, at most 4 per user (1 accepted, 0 ended, 0 refused as busy)" in out
        reserved = server.registry.memory_reserved
        assert f"session memory: {format_bytes(reserved)} of 1.0 GiB reserved, at most 512.0 MiB per user;" in out
        assert reserved > 0
        header, row = out.splitlines()[-2:]
        assert header.split() == ["SESSION", "USER", "PEER", "IN", "OUT", "AGE", "MEMORY"]
        assert row.split()[0] == "s1" and row.split()[3] == "1" and row.endswith(format_bytes(reserved))
        denied = client(["--status", "--server", addr, "--token", "wrong"])
        assert denied.returncode == 2 and "wrong token" in denied.stderr.decode()
        engine.push(frames[1])
        engine.flush()
    finally:
        server.stop(0)
    gone = client(["--status", "--server", addr])
    assert gone.returncode == 69 and gone.stderr.decode().startswith("mpd-client: error: daemon at")


def test_wrong_token_is_a_usage_error(rife) -> None:
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], token="s3cret"), {"rife": rife}).start()
    try:
        addr = server.addresses[0]
        refused = client(["--server", addr, "--token", "wrong"], y4m(2))
        assert refused.returncode == 2, refused.stderr.decode()
        assert "UNAUTHENTICATED" in refused.stderr.decode()
        accepted = client(["--server", addr, "-np", "1"], y4m(2), env=ENV | {"MPD_TOKEN": "s3cret"})
        assert accepted.returncode == 0, accepted.stderr.decode()
    finally:
        server.stop(0)


def test_daemon_killed_mid_stream() -> None:
    """A real mpd-daemon is killed -9 while the client streams through it: exit 69, one line, no traceback."""
    port = free_port()
    daemon = subprocess.Popen(script("mpd-daemon") + ["--listen", f"127.0.0.1:{port}", "--device", "cpu",
                                                      "--models", "rife"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 120
        from multipassdedup.client.remote.session import probe

        while not probe(f"127.0.0.1:{port}", 0.5):
            assert daemon.poll() is None and time.monotonic() < deadline, "mpd-daemon did not start"
            time.sleep(0.2)
        data = y4m(48)
        header, _, body = data.partition(b"\n")
        proc = subprocess.Popen(script("mpd-client") + ["--server", f"127.0.0.1:{port}", "-np", "1"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        proc.stdin.write(header + b"\n" + body[: len(body) // 4])
        proc.stdin.flush()
        assert proc.stdout.read(200).startswith(b"YUV4MPEG2")  # the session is streaming
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
        try:
            proc.stdin.write(body[len(body) // 4:])
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the client may already have given up
        proc.stdout.read()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 69, err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("mpd-client: error: daemon at 127.0.0.1:")
    finally:
        daemon.kill()
        daemon.wait(timeout=30)
