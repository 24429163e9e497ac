"""Load: eight sessions at once against a real ``mpd-daemon`` process; none lost, memory bounded."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import moving_clip
from daemon_harness import psnr, run_local, run_remote, status
from test_daemon_process import DaemonProcess, clean_env

SESSIONS = 8
FRAMES = 6
SIZE = (64, 64)


def rss_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing for pid {pid}")


def run_wave(address: str, clips: list) -> list:
    results: list = [None] * len(clips)

    def client(i: int) -> None:
        try:
            results[i] = run_remote(address, clips[i], n_pass=2)[0]
        except Exception as e:  # noqa: BLE001 - checked by the caller
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


@pytest.fixture
def work_dir():
    path = Path(tempfile.mkdtemp(prefix="mpd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_eight_concurrent_sessions_none_lost_memory_bounded(work_dir, rife) -> None:
    distinct = [moving_clip(FRAMES, *SIZE, step=1 + i, seed=i) for i in range(2)]
    references = [run_local(rife, c, n_pass=2) for c in distinct]
    clips = [distinct[i % 2] for i in range(SESSIONS)]
    wants = [references[i % 2] for i in range(SESSIONS)]
    daemon = DaemonProcess(["--listen", f"unix://{work_dir}/d.sock", "--max-sessions", str(SESSIONS),
                            "--batch-window-ms", "5"], env=clean_env())
    try:
        (address,) = daemon.address()
        pid = daemon.proc.pid
        idle_rss = rss_kib(pid, "VmRSS")
        first = run_wave(address, clips)
        after_first = rss_kib(pid, "VmRSS")
        second = run_wave(address, clips)
        after_second, peak = rss_kib(pid, "VmRSS"), rss_kib(pid, "VmHWM")
        st = status(address)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
    print(f"\n{SESSIONS} sessions x {FRAMES} frames {SIZE[1]}x{SIZE[0]}, twice: RSS idle {idle_rss / 1024:.0f} MiB, "
          f"after wave 1 {after_first / 1024:.0f} MiB, after wave 2 {after_second / 1024:.0f} MiB, "
          f"peak {peak / 1024:.0f} MiB; {st.batches} batches, {st.cross_session_batches} across sessions, "
          f"largest {st.max_batch_size_seen} pairs")
    for results in (first, second):
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, errors
        for got, want in zip(results, wants):
            assert len(got) == len(want)
            assert min(psnr(a, b) for a, b in zip(got, want)) >= 45
    assert (st.sessions_created, st.sessions_released, st.sessions_active) == (2 * SESSIONS, 2 * SESSIONS, 0)
    assert st.cross_session_batches > 0
    assert peak - idle_rss < 400 * 1024  # eight small sessions cost well under 400 MiB over the loaded models
    assert after_second - after_first < 64 * 1024  # a second identical wave does not keep memory
