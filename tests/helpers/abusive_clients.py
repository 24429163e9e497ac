"""Abusive clients of a daemon, as small scripts run in processes of their own (as a hostile user would run them).

Each script prints one line per event (``first 4 refused 16``, ``ended CANCELLED``, ``closed 20``) and
holds its connections until it is killed or they end. ``ScriptClient`` runs one and collects its lines.
In the test process itself, gRPC's client and server threads share one interpreter, which hides the
thread starvation these clients cause.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from helpers.waiting import wait_until

# N reflection streams on one connection: each sends one request, reads its reply and then stays open, idle.
IDLE_REFLECTION = """
import sys, threading, queue, grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
address, count, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
metadata = [("authorization", f"Bearer {token}")] if token else None
hold, said = queue.Queue(), threading.Lock()
def say(*words):
    with said:
        print(*words, flush=True)
def requests():
    yield reflection_pb2.ServerReflectionRequest(list_services="")
    hold.get()
stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(address))
first, refused, lock = [0], [0], threading.Lock()
def stream(call):
    try:
        next(call)
        with lock:
            first[0] += 1
    except grpc.RpcError as e:
        with lock:
            refused[0] += 1
        say("refused", e.code().name, e.details())
        return
    try:
        for _ in call:
            pass
        say("ended OK")
    except grpc.RpcError as e:
        say("ended", e.code().name)
threads = [threading.Thread(target=stream, args=(stub.ServerReflectionInfo(requests(), metadata=metadata),))
           for _ in range(count)]
for t in threads:
    t.start()
while first[0] + refused[0] < count:
    threading.Event().wait(0.05)
say("first", first[0], "refused", refused[0])
for t in threads:
    t.join()
say("all ended")
"""

# N Interpolate streams that never send a message (not even their config).
NEVER_SENDING = """
import sys, threading, queue, grpc
from multipassdedup.proto import mpd_pb2_grpc
address, count, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
metadata = [("authorization", f"Bearer {token}")] if token else None
hold, said = queue.Queue(), threading.Lock()
def say(*words):
    with said:
        print(*words, flush=True)
def nothing():
    hold.get()
    yield from ()
stub = mpd_pb2_grpc.MultiPassDedupStub(grpc.insecure_channel(address))
ends, lock = {}, threading.Lock()
def stream():
    try:
        for _ in stub.Interpolate(nothing(), metadata=metadata):
            pass
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    with lock:
        ends[code] = ends.get(code, 0) + 1
    say("ended", code)
threads = [threading.Thread(target=stream) for _ in range(count)]
for t in threads:
    t.start()
say("opened", count)
for t in threads:
    t.join()
say("all ended", " ".join(f"{k}={v}" for k, v in sorted(ends.items())))
"""

# N TCP connections to an HTTP port, each sending the start of a request and never its end.
HALF_OPEN_HTTP = """
import sys, socket, select, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
for _ in range(count):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n")  # no blank line: the request never ends
    conns.append(s)
print("opened", count, flush=True)
open_ = set(conns)
while open_:
    readable, _, _ = select.select(list(open_), [], [], 0.2)
    for s in readable:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            open_.discard(s)
            print("closed", count - len(open_), flush=True)
print("all closed", flush=True)
"""


class ScriptClient:
    """One abusive script in a process of its own; its stdout lines are collected as they come."""

    def __init__(self, script: str, *args: object) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, prefix: str, timeout: float = 60) -> str:
        """The first line starting with ``prefix``, waiting up to ``timeout`` s for it."""
        found = wait_until(lambda: any(x.startswith(prefix) for x in self.lines) or self.proc.poll() is not None,
                           timeout)
        matches = [x for x in self.lines if x.startswith(prefix)]
        assert found and matches, f"no line {prefix!r} from the script: {self.lines} {self.stderr()}"
        return matches[0]

    def count(self, prefix: str) -> int:
        return sum(x.startswith(prefix) for x in list(self.lines))

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
