"""The systemd notification protocol shared by mpd-daemon and mpd-watch, and the stop signals of the three commands."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from multipassdedup.stop_signals import StopSignals, signals_deferred
from multipassdedup.systemd_notify import SystemdNotifier, sd_notify, watchdog_timeout


def test_sd_notify_plain_and_abstract_sockets(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    for address, bind_to in [(str(path), str(path)), ("@mpd-test-notify", "\0mpd-test-notify")]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(bind_to)
            sock.settimeout(5)
            assert sd_notify("READY=1", {"NOTIFY_SOCKET": address})
            assert sock.recv(100) == b"READY=1"
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})  # neither a path nor an abstract name
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})


def test_watchdog_timeout_is_watchdog_usec_for_this_process_only() -> None:
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_timeout({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # meant for another pid
    assert watchdog_timeout({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_timeout({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_timeout({}) is None


def test_notifier_messages_and_pings_at_most_once_per_half_timeout(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        # A timeout of an hour: the half-hour ping interval cannot pass during the test.
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(3600 * 10**6)})
        assert notifier.enabled and notifier.watchdog_timeout == 3600.0 and notifier.ping_interval == 1800.0
        notifier.ready("serving")
        notifier.watchdog()
        notifier.watchdog()  # within the interval: not sent
        notifier.status("2 running")
        notifier.stopping()
        sock.setblocking(False)
        received = []
        while True:
            try:
                received.append(sock.recv(100).decode())
            except BlockingIOError:
                break
    assert received == ["READY=1\nSTATUS=serving", "WATCHDOG=1", "STATUS=2 running", "STOPPING=1"]


def test_notifier_outside_systemd_does_nothing() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled and notifier.ping_interval is None and not notifier.send("READY=1")
    notifier.ready("x")
    notifier.watchdog()
    notifier.stopping()


def test_first_signal_requests_a_stop_and_a_second_one_is_urgent() -> None:
    seen: list[tuple[str, bool]] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stops = StopSignals().install(on_signal=lambda name, again: seen.append((name, again)))
        signal.raise_signal(signal.SIGTERM)
        assert stops.requested.is_set() and not stops.urgent.is_set()
        signal.raise_signal(signal.SIGINT)
        assert stops.urgent.is_set()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert seen == [("SIGTERM", False), ("SIGINT", True)] and stops.received == ["SIGTERM", "SIGINT"]


def test_a_callback_that_raises_unwinds_the_main_thread() -> None:
    class Stopped(Exception):
        pass

    def stop(name: str, _again: bool) -> None:
        raise Stopped(name)

    previous = signal.getsignal(signal.SIGHUP)
    try:
        StopSignals().install([signal.SIGHUP], on_signal=stop)
        with pytest.raises(Stopped, match="SIGHUP"):
            signal.raise_signal(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_signal_while_deferred_is_handled_right_after_the_block() -> None:
    """mpd-client loads torch inside signals_deferred: a raising handler must not run inside it (it would
    cross torch's C++ frames and abort the process) but at once after it, so the command still exits 75."""
    class Stopped(Exception):
        pass

    seen: list[str] = []
    block_finished: list[bool] = []

    def stop(name: str, _again: bool) -> None:
        seen.append(name)
        raise Stopped(name)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        StopSignals().install([signal.SIGTERM], on_signal=stop)
        with pytest.raises(Stopped, match="SIGTERM"):
            with signals_deferred():
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                sum(range(1000))  # Python instructions run: a handler that was not held back would run here
                block_finished.append(seen == [])
        assert block_finished == [True] and seen == ["SIGTERM"]
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.signal(signal.SIGTERM, previous)
