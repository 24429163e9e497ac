"""The ``mpd-daemon`` command as a real process: startup refusals, sd_notify, watchdog, socket activation, SIGTERM
drain (and a second signal cutting it short)."""

from __future__ import annotations

import re
import signal
import socket
import sys
import time

import numpy as np
import pytest

from helpers.daemons import DaemonProcess, NotifyListener, clean_env, run_local, status
from helpers.frames import FILM, H, W, moving_clip
from helpers.waiting import wait_until
from multipassdedup.client.errors import DaemonUnavailableError
from multipassdedup.client.remote.session import RemoteEngine, probe

CLIP = moving_clip(8, H, W)


@pytest.mark.parametrize("args, message", [
    (["--listen", "0.0.0.0:0"], "0.0.0.0:0 is reachable from other machines; a token is required"),
    (["--listen", "unix:relative.sock"], "unix socket path must be absolute"),
    (["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.pem"], "TLS needs both --tls-cert and --tls-key"),
    (["--max-sessions", "0"], "max-sessions must be at least 1, got 0"),
    (["--models", "rife,nope"], "unknown model 'nope'; available: gimm, gmfss, rife"),
    (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto, got 'tpu'"),
    (["--threads", "0"], "--threads must be at least 1, got 0"),
    (["--memory-budget", "12X"], "memory budget must be auto, none or a size like 12G or 512M, got '12X'"),
    # An empty secret is a mistake, never "no authentication".
    (["--token", ""], "--token is empty: give a secret, or leave the flag out for no authentication"),
    (["--token", " "], "--token is empty"),
    (["--tokens", "/dev/null"], "tokens file /dev/null names no user: add 'user token' lines"),
    (["--max-other-streams", "0"], "max-other-streams must be at least 1, got 0"),
    (["--max-sessions-per-user", "-1"], "max-sessions-per-user must be at least 1 (or 0 for the default), got -1"),
    (["--metrics", "99999"], "metrics port out of range in '99999'"),
    ([], "$MPD_TOKEN is set but empty: give a secret, or unset it for no authentication"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_refuses_to_start_with_a_one_line_reason(args, message) -> None:
    started = time.monotonic()
    daemon = DaemonProcess(args, env=clean_env(**({"MPD_TOKEN": ""} if not args else {})))
    assert daemon.wait(60) == 2
    assert message in daemon.log and len(daemon.lines) == 1
    assert time.monotonic() - started < 30  # refused before loading any model


def test_sigterm_drains_running_sessions_then_exits_zero(work_dir, rife) -> None:
    notify = NotifyListener(work_dir / "notify")
    daemon = DaemonProcess(["--listen", f"unix://{work_dir}/d.sock", "--listen", "127.0.0.1:0",
                            "--drain-timeout", "60"],
                           env=clean_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="600000"))
    try:
        unix, tcp = daemon.address()
        assert wait_until(lambda: notify.count("READY=1") == 1, 10)
        assert wait_until(lambda: notify.count("WATCHDOG=1") >= 2, 5)  # pinged every half watchdog period
        assert probe(unix) and probe(tcp)
        want = run_local(rife, CLIP)
        engine = RemoteEngine(unix, n_pass=3, src_fps=FILM, dst_fps=60)
        out = engine.push(CLIP[0]) + engine.push(CLIP[1])
        daemon.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: notify.count("STOPPING=1") == 1, 10)
        assert not probe(tcp)  # health says NOT_SERVING while draining
        late = RemoteEngine(tcp, n_pass=3, src_fps=FILM, dst_fps=60)
        with pytest.raises(DaemonUnavailableError, match="shutting down"):
            late.push(CLIP[0])
        for f in CLIP[2:]:  # the running session carries on to the end
            time.sleep(0.1)
            out += engine.push(f)
        out += engine.flush()
        assert len(out) == len(want) and all(np.array_equal(a, b) for a, b in zip(out, want))
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
        notify.close()
        print(daemon.log)
    log = daemon.log
    assert re.search(r"session s1 start: user=\S+@unix .*rife 128x64 rgb24 24000/1001 fps -> 60 fps", log)
    assert re.search(r"session s1 end: ok .* frames in=8 out=22 model_calls=\d+", log), log
    assert re.search(r"session memory budget \d+\.\d [GM]iB \(50% of the (available memory|room left)", log), log
    assert "stopping: no new sessions" in log and "stopped" in log.splitlines()[-1]
    assert not (work_dir / "d.sock").exists()


@pytest.mark.parametrize("drain_timeout, second_signal, cut", [
    ("1", None, "drain timeout: cancelling 1 session(s)"),
    # As uvicorn does: SIGTERM starts the drain, a second SIGTERM or SIGINT cancels the sessions it waits for.
    ("600", signal.SIGINT, "drain cut short: cancelling 1 session(s)"),
], ids=["drain-timeout", "second-signal"])
def test_a_stalled_session_is_cancelled_and_the_daemon_still_exits_zero(work_dir, drain_timeout, second_signal,
                                                                         cut) -> None:
    daemon = DaemonProcess(["--listen", f"unix://{work_dir}/d.sock", "--drain-timeout", drain_timeout],
                           env=clean_env())
    try:
        (unix,) = daemon.address()
        engine = RemoteEngine(unix, n_pass=3, src_fps=FILM, dst_fps=60)
        engine.push(CLIP[0])
        assert wait_until(lambda: status(unix).sessions_active == 1)
        daemon.proc.send_signal(signal.SIGTERM)
        if second_signal is not None:
            draining = f"draining: waiting up to {drain_timeout} s for 1 session(s)"
            assert wait_until(lambda: draining in daemon.log, 30), daemon.log
            daemon.proc.send_signal(second_signal)
        assert daemon.wait(60) == 0  # the client never finished: the 1 s drain timeout, or the signal, cut it
        with pytest.raises(DaemonUnavailableError):
            engine.flush()
    finally:
        daemon.kill()
    assert cut in daemon.log
    assert sum(m in daemon.log for m in ("drain timeout:", "drain cut short:")) == 1
    assert re.search(r"session s1 end: cancelled", daemon.log), daemon.log
    assert "stopped" in daemon.lines[-1]


LAUNCHER = [sys.executable, "-c", """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="mpd.sock")
os.execv(sys.argv[2], sys.argv[2:])
"""]


def test_socket_activation_serves_the_inherited_socket(work_dir, rife) -> None:
    # As systemd does: the socket exists (and takes connections) before the daemon starts.
    path = work_dir / "mpd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    notify = NotifyListener(work_dir / "notify")
    fd = listener.fileno()
    daemon = DaemonProcess(["--listen", f"unix://{path}"], env=clean_env(NOTIFY_SOCKET=str(notify.path)),
                           launcher=LAUNCHER + [str(fd)], pass_fds=(fd,))
    try:
        early = RemoteEngine(f"unix://{path}", n_pass=3, src_fps=FILM, dst_fps=60, connect_timeout=180)
        out = []
        for f in CLIP:  # connected while the models were loading; served once they are
            out += early.push(f)
        out += early.flush()
        want = run_local(rife, CLIP)
        assert len(out) == len(want) and all(np.array_equal(a, b) for a, b in zip(out, want))
        assert daemon.address() == [f"unix://{path}"]
        assert notify.count("READY=1") == 1
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        daemon.kill()
        notify.close()
    assert path.exists()  # the socket belongs to the service manager: the daemon leaves it in place
    listener.close()
