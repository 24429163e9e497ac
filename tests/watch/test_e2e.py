"""mpd-watch end to end: real mpd-daemon on a unix socket, real mpd-client, real videos, real inotify."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import pytest

from helpers.waiting import wait_until
from helpers.watching import DropFolder, expected_frames, log_of, stop, video_facts
from multipassdedup.client.watch.journal import JobState

FINAL = {JobState.DONE, JobState.FAILED, JobState.DUPLICATE, JobState.QUARANTINED, JobState.ABANDONED}


# Moving content (a still source would make every pair a duplicate and the job instant): long
# enough that the job is still running when the watcher is killed, even on an idle machine.
LONG_FRAMES = 120


def make_clip(path: Path, source: str, frames: int) -> Path:
    """A small H.264 clip at 24000/1001 fps made by the real ffmpeg."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                    "-i", f"{source}=size=128x64:rate=24000/1001", "-frames:v", str(frames),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {"a": make_clip(root / "a.mkv", "testsrc", 8), "b": make_clip(root / "b.mkv", "testsrc2", 8),
            "long": make_clip(root / "long.mkv", "testsrc2", LONG_FRAMES)}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    """A real mpd-daemon (rife on the CPU) on a unix socket; yields its address."""
    root = tmp_path_factory.mktemp("daemon")
    sock = root / "mpd.sock"
    log = open(root / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "multipassdedup.daemon.main", "--listen", f"unix://{sock}",
                             "--device", "cpu", "--models", "rife"], stdout=log, stderr=subprocess.STDOUT)

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mpd-daemon exited: {(root / 'daemon.log').read_text()}")
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(sock))
            return True
        except OSError:
            return False
    wait_until(answers, 120, "mpd-daemon to listen")
    yield f"unix://{sock}"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    log.close()


def finished(drop: DropFolder, count: int, timeout: float) -> list:
    def ready():
        jobs = drop.jobs() if drop.state.exists() else []
        return jobs if len(jobs) >= count and all(j.state in FINAL for j in jobs) else None
    return wait_until(ready, timeout, f"{count} finished jobs", interval=0.2)


def test_three_videos_at_once_valid_corrupt_and_slow(tmp_path: Path, clips, daemon: str) -> None:
    drop = DropFolder(tmp_path)
    watcher = drop.start("--server", daemon, "--concurrency", "2", client=None, settle=1.0)
    try:
        wait_until(lambda: "mpd-watch ready" in log_of(watcher), 30, "the watcher to start")
        slow_data = clips["b"].read_bytes()
        writer_done = []

        def write_slowly() -> None:
            with open(drop.inbox / "slow.mkv", "wb") as handle:
                step = len(slow_data) // 8 + 1
                for i in range(0, len(slow_data), step):
                    handle.write(slow_data[i:i + step])
                    handle.flush()
                    time.sleep(0.4)
            writer_done.append(time.time())

        writer = threading.Thread(target=write_slowly)
        writer.start()
        drop.drop("valid.mkv", clips["a"].read_bytes())
        drop.drop("corrupt.mkv", random.Random(0).randbytes(4000))  # fixed: random bytes may probe as subtitles
        writer.join()
        jobs = finished(drop, 3, 240)
    finally:
        assert stop(watcher, timeout=60) == 0
    by_name = {j.name: j for j in jobs}
    assert {n: j.state for n, j in by_name.items()} == {
        "valid.mkv": JobState.DONE, "slow.mkv": JobState.DONE, "corrupt.mkv": JobState.FAILED}
    assert by_name["slow.mkv"].created_at > writer_done[0] and by_name["slow.mkv"].size == len(slow_data)
    assert drop.outputs() == ["slow.mkv", "valid.mkv"]             # one output each, nothing partial
    for name in ("slow.mkv", "valid.mkv"):
        assert video_facts(drop.outbox / name) == (expected_frames(8), Fraction(60), (128, 64))
    assert by_name["corrupt.mkv"].exit_code == 65 and by_name["corrupt.mkv"].attempts == 1
    report = (drop.inbox / "failed" / "corrupt.mkv.log").read_text()
    assert "bad input" in report and "Invalid data" in report


def test_kill_9_mid_job_with_the_real_client(tmp_path: Path, clips, daemon: str) -> None:
    drop = DropFolder(tmp_path)
    shutil.copy(clips["long"], drop.inbox / "long.mkv")
    watcher = drop.start("--server", daemon, client=None)
    wait_until(lambda: drop.state.exists() and drop.jobs() and drop.jobs()[0].pid, 60, "the client to start")
    client_pid = drop.jobs()[0].pid
    time.sleep(1.5)                                                  # well into the job
    assert drop.jobs()[0].state is JobState.RUNNING
    watcher.kill()
    watcher.wait()
    wait_until(lambda: not Path(f"/proc/{client_pid}").exists() or
               Path(f"/proc/{client_pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z",
               10, "the client to die with the watcher")
    assert not (drop.outbox / "long.mkv").exists()
    restarted = drop.start("--server", daemon, client=None)
    try:
        jobs = finished(drop, 1, 240)
    finally:
        assert stop(restarted, timeout=60) == 0
    assert jobs[0].state is JobState.DONE and jobs[0].attempts == 2
    assert drop.outputs() == ["long.mkv"]                           # work dirs gone, one output
    assert video_facts(drop.outbox / "long.mkv") == (expected_frames(LONG_FRAMES), Fraction(60), (128, 64))


def test_dropped_while_down_then_same_content_again(tmp_path: Path, clips, daemon: str) -> None:
    drop = DropFolder(tmp_path)
    shutil.copy(clips["a"], drop.inbox / "first.mkv")              # nobody is watching yet
    assert drop.start("--server", daemon, "--once", client=None).wait(timeout=240) == 0
    shutil.copy(clips["a"], drop.inbox / "copy of first.mkv")      # same content, dropped again
    assert drop.start("--server", daemon, "--once", client=None).wait(timeout=240) == 0
    jobs = drop.jobs()
    assert [(j.name, j.state) for j in jobs] == [("first.mkv", JobState.DONE),
                                                 ("copy of first.mkv", JobState.DUPLICATE)]
    assert drop.outputs() == ["first.mkv"]
    assert video_facts(drop.outbox / "first.mkv")[0] == expected_frames(8)


def test_daemon_down_is_retried_without_using_attempts(tmp_path: Path, clips) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    drop = DropFolder(tmp_path)
    shutil.copy(clips["a"], drop.inbox / "a.mkv")
    watcher = drop.start("--server", dead, "--max-attempts", "1", client=None)
    try:
        wait_until(lambda: drop.state.exists() and drop.jobs() and drop.jobs()[0].transient_failures >= 2,
                   90, "two transient failures")
    finally:
        assert stop(watcher, timeout=60) == 0
    job = drop.jobs()[0]
    assert job.state in (JobState.WAITING, JobState.QUEUED) and job.attempts == 0 and job.exit_code == 69
    assert drop.outputs() == [] and not list((drop.inbox / "failed").iterdir())


@pytest.mark.slow
def test_in_process_engine(tmp_path: Path, clips) -> None:
    drop = DropFolder(tmp_path)
    shutil.copy(clips["a"], drop.inbox / "a.mkv")
    assert drop.start("--local", "--once", client=None).wait(timeout=600) == 0
    assert [j.state for j in drop.jobs()] == [JobState.DONE]
    assert video_facts(drop.outbox / "a.mkv") == (expected_frames(8), Fraction(60), (128, 64))
