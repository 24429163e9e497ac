"""A shared daemon as its users meet it: a real ``mpd-daemon`` process, abusive clients as scripts in processes of
their own (tests/abusive_clients.py), everything over real sockets.

One user idling at the memory budget does not lock out another; users get equal device time whatever their frame
sizes; a scrape is answered beside slow senders; bytes that are no message end their call with one line in the
log; a huge string is cut; a drain does not wait for streams that never sent a config.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest

from helpers.abusive_clients import CONFIG_ONLY, NEVER_SENDING, SLOW_HTTP, UNDECODABLE, ScriptClient
from helpers.daemons import DaemonProcess, clean_env, config, messages, raw_session, status, stream_until
from helpers.frames import FILM, moving_clip
from helpers.waiting import wait_until
from multipassdedup.client.remote.session import RemoteEngine

# 4 config-only sessions of 512x288 with 6 passes hold 195 MB, just under this budget; bob's 256x144 session with
# 2 passes (7.4 MB) then no longer fits beside them: without a per-user share he was refused for as long as alice
# idled (up to the idle timeout). Half the budget each: alice gets 2 sessions, bob his one.
BUDGET = "1.98e8"


@pytest.fixture(scope="module")
def daemon():
    """One daemon for the tests that only use it: per-user tokens, a small memory budget, metrics."""
    folder = Path(tempfile.mkdtemp(prefix="mpd-"))
    (folder / "tokens").write_text("alice ta\nbob tb\n")
    process = DaemonProcess(["--listen", "127.0.0.1:0", "--tokens", str(folder / "tokens"), "--threads", "1",
                             "--memory-budget", BUDGET, "--metrics", "127.0.0.1:0", "--fair-wait-ms", "500"],
                            env=clean_env())
    try:
        (address,) = process.address()
        # The daemon logs its metrics port just after the line address() waits for: wait for it too (reading the
        # log at once lost that race under load).
        match = wait_until(lambda: re.search(r"metrics on port (\d+)", process.log), 60)
        assert match, process.log
        process.grpc_address, process.metrics_port = address, int(match.group(1))
        yield process
    finally:
        process.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_second_users_session_starts_while_another_user_idles_at_the_budget(daemon) -> None:
    alice = ScriptClient(CONFIG_ONLY, daemon.grpc_address, 4, "ta", 512, 288, 6)
    try:
        alice.line("opened")
        assert wait_until(lambda: alice.count("started") + alice.count("ended") == 4, 60), alice.lines
        assert alice.count("started") == 2  # her share of the budget: half
        refused = [x for x in alice.lines if x.startswith("ended RESOURCE_EXHAUSTED")]
        assert len(refused) == 2 and all("--max-memory-per-user" in x and "retry later" in x for x in refused)
        st = status(daemon.grpc_address, token="ta")
        assert st.max_memory_per_user_bytes == st.memory_budget_bytes // 2
        assert sum(s.memory_bytes for s in st.sessions if s.user == "alice") <= st.max_memory_per_user_bytes
        # bob's session starts and runs to its end while alice's two sit on their memory, sending nothing
        clip = moving_clip(3, 144, 256)
        engine = RemoteEngine(daemon.grpc_address, token="tb", n_pass=2, src_fps=FILM, dst_fps=60)
        out = []
        for frame in clip:
            out += engine.push(frame)
        out += engine.flush()
        assert len(out) > len(clip)
        assert alice.count("started") == 2 and alice.count("ended") == 2  # hers still hold their memory
    finally:
        alice.kill()
    assert wait_until(lambda: status(daemon.grpc_address, token="ta").memory_reserved_bytes == 0, 30)


def test_users_get_equal_device_time_whatever_their_frame_sizes(daemon) -> None:
    # A 128x72 session beside a 512x288 one (about ten times the pixels per frame). Sharing by frames computed
    # gave the small one a tenth of the device; sharing by device time gives each half of it, so the small one
    # computes several times as many frames. Shares are read from what the scheduler charged (Status), not timed.
    stop = threading.Event()
    errors: list[Exception] = []

    def charged() -> dict[str, tuple[float, int]]:
        """user -> (device seconds, frames in) of the running sessions."""
        return {s.user: (s.device_seconds, s.frames_in) for s in status(daemon.grpc_address, token="ta").sessions}

    def just_after_a_large_batch() -> dict[str, tuple[float, int]]:
        """A snapshot taken as soon as bob's device seconds grow: both ends of the window then fall between two of
        his (long) batches, and the shares measure whole batches, whatever the host's load."""
        first = charged()
        latest: dict[str, tuple[float, int]] = {}

        def grew() -> bool:
            latest.update(charged())
            return latest["bob"][0] > first["bob"][0]

        assert wait_until(grew, 120, interval=0.02), errors
        return dict(latest)

    threads = [threading.Thread(target=stream_until, args=(stop, daemon.grpc_address, moving_clip(6, h, w), errors,
                                                           token)) for token, h, w in [("ta", 72, 128),
                                                                                       ("tb", 288, 512)]]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(c := charged()) == 2 and min(f for _, f in c.values()) >= 3, 120), errors
        before = just_after_a_large_batch()
        assert wait_until(lambda: sum(charged()[u][0] - before[u][0] for u in before) >= 8.0, 240), errors
        after = just_after_a_large_batch()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors
    seconds = {u: after[u][0] - before[u][0] for u in before}
    frames = {u: after[u][1] - before[u][1] for u in before}
    share = seconds["alice"] / (seconds["alice"] + seconds["bob"])
    print(f"\ndevice seconds {seconds}, input frames {frames}: 128x72's share {share:.2f}")
    assert 0.35 <= share <= 0.65, (seconds, frames)
    assert frames["alice"] >= 3 * frames["bob"], (seconds, frames)  # by frames it was about one for one


