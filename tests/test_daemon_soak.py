"""Soak: a real ``mpd-daemon`` serves three well-behaved users while abusive clients hold what they can.

50 Interpolate streams that never send their config, 20 idle reflection streams and 200 half-sent
HTTP requests to the metrics port are opened (each by a script in its own process) and held, while
three users stream real frames. The users must finish, health checks must answer within a second
throughout, and afterwards every session created must have been released and the daemon's memory
must be back within 10 % of its level before. Loopback only; short idle timeouts keep it bounded.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.abusive_clients import HALF_OPEN_HTTP, IDLE_REFLECTION, NEVER_SENDING, ScriptClient
from helpers.daemons import DaemonProcess, clean_env, run_remote, status
from helpers.frames import moving_clip
from helpers.waiting import wait_until
from multipassdedup.client.remote.session import open_channel

IDLE = 8.0  # --idle-timeout and --stream-idle-timeout: the abusers' streams are closed after this long
USERS = {"alice": "tok-a", "bob": "tok-b", "carol": "tok-c"}
ABUSER = ("mallory", "tok-m")
FRAMES = 12


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class HealthProber:
    """Checks the daemon's health every 0.2 s with a 1 s deadline, on a thread, until stopped."""

    def __init__(self, address: str) -> None:
        self.channel = open_channel(address)
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.answers: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HealthProber:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            started = time.monotonic()
            try:
                reply = self.stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError as e:
                self.failures.append(f"{e.code().name} after {time.monotonic() - started:.2f} s")
                continue
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                self.failures.append(f"status {reply.status}")
            self.answers.append(time.monotonic() - started)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.channel.close()


def run_users(address: str, clip: list) -> dict[str, object]:
    """One session per well-behaved user, at once; each user's output frames, or the error it ended with."""
    results: dict[str, object] = {}

    def user(name: str, token: str) -> None:
        try:
            results[name] = run_remote(address, clip, token=token, n_pass=2)[0]
        except Exception as e:  # noqa: BLE001 - checked by the caller
            results[name] = e

    threads = [threading.Thread(target=user, args=item) for item in USERS.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results



def test_well_behaved_users_are_served_while_abusers_hold_what_they_can(work_dir) -> None:
    tokens = work_dir / "tokens"
    tokens.write_text("".join(f"{u} {t}\n" for u, t in [*USERS.items(), ABUSER]))
    daemon = DaemonProcess(["--listen", "127.0.0.1:0", "--tokens", str(tokens), "--threads", "1",
                            "--max-sessions", "8", "--max-sessions-per-user", "2", "--idle-timeout", str(IDLE),
                            "--max-other-streams", "4", "--stream-idle-timeout", str(IDLE),
                            "--metrics", "127.0.0.1:0"], env=clean_env())
    clip = moving_clip(FRAMES, 64, 64)
    abusers: list[ScriptClient] = []
    prober: HealthProber | None = None
    try:
        (address,) = daemon.address()
        # logged just after the line address() waits for: wait for it too
        metrics_port = int(wait_until(lambda: re.search(r"metrics on port (\d+)", daemon.log), 60, "the metrics port")
                           .group(1))
        pid, token = daemon.proc.pid, ABUSER[1]
        warm = run_users(address, clip)  # the models' and pools' memory is taken once, before the baseline
        assert all(isinstance(r, list) and len(r) > FRAMES for r in warm.values()), warm
        before = rss_kib(pid)

        prober = HealthProber(address).start()
        never_sending = ScriptClient(NEVER_SENDING, address, 50, token)
        abusers.append(never_sending)
        never_sending.line("opened")
        # mallory holds the two sessions a user may have; the 48 others were refused at once.
        assert wait_until(lambda: never_sending.count("ended RESOURCE_EXHAUSTED") == 48, 30)
        st = status(address, token=USERS["alice"])
        assert (st.sessions_active, [s.user for s in st.sessions]) == (2, ["mallory", "mallory"])
        reflection = ScriptClient(IDLE_REFLECTION, address, 20, token)
        half_open = ScriptClient(HALF_OPEN_HTTP, "127.0.0.1", metrics_port, 200)
        abusers += [reflection, half_open]
        assert reflection.line("first") == "first 4 refused 16"
        half_open.line("opened")

        results = run_users(address, clip)  # while all that is held open
        held = status(address, token=USERS["alice"]).sessions_active
        assert all(isinstance(r, list) and len(r) == len(warm[u]) for u, r in results.items()), results

        # The abusers' streams and connections are closed by the idle timeouts, not by them going away.
        assert never_sending.line("all ended", 60) == "all ended DEADLINE_EXCEEDED=2 RESOURCE_EXHAUSTED=48"
        reflection.line("all ended", 60)
        assert reflection.count("ended CANCELLED") == 4
        half_open.line("all closed", 60)
        prober.stop()

        st = status(address, token=USERS["alice"])
        assert st.sessions_active == 0 and st.sessions_created == st.sessions_released == 3 + 3 + 2
        assert wait_until(lambda: rss_kib(pid) <= before * 1.10, 30), (before, rss_kib(pid))
        after = rss_kib(pid)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if prober is not None:
            prober.stop()
        for client in abusers:
            client.kill()
        daemon.kill()
    assert held in (0, 2)  # mallory's two idle sessions, unless their timeout came first
    assert not prober.failures, prober.failures
    assert prober.answers and max(prober.answers) < 1.0
    print(f"\nsoak: {len(prober.answers)} health checks, slowest {max(prober.answers) * 1000:.0f} ms; "
          f"RSS before {before / 1024:.0f} MiB, after {after / 1024:.0f} MiB")
