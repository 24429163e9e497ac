"""The client's path to a daemon: daemons that do not answer, the automatic choice's fallbacks, gRPC's own stderr.

Real sockets throughout: a TCP listener that accepts and says nothing, one that completes the HTTP/2 handshake
and then says nothing, a gRPC server whose sessions start and then hold the stream, and real daemons that
drain, lack the model or are busy; the client runs as the real ``mpd-client`` process.
"""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from fractions import Fraction

import grpc
import numpy as np
import pytest

from helpers.commands import ENV, client, frames_of, script, y4m
from helpers.frames import H, W
from helpers.waiting import wait_until
from multipassdedup.client.errors import DaemonUnavailableError
from multipassdedup.client.remote.session import Health, RemoteEngine, health
from multipassdedup.daemon.limits import Limits
from multipassdedup.daemon.options import DaemonOptions
from multipassdedup.daemon.server import DaemonServer
from multipassdedup.proto import mpd_pb2, mpd_pb2_grpc

HTTP2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # an empty SETTINGS frame: the server's preface
HTTP2_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


class MuteListener:
    """A loopback TCP listener that accepts every connection and never answers; ``handshake`` completes the
    HTTP/2 connection preface first (so gRPC sees a ready channel) and then says nothing more."""

    def __init__(self, handshake: bool = False) -> None:
        self.handshake = handshake
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._conns.append(conn)
            if self.handshake:
                threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        """Send the server preface and acknowledge the client's settings, then read and drop everything."""
        conn.settimeout(0.2)
        conn.sendall(HTTP2_SETTINGS + HTTP2_SETTINGS_ACK)
        while not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def mute():
    listener = MuteListener()
    yield listener
    listener.close()


@pytest.fixture
def handshake_only():
    listener = MuteListener(handshake=True)
    yield listener
    listener.close()


class HoldingServicer(mpd_pb2_grpc.MultiPassDedupServicer):
    """Starts every session (frames_in_flight 1), then reads the stream and never answers again."""

    def Interpolate(self, request_iterator: Iterator[mpd_pb2.ClientMessage],  # noqa: N802 - gRPC's naming
                    context: grpc.ServicerContext) -> Iterator[mpd_pb2.ServerMessage]:
        config = next(request_iterator).config
        yield mpd_pb2.ServerMessage(start=mpd_pb2.SessionStart(
            session_id="held", out_fps=config.dst_fps, n_pass=1, frames_in_flight=1, device="nowhere"))
        for _ in request_iterator:  # until the client gives up and cancels
            pass


