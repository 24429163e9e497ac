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


# N Interpolate streams that send a config (width, height, n_pass as given) and then nothing: each holds its memory.
CONFIG_ONLY = """
import sys, threading, queue, grpc
from multipassdedup.proto import mpd_pb2, mpd_pb2_grpc
address, count, token, width, height, n_pass = sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:7])
metadata = [("authorization", f"Bearer {token}")] if token else None
hold, said = queue.Queue(), threading.Lock()
def say(*words):
    with said:
        print(*words, flush=True)
config = mpd_pb2.SessionConfig(model="rife", n_pass=n_pass, src_fps=mpd_pb2.Rational(num=24000, den=1001),
                               dst_fps=mpd_pb2.Rational(num=60, den=1), width=width, height=height,
                               pixel_format=mpd_pb2.RGB24)
def messages():
    yield mpd_pb2.ClientMessage(config=config)
    hold.get()
stub = mpd_pb2_grpc.MultiPassDedupStub(grpc.insecure_channel(address))
def stream():
    try:
        for reply in stub.Interpolate(messages(), metadata=metadata):
            if reply.WhichOneof("kind") == "start":
                say("started", reply.start.session_id)
        say("ended OK")
    except grpc.RpcError as e:
        say("ended", e.code().name, e.details())
threads = [threading.Thread(target=stream) for _ in range(count)]
for t in threads:
    t.start()
    threading.Event().wait(0.2)  # one after the other: the daemon decides them in this order
say("opened", count)
for t in threads:
    t.join()
say("all ended")
"""

# N TCP connections to an HTTP port, each sending its request one byte every SECONDS (never finishing in time).
SLOW_HTTP = """
import sys, socket, time
host, port, count, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
conns = [[socket.create_connection((host, port)), 0] for _ in range(count)]
print("opened", count, flush=True)
while conns:
    for c in list(conns):
        try:
            c[0].sendall(request[c[1]:c[1] + 1])
            c[1] += 1
        except OSError:
            conns.remove(c)
            print("closed", flush=True)
    time.sleep(every)
print("all closed", flush=True)
"""

# Bytes that are no protobuf message, to Health/Check and Status (no token), COUNT times each.
UNDECODABLE = """
import sys, grpc
address, count = sys.argv[1], int(sys.argv[2])
channel = grpc.insecure_channel(address)
for method in ("/grpc.health.v1.Health/Check", "/multipassdedup.v1.MultiPassDedup/Status"):
    codes = {}
    for _ in range(count):
        try:
            channel.unary_unary(method)(b"\\xff\\xff\\xff\\x07not protobuf", timeout=10)
            code, details = "OK", ""
        except grpc.RpcError as e:
            code, details = e.code().name, e.details()
        codes[code] = codes.get(code, 0) + 1
    print(method, " ".join(f"{k}={v}" for k, v in sorted(codes.items())), details, flush=True)
print("done", flush=True)
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
