"""The systemd units: `systemd-analyze verify` on every unit, the sysusers file, and the watcher unit's command."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.waiting import wait_until
from helpers.watching import FAKE_CLIENT_COMMAND, INSTALL_BIN, UNITS_DIR, stop, unit_directives
from multipassdedup.client.watch.config import load_config_file
from multipassdedup.client.watch.journal import JobState, Journal

UNITS = ["mpd-daemon.socket", "mpd-daemon.service", "mpd-daemon@.socket", "mpd-daemon@.service", "mpd-watch@.service"]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A filesystem root with systemd's own units, ours, and stand-ins for the installed commands."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(UNITS_DIR / unit, root / "etc/systemd/system" / unit)
    bin_dir = root / INSTALL_BIN.lstrip("/")
    bin_dir.mkdir(parents=True)
    for command in ("mpd-daemon", "mpd-watch"):
        (bin_dir / command).write_text("#!/bin/sh\n")
        (bin_dir / command).chmod(0o755)
    return root


def test_every_unit_file_is_tested() -> None:
    assert sorted(p.name for p in UNITS_DIR.iterdir() if p.suffix in (".service", ".socket")) == sorted(UNITS)


@pytest.mark.parametrize("unit", ["mpd-daemon.socket", "mpd-daemon.service", "mpd-daemon@0.socket",
                                  "mpd-daemon@0.service", "mpd-watch@anime.service"])
def test_unit_passes_systemd_analyze_verify(fake_root: Path, unit: str) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={fake_root}", unit],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_catch_a_broken_unit(fake_root: Path) -> None:
    broken = fake_root / "etc/systemd/system/mpd-broken.service"
    broken.write_text((UNITS_DIR / "mpd-watch@.service").read_text()
                      .replace("ProtectSystem=strict", "ProtectSystem=bogus")
                      .replace(f"{INSTALL_BIN}/mpd-watch", f"{INSTALL_BIN}/missing"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={fake_root}", "mpd-broken.service"],
                            capture_output=True, text=True)
    assert "bogus" in result.stderr and "missing" in result.stderr


def test_units_agree_on_user_sockets_and_readiness() -> None:
    daemon, watch = unit_directives("mpd-daemon.service"), unit_directives("mpd-watch@.service")
    sock = unit_directives("mpd-daemon.socket")
    for service in (daemon, watch):
        assert service["User"] == ["multipassdedup"] and service["Type"] == ["notify"]
        assert service["Restart"] == ["on-failure"] and "DynamicUser" not in service
    assert sock["SocketGroup"] == ["multipassdedup"] and sock["SocketMode"] == ["0660"]
    socket_path = sock["ListenStream"][0]
    assert f"unix://{socket_path}" in daemon["ExecStart"][0]
    assert "PrivateDevices" not in daemon and "MemoryDenyWriteExecute" not in daemon
    assert daemon["CacheDirectory"] == ["multipassdedup"] and "WatchdogSec" in daemon
    per_gpu = unit_directives("mpd-daemon@.service")
    assert "CUDA_VISIBLE_DEVICES=%i" in per_gpu["Environment"][0]
    assert unit_directives("mpd-daemon@.socket")["ListenStream"] == ["/run/multipassdedup/gpu%i.sock"]
    assert "unix:///run/multipassdedup/gpu%i.sock" in per_gpu["ExecStart"][0]
    assert watch["StateDirectory"] == ["multipassdedup/watch-%i"]
    assert "/etc/multipassdedup/watch-%i.toml" in watch["ExecStart"][0]


def test_sysusers_creates_the_static_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(UNITS_DIR / "multipassdedup.sysusers.conf")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    groups = (tmp_path / "etc/group").read_text()
    assert passwd.startswith("multipassdedup:x:") and "/var/lib/multipassdedup" in passwd
    assert "render:x:" in groups and "multipassdedup" in groups.split("render:x:")[1].splitlines()[0]


def test_example_config_is_valid() -> None:
    watch, folders = load_config_file(UNITS_DIR / "watch-example.toml")
    assert watch["concurrency"] == 2 and len(folders) == 2
    for folder in folders:
        folder.validate()
        assert folder.server == "unix:///run/multipassdedup/mpd.sock"
    assert folders[1].client_argv(Path("i"), Path("o"))[-12:] == [
        "-m", "gmfss", "-np", "3", "-fps", "60000/1001", "--crf", "16", "--preset", "slow",
        "--server", "unix:///run/multipassdedup/mpd.sock"]

def test_watch_unit_command_runs_the_watcher_as_systemd_would(tmp_path: Path) -> None:
    """ExecStart of mpd-watch@test with systemd's environment: READY, WATCHDOG, journal in STATE_DIRECTORY."""
    command = unit_directives("mpd-watch@.service")["ExecStart"][0].replace("%i", "test")
    argv = shlex.split(command)
    assert argv[0] == f"{INSTALL_BIN}/mpd-watch"
    config_path = tmp_path / "etc" / "watch-test.toml"
    argv = [sys.executable, "-m", "multipassdedup.client.watch.main",
            *[str(config_path) if a == "/etc/multipassdedup/watch-test.toml" else a for a in argv[1:]]]
    (tmp_path / "in").mkdir()
    config_path.parent.mkdir()
    config_path.write_text(f"settle = 0.3\nclient_command = {json.dumps(shlex.split(FAKE_CLIENT_COMMAND))}\n"
                           f"[[folder]]\nin = {json.dumps(str(tmp_path / 'in'))}\n"
                           f"out = {json.dumps(str(tmp_path / 'out'))}\n")
    state = tmp_path / "var/lib/multipassdedup/watch-test"
    notify = tmp_path / "notify.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(STATE_DIRECTORY=str(state), NOTIFY_SOCKET=str(notify), WATCHDOG_USEC="500000",
               JOURNAL_STREAM="8:1234")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(notify))
        sock.settimeout(30)
        watcher = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            messages = [sock.recv(4096).decode()]
            assert messages[0].startswith("READY=1\nSTATUS=")
            (tmp_path / "in" / "x.mkv").write_bytes(b"x" * 10)
            while sum("WATCHDOG=1" in m for m in messages) < 2:
                messages.append(sock.recv(4096).decode())

            def done():
                if not (state / "journal.sqlite3").exists():
                    return None
                journal = Journal.in_state_dir(state)
                try:
                    jobs = journal.recent()
                finally:
                    journal.close()
                return jobs and jobs[0].state is JobState.DONE
            wait_until(done, 30, "the dropped file to be done")
        finally:
            code = stop(watcher)
            log = watcher.stderr.read()
    assert code == 0, log
    assert (tmp_path / "out" / "x.mkv").exists()
    assert log.startswith("INFO ")              # under journald: no timestamps of our own