@pytest.fixture
def holding_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    mpd_pb2_grpc.add_MultiPassDedupServicer_to_server(HoldingServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def daemon_rife(rife):
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start()
    yield server
    server.stop(0)


def lines(stderr: bytes) -> list[str]:
    return stderr.decode().strip().splitlines()


def held_session(address: str) -> RemoteEngine:
    """A running session on ``address`` (one frame pushed), to make the daemon busy or keep a drain waiting."""
    engine = RemoteEngine(address, n_pass=1, src_fps=Fraction(24000, 1001), dst_fps=60)
    engine.push(np.zeros((H, W, 3), np.uint8))
    return engine


# -- a daemon that does not answer, with --server: one line, exit 69, no hang ---------------------------------------


def test_server_that_accepts_and_never_answers_is_exit_69(mute: MuteListener) -> None:
    proc = client(["--server", mute.address, "-np", "1"], y4m(2))
    assert proc.returncode == 69, proc.stderr.decode()
    assert mute.accepted >= 1  # the TCP connection was made: this is a silent daemon, not a refused port
    assert lines(proc.stderr)[-1] == (f"mpd-client: error: cannot connect to the daemon at {mute.address} "
                                      f"(nothing answered within 5 s)")
    status = client(["--status", "--server", mute.address])
    assert status.returncode == 69
    assert lines(status.stderr) == [f"mpd-client: error: daemon at {mute.address} did not answer within 5 s"]


def test_status_of_a_daemon_that_completes_the_handshake_and_says_nothing(handshake_only: MuteListener) -> None:
    status = client(["--status", "--server", handshake_only.address])
    assert status.returncode == 69, status.stderr.decode()
    assert lines(status.stderr) == [f"mpd-client: error: daemon at {handshake_only.address} did not answer "
                                    f"within 5 s"]


def test_session_that_never_starts_times_out(handshake_only: MuteListener) -> None:
    engine = RemoteEngine(handshake_only.address, n_pass=1, src_fps=24, dst_fps=60, start_timeout=2)
    expected = (f"^daemon at {handshake_only.address} did not start the session within 2 s "
                r"\(it accepted the call but does not answer\)")
    with pytest.raises(DaemonUnavailableError, match=expected):
        engine.push(np.zeros((H, W, 3), np.uint8))


def test_daemon_that_holds_the_stream_times_out(holding_server: str) -> None:
    engine = RemoteEngine(holding_server, n_pass=1, src_fps=24, dst_fps=60, stall_timeout=2)
    frame = np.zeros((H, W, 3), np.uint8)
    assert engine.push(frame) == []  # the session started; this frame fills its window of one
    with pytest.raises(DaemonUnavailableError, match=f"^daemon at {holding_server} sent nothing for 2 s "
                                                     r"\(it holds the session without answering\)"):
        engine.push(frame)  # waits for the acknowledgement that never comes


def test_health_tells_silent_from_absent(mute: MuteListener, daemon_rife: DaemonServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    assert health(closed) is Health.ABSENT
    assert health(mute.address) is Health.SILENT
    assert health(daemon_rife.addresses[0]) is Health.SERVING


# -- the automatic choice: fall back in-process, and say so ---------------------------------------------------------


def test_silent_daemon_in_the_automatic_choice_falls_back_with_a_note(mute: MuteListener) -> None:
    proc = client(["-np", "1"], y4m(3), env=ENV | {"MPD_PROBE": mute.address})
    assert proc.returncode == 0, proc.stderr.decode()
    assert (f"mpd-client: the daemon at {mute.address} did not answer a health check within 0.5 s; running the "
            f"engine in-process") in lines(proc.stderr)
    assert len(frames_of(proc.stdout)) == 8


def test_daemon_without_the_model_falls_back_and_explicit_server_refuses(daemon_rife: DaemonServer) -> None:
    address = daemon_rife.addresses[0]
    proc = client(["-m", "gmfss", "-np", "1"], y4m(2), env=ENV | {"MPD_PROBE": address})
    assert proc.returncode == 0, proc.stderr.decode()
    assert (f"mpd-client: the daemon at {address} does not serve model gmfss (it serves rife); running the engine "
            f"in-process") in lines(proc.stderr)
    assert len(frames_of(proc.stdout)) == 6
    explicit = client(["-m", "gmfss", "-np", "1", "--server", address], y4m(2))
    assert explicit.returncode == 2 and "unknown model" in explicit.stderr.decode()


def test_draining_daemon_is_passed_over_and_status_still_sees_it(rife) -> None:
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start()
    address = server.addresses[0]
    holder = held_session(address)
    drain = threading.Thread(target=server.drain, args=(60,), daemon=True)
    drain.start()
    try:
        assert wait_until(lambda: health(address) is Health.NOT_SERVING)
        proc = client(["-np", "1"], y4m(3), env=ENV | {"MPD_PROBE": address})
        assert proc.returncode == 0, proc.stderr.decode()
        assert (f"mpd-client: the daemon at {address} takes no new sessions (draining or starting); running the "
                f"engine in-process") in lines(proc.stderr)
        assert len(frames_of(proc.stdout)) == 8
        status = client(["--status"], env=ENV | {"MPD_PROBE": address})
        assert status.returncode == 0, status.stderr.decode()
        first = status.stdout.decode().splitlines()[0]
        assert first.startswith(f"daemon at {address}: ") and first.endswith(" - draining: finishing its sessions, "
                                                                             "taking no new ones")
        assert "sessions: 1 of 8 running, at most 4 per user" in status.stdout.decode()
    finally:
        holder.flush()
        drain.join(30)
        server.stop(0)


def test_busy_daemon_is_waited_for_on_the_progress_line_then_in_process(rife) -> None:
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], limits=Limits(max_sessions=1)),
                          {"rife": rife}).start()
    address = server.addresses[0]
    holder = held_session(address)
    try:
        # stderr on a terminal, so the progress line is drawn in place
        code, stderr = run_on_terminal(["-np", "1", "--no-progress"], y4m(3),
                                       ENV | {"MPD_PROBE": address, "MPD_BUSY_WAIT": "3"})
        assert code == 0, stderr
        assert f"mpd-client: the daemon at {address} is busy; waiting up to 3 s for a free session" in stderr
        assert f"waiting for the daemon at {address}: busy" not in stderr  # no progress line asked for
        assert re.search(r"\(waited \d+ s\); running the engine in-process", stderr), stderr
        code, stderr = run_on_terminal(["-np", "1"], y4m(3), ENV | {"MPD_PROBE": address, "MPD_BUSY_WAIT": "3"})
        assert code == 0, stderr
        assert re.search(re.escape(f"\r\x1b[Kwaiting for the daemon at {address}: busy, ") + r"\d+ of 3 s", stderr)
        explicit = client(["--server", address, "-np", "1"], y4m(2))
        assert explicit.returncode == 69  # an explicit --server does not wait, as before
        assert lines(explicit.stderr)[-1].startswith(f"mpd-client: error: daemon at {address} is busy: daemon busy")
    finally:
        holder.flush()
        server.stop(0)


