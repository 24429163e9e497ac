"""The daemon unit's command under socket activation, as systemd runs it: inherited socket, READY, WATCHDOG."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.watching import INSTALL_BIN, unit_directives
from multipassdedup.weights.store import default_weights_dir


def unit_command(unit: str, overrides: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """ExecStart of a unit with its Environment= (plus `overrides`, like an EnvironmentFile) expanded."""
    directives = unit_directives(unit)
    env = dict(word.split("=", 1) for line in directives.get("Environment", []) for word in line.split())
    env.update(overrides)
    words = []
    for word in shlex.split(directives["ExecStart"][0]):
        if re.fullmatch(r"\$\w+", word):                 # $VAR: split into words, empty gives none
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return words, env


def test_daemon_unit_command_takes_the_socket_systemd_passes(tmp_path: Path) -> None:
    sock_path = tmp_path / "mpd.sock"
    argv, unit_env = unit_command("mpd-daemon.service", {
        "MPD_DEVICE": "cpu", "MPD_MODELS": "rife", "MPD_WEIGHTS_DIR": str(default_weights_dir())})
    assert argv[0] == f"{INSTALL_BIN}/mpd-daemon" and "--device" in argv and "--models" in argv
    listen = unit_directives("mpd-daemon.socket")["ListenStream"][0]
    argv = [sys.executable, "-m", "multipassdedup.daemon.main",
            *[a.replace(listen, str(sock_path)) for a in argv[1:]]]
    notify = tmp_path / "notify.sock"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(unit_env, NOTIFY_SOCKET=str(notify), WATCHDOG_USEC="1500000")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notifications:
        notifications.bind(str(notify))
        notifications.settimeout(120)
        activator = subprocess.Popen(
            ["systemd-socket-activate", "-l", str(sock_path),
             *[f"-E{k}" for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MPD_WEIGHTS_DIR", "PATH", "HOME")], *argv],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # This call connects before the daemon even exists: the socket accepts it, which starts the
            # daemon, and it is answered once the models are loaded.
            with grpc.insecure_channel(f"unix://{sock_path}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=180, wait_for_ready=True)
            messages = [notifications.recv(4096).decode()]
            while not any("WATCHDOG=1" in m for m in messages):
                messages.append(notifications.recv(4096).decode())
        finally:
            activator.send_signal(signal.SIGTERM)
            code = activator.wait(timeout=120)
            log = activator.stderr.read()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert messages[0].startswith("READY=1"), messages
    assert code == 0, log
    assert f"unix://{sock_path}" in log and "Address already in use" not in log