def test_a_scrape_is_answered_beside_slow_senders(daemon) -> None:
    # Sixteen connections each sending their request a byte a second: with a timeout per read and a thread per
    # connection they held every slot, and every scrape was refused for as long as they kept sending.
    slow = ScriptClient(SLOW_HTTP, "127.0.0.1", daemon.metrics_port, 16, 1.0)
    try:
        slow.line("opened")
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=10) as reply:
                assert reply.status == 200 and b"mpd_sessions_active" in reply.read()
    finally:
        slow.kill()


def test_undecodable_request_bytes_end_invalid_argument_with_one_log_line(daemon) -> None:
    lines_before = len(daemon.lines)
    script = ScriptClient(UNDECODABLE, daemon.grpc_address, 20)
    script.line("done")
    check = script.line("/grpc.health.v1.Health/Check")
    status_line = script.line("/multipassdedup.v1.MultiPassDedup/Status")
    assert "INVALID_ARGUMENT=20" in check and "is not a grpc.health.v1.HealthCheckRequest message" in check
    assert "UNAUTHENTICATED=20" in status_line  # no token: refused before its bytes matter
    new = daemon.lines[lines_before:]
    assert not any("Traceback" in x or "Exception deserializing" in x or "ERROR" in x for x in new), new
    assert sum("its bytes are not a" in x for x in new) == 1, new  # one line, the others counted


def test_a_long_string_is_cut_in_the_reply_and_the_log(daemon) -> None:
    lines_before = len(daemon.lines)
    _, err = raw_session(daemon.grpc_address, messages(config(precision="x" * 5_000_000), []), token="ta")
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert err.details().startswith("precision must be one of auto, fp32, bf16, fp16, got 'xxx")
    assert err.details().endswith("... (5000000 characters)") and len(err.details()) < 200
    assert wait_until(lambda: any("not started" in x for x in daemon.lines[lines_before:]), 10)
    new = daemon.lines[lines_before:]
    assert max(len(x) for x in new) < 400 and any("(5000000 characters)" in x for x in new), new


# Runs a command with stdin passed on and prints its exit status and peak resident memory (KiB, this process's only
# child), then its stderr.
PEAK_MEMORY = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], stdin=sys.stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.stdout.write(proc.stderr.decode())
"""


def test_a_huge_y4m_header_is_refused_by_the_daemons_limit_before_a_frame_is_allocated(daemon) -> None:
    # 16384x16384 16-bit 4:4:4 announces 1.6 GB frames; a 1 KB body follows. The client allocated the whole frame
    # buffer (1.6 GB, 1.85 GB peak) before it found the body short; now it asks the daemon's frame limit first.
    header = b"YUV4MPEG2 W16384 H16384 F24:1 Ip C444p16\n"
    client = str(Path(sys.executable).with_name("mpd-client"))
    proc = subprocess.run([sys.executable, "-c", PEAK_MEMORY, client, "--server", daemon.grpc_address,
                           "--token", "ta"], input=header + b"FRAME\n" + bytes(1024), capture_output=True,
                          timeout=120)
    first, _, err = proc.stdout.decode().partition("\n")
    code, peak_kib = map(int, first.split())
    assert code == 65, err
    (error,) = [line for line in err.splitlines() if "error" in line]
    assert error == (f"mpd-client: error: the input's frames are 16384x16384, more than the 8847360 pixels the "
                     f"daemon at {daemon.grpc_address} serves (its --max-frame-pixels)")
    print(f"\npeak memory of the refused client: {peak_kib / 1024:.0f} MiB")
    assert peak_kib < 600 * 1024  # far below the 1.6 GB frame


def test_a_drain_drops_streams_without_a_config_at_once(work_dir) -> None:
    # Eight streams that never send their config: the drain waited its whole timeout for them (8 streams: 32 s),
    # then logged them as "stream ended before its SessionConfig".
    daemon = DaemonProcess(["--listen", f"unix://{work_dir}/d.sock", "--drain-timeout", "120",
                            "--max-sessions-per-user", "8"], env=clean_env())
    never = None
    try:
        (address,) = daemon.address()
        never = ScriptClient(NEVER_SENDING, address, 8, "")
        never.line("opened")
        assert wait_until(lambda: status(address).sessions_active == 8, 30)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0  # in seconds, not the 120 s drain timeout
        assert never.line("all ended").endswith("UNAVAILABLE=8")
    finally:
        if never is not None:
            never.kill()
        daemon.kill()
    assert "stream ended before its SessionConfig" not in daemon.log
    assert daemon.log.count("not started: UNAVAILABLE the daemon is shutting down; no new sessions") == 8
    assert "drain timeout" not in daemon.log
