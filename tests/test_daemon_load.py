"""Load against a real ``mpd-daemon`` process: eight sessions at once, none lost, memory bounded; the device
shared per user."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from helpers.daemons import DaemonProcess, clean_env, run_local, run_remote, status, stream_until
from helpers.frames import moving_clip, psnr
from helpers.waiting import wait_until

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



def test_eight_concurrent_sessions_none_lost_memory_bounded(work_dir, rife) -> None:
    distinct = [moving_clip(FRAMES, *SIZE, step=1 + i, seed=i) for i in range(2)]
    references = [run_local(rife, c, n_pass=2) for c in distinct]
    clips = [distinct[i % 2] for i in range(SESSIONS)]
    wants = [references[i % 2] for i in range(SESSIONS)]
    daemon = DaemonProcess(["--listen", f"unix://{work_dir}/d.sock", "--max-sessions", str(SESSIONS),
                            "--max-sessions-per-user", str(SESSIONS), "--batch-window-ms", "5"], env=clean_env())
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


def test_the_device_is_shared_per_user_not_per_session(work_dir) -> None:
    # Four sessions of alice beside one of bob, all of one shape so that their steps could merge into every batch:
    # per-session sharing gave alice 4/5 of the device.
    tokens = work_dir / "tokens"
    tokens.write_text("alice ta\nbob tb\n")
    # The fair wait covers a session's time to prepare its next step. On a loaded machine (the test suite beside
    # other work) that took over the default 50 ms: bob's session then counted as idle between its steps and
    # alice's four took the slots (72/28, an intermittent failure). 500 ms covers it and keeps the test about
    # the scheduler's order, not the host's CPU share (docs/daemon.md, "Fairness").
    daemon = DaemonProcess(["--listen", f"unix://{work_dir}/d.sock", "--tokens", str(tokens), "--threads", "1",
                            "--fair-wait-ms", "500"], env=clean_env())
    clip = moving_clip(8, 64, 64)
    stop = threading.Event()
    errors: list[Exception] = []

    def frames_in() -> dict[str, int]:
        counts = {"alice": 0, "bob": 0}
        for s in status(address, token="ta").sessions:
            counts[s.user] += s.frames_in
        return counts

    threads = [threading.Thread(target=lambda token=token: stream_until(stop, address, clip, errors, token))
               for token in ["ta"] * 4 + ["tb"]]
    try:
        (address,) = daemon.address()
        for t in threads:
            t.start()
        assert wait_until(lambda: len(status(address, token="ta").sessions) == 5
                          and all(s.frames_in >= 3 for s in status(address, token="ta").sessions), 120)
        before = frames_in()
        assert wait_until(lambda: sum(frames_in().values()) - sum(before.values()) >= 100, 180)
        after = frames_in()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        daemon.kill()
    assert not errors, errors
    alice, bob = (after[u] - before[u] for u in ("alice", "bob"))
    assert 0.35 <= bob / (alice + bob) <= 0.65, (alice, bob)  # half each, not 4/5 for alice