def test_busy_daemon_that_frees_a_slot_during_the_wait_is_used(rife) -> None:
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], limits=Limits(max_sessions=1)),
                          {"rife": rife}).start()
    address = server.addresses[0]
    holder = held_session(address)
    try:
        proc = subprocess.Popen(script("mpd-client") + ["-np", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=ENV | {"MPD_PROBE": address, "MPD_BUSY_WAIT": "120"})
        proc.stdin.write(y4m(3))
        proc.stdin.close()
        seen = ""
        while "waiting up to 120 s" not in seen:
            line = proc.stderr.readline().decode()
            assert line, seen
            seen += line
        holder.flush()  # the slot frees while the client waits
        out = proc.stdout.read()
        seen += proc.stderr.read().decode()
        assert proc.wait(60) == 0, seen
        assert "in-process" not in seen
        assert len(frames_of(out)) == 8
        assert server.registry.created == 2
    finally:
        holder.close()
        server.stop(0)


# -- gRPC core's own lines stay out of the client's stderr ----------------------------------------------------------


@pytest.mark.parametrize("verbosity", [None, "INFO"])
def test_cancelled_client_prints_no_grpc_transport_lines(rife, verbosity: str | None) -> None:
    """The daemon stops under a streaming client. GRPC_TRACE=http makes gRPC core log every transport event
    (the ``chttp2_transport.cc ... goaway`` lines among them); the client's default keeps them all off stderr,
    while a user's own GRPC_VERBOSITY still wins (the control case that shows the lines are there to hide)."""
    server = DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start()
    env = {k: v for k, v in ENV.items() if k != "GRPC_VERBOSITY"} | {"GRPC_TRACE": "http"}
    if verbosity is not None:
        env["GRPC_VERBOSITY"] = verbosity
    data = y4m(24)
    header, _, body = data.partition(b"\n")
    proc = subprocess.Popen(script("mpd-client") + ["--server", server.addresses[0], "-np", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(header + b"\n" + body[: len(body) // 3])
        proc.stdin.flush()
        assert proc.stdout.read(9) == b"YUV4MPEG2"  # streaming through the daemon
    finally:
        server.stop(0)
    try:
        proc.stdin.write(body[len(body) // 3:])
        proc.stdin.close()
    except BrokenPipeError:
        pass
    proc.stdout.read()
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 69, stderr
    foreign = [line for line in stderr.splitlines() if not line.startswith("mpd-client: ")]
    if verbosity is None:
        assert foreign == [], foreign
        assert stderr.splitlines()[-1].startswith("mpd-client: error: daemon at ")
    else:
        assert any("chttp2_transport.cc" in line for line in foreign)


# -- helpers -----------------------------------------------------------------------------------------------------


def run_on_terminal(args: list[str], data: bytes, env: dict[str, str]) -> tuple[int, str]:
    """Run mpd-client with stdin and stdout as pipes and stderr on a pseudo-terminal; its code and stderr."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(script("mpd-client") + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=slave, env=env)
    os.close(slave)
    writer = threading.Thread(target=lambda: (proc.stdin.write(data), proc.stdin.close()), daemon=True)
    writer.start()
    reader = threading.Thread(target=proc.stdout.read, daemon=True)  # drain stdout so the client never blocks
    reader.start()
    captured = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        assert ready, "mpd-client wrote nothing on its terminal for 120 s"
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the client closed its end of the terminal
            break
        if not chunk:
            break
        captured += chunk
    os.close(master)
    return proc.wait(60), captured.decode(errors="replace").replace("\r\n", "\n")
