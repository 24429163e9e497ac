"""The daemon over real gRPC on real sockets (loopback TCP and a unix socket), with real RIFE at 128x64."""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers.abusive_clients import HALF_OPEN_HTTP, IDLE_REFLECTION, ScriptClient
from helpers.daemons import (
    config,
    health_check,
    make_certificate,
    messages,
    own_connection,
    raw_session,
    run_local,
    run_remote,
    status,
    watch,
)
from helpers.frames import FILM, H, W, moving_clip, psnr
from helpers.waiting import wait_until
from multipassdedup.client.errors import DaemonUnavailableError, ExitCode, RemoteSessionError
from multipassdedup.client.remote.session import RemoteEngine, call_metadata, open_channel, probe
from multipassdedup.core import Interpolator, MultiPassDedup
from multipassdedup.daemon.errors import StartupError
from multipassdedup.daemon.limits import Limits
from multipassdedup.daemon.options import DaemonOptions
from multipassdedup.daemon.server import DaemonServer
from multipassdedup.daemon.sessions import CLIENT_GONE
from multipassdedup.proto import mpd_pb2, mpd_pb2_grpc

CLIP = moving_clip(8, H, W)


@pytest.fixture(scope="module")
def reference(rife) -> list[np.ndarray]:
    return run_local(rife, CLIP)


@pytest.fixture
def sock_dir():
    path = Path(tempfile.mkdtemp(prefix="mpd-"))  # short: unix socket paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_daemon(rife, sock_dir):
    """Start an in-process daemon on loopback TCP and a unix socket; checks created == released at the end."""
    daemons: list[DaemonServer] = []

    def start(models: dict[str, Interpolator] | None = None, **options) -> DaemonServer:
        options.setdefault("listen", ["127.0.0.1:0", f"unix://{sock_dir}/mpd.sock"])
        daemon = DaemonServer(DaemonOptions(**options), models or {"rife": rife}).start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        assert wait_until(lambda d=daemon: d.registry.active == 0, 10), "a session was never released"
        assert daemon.registry.created == daemon.registry.released
        daemon.stop(0)


def tcp(daemon: DaemonServer) -> str:
    return daemon.addresses[0]


# -- output ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_session_output_equals_the_embedded_engine(start_daemon, reference, transport) -> None:
    daemon = start_daemon()
    address = daemon.addresses[0 if transport == "tcp" else 1]
    assert address.startswith("unix://") == (transport == "unix")
    out, engine = run_remote(address, CLIP)
    assert len(out) == len(reference) == engine.stats.frames_out
    assert 1 <= engine.peak_in_flight <= engine.start.frames_in_flight == 4  # the client kept to the window
    assert all(np.array_equal(a, b) for a, b in zip(out, reference))  # one session: same batches, same bits
    assert engine.stats.frames_in == len(CLIP) and engine.stats.model_calls > 0
    st = status(address)
    assert (st.sessions_created, st.sessions_released, st.sessions_active) == (1, 1, 0)


def test_protocol_start_frames_in_order_with_rational_pts_then_summary(start_daemon, reference) -> None:
    daemon = start_daemon(limits=Limits(frames_in_flight=3))
    replies, err = raw_session(tcp(daemon), messages(config(), [f.tobytes() for f in CLIP]))
    assert err is None
    acks = [m.ack.frames_read for m in replies if m.WhichOneof("kind") == "ack"]
    assert acks == list(range(1, len(CLIP) + 1))
    replies = [m for m in replies if m.WhichOneof("kind") != "ack"]
    start, frames, summary = replies[0], replies[1:-1], replies[-1]
    assert start.WhichOneof("kind") == "start" and summary.WhichOneof("kind") == "summary"
    s = start.start
    assert (s.out_fps.num, s.out_fps.den) == (60, 1) and s.n_pass == 3
    assert s.frame_bytes == W * H * 3 and s.frames_in_flight == 3
    assert s.max_frame_pixels == 4096 * 2160 and s.max_frame_bytes == 4096 * 2160 * 6
    assert [m.frame.index for m in frames] == list(range(len(reference)))
    assert all(Fraction(m.frame.pts.num, m.frame.pts.den) == Fraction(m.frame.index, 60) for m in frames)
    assert all(np.array_equal(np.frombuffer(m.frame.data, np.uint8).reshape(H, W, 3), r)
               for m, r in zip(frames, reference))
    assert (summary.summary.frames_in, summary.summary.frames_out) == (len(CLIP), len(reference))
    assert summary.summary.model_calls > 0 and summary.summary.seconds > 0


def test_sixteen_bit_frames_stay_sixteen_bit(start_daemon, rife) -> None:
    rng = np.random.default_rng(3)
    clip16 = [f.astype(np.uint16) * 257 + rng.integers(0, 200, f.shape, dtype=np.uint16) for f in CLIP[:6]]
    want = run_local(rife, clip16, times=2)
    out, _ = run_remote(tcp(start_daemon()), clip16, times=2, dst_fps=None)
    assert len(out) == len(want) and all(o.dtype == np.uint16 for o in out)
    assert all(np.array_equal(a, b) for a, b in zip(out, want))
    assert any(np.any(o % 257) for o in out)  # real 16-bit detail, not 8-bit values scaled up


@pytest.mark.parametrize("sessions", [2, 4])
def test_concurrent_sessions_each_get_correct_output_batched_together(start_daemon, rife, sessions) -> None:
    daemon = start_daemon(batch_window=0.03)
    distinct = [moving_clip(5, H, W, step=2 + i, seed=i) for i in range(2)]
    references = [run_local(rife, c) for c in distinct]
    clips, wants = [distinct[i % 2] for i in range(sessions)], [references[i % 2] for i in range(sessions)]
    results: list = [None] * sessions
    errors: list = []

    def client(i: int) -> None:
        try:
            results[i] = run_remote(daemon.addresses[i % 2], clips[i])[0]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    for got, want in zip(results, wants):
        assert len(got) == len(want)
        assert min(psnr(a, b) for a, b in zip(got, want)) >= 45  # batching changes float rounding only
    st = status(tcp(daemon))
    assert st.cross_session_batches >= 1 and st.max_batch_size_seen >= 2
    assert (st.sessions_created, st.sessions_released) == (sessions, sessions)


# -- bad input --------------------------------------------------------------------------------


def test_wrong_frame_length_is_invalid_argument_and_others_keep_working(start_daemon, reference) -> None:
    daemon = start_daemon()
    good = RemoteEngine(tcp(daemon), n_pass=3, src_fps=FILM, dst_fps=60)
    out = good.push(CLIP[0])  # a session open across the failure of another
    replies, err = raw_session(tcp(daemon), messages(config(), [CLIP[0].tobytes(), b"\0" * 100]))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "frame 1 has 100 bytes; 128x64 rgb24 needs 24576"
    assert replies[0].WhichOneof("kind") == "start"
    for f in CLIP[1:]:
        out += good.push(f)
    out += good.flush()
    assert all(np.array_equal(a, b) for a, b in zip(out, reference)) and len(out) == len(reference)


@pytest.mark.parametrize("requests, message", [
    ([config(model="nope")], "unknown model 'nope'; this daemon serves: rife"),
    ([mpd_pb2.ClientMessage(frame=mpd_pb2.InputFrame(data=b"x"))], "the first message must be a SessionConfig, got frame"),
    ([], "the stream ended before its SessionConfig"),
    ([config(src_fps=None)], "src_fps is required"),
    ([config(src_fps=mpd_pb2.Rational(num=24, den=0))], "src_fps must be a positive rational num/den, got 24/0"),
    ([config(dst_fps=mpd_pb2.Rational(num=20, den=1))], "target frame rate 20 must exceed the source frame rate 24000/1001"),
    ([config(dst_fps=None)], "give dst_fps or times"),
    ([config(width=0)], "width and height are required, got 0x64"),
    ([config(width=5000, height=5000)], "frame size 5000x5000 exceeds this daemon's limit of 8847360 pixels"),
    ([config(scale=0.3)], "scale must be one of 0.25, 0.5, 1.0, 2.0, 4.0, got 0.3"),
    ([config(n_pass=99)], "n_pass 99 exceeds this daemon's limit of 12"),
    # --max-passes applies to the number in use: n_pass=0 picks it from src_fps.
    ([config(n_pass=0, src_fps=mpd_pb2.Rational(num=1000, den=1), dst_fps=mpd_pb2.Rational(num=2000, den=1))],
     "n_pass 0 (automatic) means 84 passes at src_fps 1000, more than this daemon's limit of 12; give n_pass"),
    ([config(n_pass=0, src_fps=mpd_pb2.Rational(num=100000, den=1), dst_fps=None, times=2.0)],
     "n_pass 0 (automatic) means 8342 passes at src_fps 100000, more than this daemon's limit of 12; give n_pass"),
    ([config(), mpd_pb2.ClientMessage(config=config())], "message 2 is a config; after the config only frames may follow"),
    ([config(), mpd_pb2.ClientMessage()], "message 2 is empty; after the config only frames may follow"),
    ([mpd_pb2.ClientMessage()], "the first message must be a SessionConfig, got an empty message"),
])
def test_bad_config_or_message_is_invalid_argument_with_a_clear_message(start_daemon, requests, message) -> None:
    daemon = start_daemon()
    reqs = [r if isinstance(r, mpd_pb2.ClientMessage) else mpd_pb2.ClientMessage(config=r) for r in requests]
    _, err = raw_session(tcp(daemon), reqs)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == message


BIG = 2 ** 62


@pytest.mark.parametrize("cfg, message", [
    (config(dst_fps=None, times=1e308), "times must be at most 1000, got 1e+308"),
    (config(dst_fps=None, times=float("inf")), "times must be a finite number, got inf"),
    (config(dst_fps=None, times=float("nan")), "times must be a finite number, got nan"),
    (config(dst_fps=None, times=-2.0), "times must be positive, got -2"),
    (config(dst_fps=None, times=5e-324), "times must exceed 1, got 4.94066e-324"),
    (config(scdet_threshold=float("nan")), "scdet_threshold must be within [0, 1], got nan"),
    (config(scale=float("inf")), "scale must be one of 0.25, 0.5, 1.0, 2.0, 4.0, got inf"),
    (config(n_pass=2 ** 32 - 1), "n_pass 4294967295 exceeds this daemon's limit of 12"),
    (config(pixel_format=99), "unknown pixel format 99; use RGB24 or RGB48LE"),
    (config(width=2 ** 32 - 1, height=2 ** 32 - 1),
     "frame size 4294967295x4294967295 exceeds this daemon's limit of 8847360 pixels"),
    (config(width=1, height=20000), "frame size 1x20000 has a side over 16384 pixels"),
    (config(model="x" * 100_000), "unknown model 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (100000 characters); "
                                  "this daemon serves: rife"),
    # Output rates whose terms do not fit the protocol's int64 rationals: the start message (UNKNOWN before), or
    # the fourth frame's presentation time (INTERNAL, with a traceback in the log, before).
    (config(n_pass=1, src_fps=mpd_pb2.Rational(num=BIG, den=1), dst_fps=None, times=3.0),
     "the output rate 13835058055282163712 has a numerator or denominator over 2147483647; "
     "give dst_fps as a simpler ratio (such as 60000/1001)"),
    (config(n_pass=1, src_fps=mpd_pb2.Rational(num=1, den=1), dst_fps=mpd_pb2.Rational(num=BIG + 1, den=BIG // 2)),
     "the output rate 2 has a numerator or denominator over 2147483647; "
     "give dst_fps as a simpler ratio (such as 60000/1001)"),
    (config(dst_fps=None, times=1.2345678901234567),
     "the output rate 29.6 has a numerator or denominator over "
     "2147483647; give dst_fps as a simpler ratio (such as 60000/1001)"),
])
def test_every_numeric_field_is_range_checked_before_use(start_daemon, caplog, cfg, message) -> None:
    caplog.set_level(logging.INFO)
    daemon = start_daemon()
    replies, err = raw_session(tcp(daemon), messages(cfg, [CLIP[i].tobytes() for i in range(8)]))
    assert err is not None and (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert replies == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "a traceback was logged"
    assert 'outcome="INVALID_ARGUMENT"} 1' in daemon.metrics.render()


def test_a_stream_that_never_sends_its_config_loses_its_slot_after_the_idle_timeout(start_daemon, caplog,
                                                                                     reference) -> None:
    caplog.set_level(logging.INFO, logger="multipassdedup.daemon")
    daemon = start_daemon(limits=Limits(max_sessions=1, idle_timeout=1.0))
    gate = threading.Event()

    def never_sends():
        gate.wait(60)
        yield from ()

    channel = grpc.insecure_channel(tcp(daemon))
    try:
        call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(never_sends(), timeout=60)
        assert wait_until(lambda: status(tcp(daemon)).sessions_active == 1)  # it holds the only slot...
        with pytest.raises(grpc.RpcError) as ended:
            list(call)  # ...until the idle timeout ends it
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert ended.value.details() == "session closed after 1 s without its SessionConfig"
        assert dict(ended.value.trailing_metadata())["mpd-error"] == "idle"
    finally:
        gate.set()
        channel.close()
    out, _ = run_remote(tcp(daemon), CLIP)  # the slot is free for a real client
    assert len(out) == len(reference)
    assert session_ends(caplog)[0].endswith(
        "not started: DEADLINE_EXCEEDED session closed after 1 s without its SessionConfig")
    assert 'outcome="DEADLINE_EXCEEDED"} 1' in daemon.metrics.render()


def test_a_session_that_sends_no_frame_frees_its_memory_after_the_start_timeout(start_daemon, caplog) -> None:
    # It reserved its memory with its config: the start timeout, not the (long) idle timeout, bounds how long.
    caplog.set_level(logging.INFO, logger="multipassdedup.daemon")
    daemon = start_daemon(limits=Limits(idle_timeout=600.0, start_timeout=1.0, memory_budget=10 ** 9))
    gate = threading.Event()

    def config_only():
        yield mpd_pb2.ClientMessage(config=config())
        gate.wait(60)

    channel = grpc.insecure_channel(tcp(daemon))
    try:
        call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(config_only(), timeout=60)
        assert wait_until(lambda: status(tcp(daemon)).memory_reserved_bytes > 0)
        with pytest.raises(grpc.RpcError) as ended:
            list(call)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert ended.value.details() == "session closed after 1 s without its first frame"
        assert dict(ended.value.trailing_metadata())["mpd-error"] == "idle"
    finally:
        gate.set()
        channel.close()
    assert wait_until(lambda: status(tcp(daemon)).memory_reserved_bytes == 0)
    assert session_ends(caplog)[0].endswith("session closed after 1 s without its first frame")


def test_sessions_ended_by_the_client_are_logged_and_counted_as_such(start_daemon, caplog, reference) -> None:
    caplog.set_level(logging.INFO, logger="multipassdedup.daemon")
    # A message limit of W*H*6 bytes + 1 MiB; room for a whole short session's replies.
    daemon = start_daemon(limits=Limits(max_frame_pixels=W * H, frames_in_flight=8))
    out, _ = run_remote(tcp(daemon), CLIP)  # ok
    assert len(out) == len(reference)
    # A message over the size limit: gRPC ends the call (RESOURCE_EXHAUSTED for the client), the stream stops.
    replies, err = raw_session(tcp(daemon), messages(config(), [CLIP[0].tobytes(), b"\0" * (3 << 20)]))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in err.details()
    assert wait_until(lambda: daemon.registry.active == 0)
    # The client cancels mid-stream.
    engine = RemoteEngine(tcp(daemon), n_pass=3, src_fps=FILM, dst_fps=60)
    engine.push(CLIP[0])
    engine.close()
    assert wait_until(lambda: daemon.registry.active == 0)
    # The client sends its whole input but goes away without reading the output: the daemon finished the
    # stream (and freed the session), but the last frames and the summary never went out.
    channel = grpc.insecure_channel(tcp(daemon), options=[("grpc.http2.bdp_probe", 0)])
    call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(
        messages(config(n_pass=1, dst_fps=None, times=2.0), [f.tobytes() for f in CLIP[:2]]), timeout=60)
    assert wait_until(lambda: daemon.registry.released == daemon.registry.created == 4)
    call.cancel()
    channel.close()
    assert wait_until(lambda: len(session_ends(caplog)) == 4)
    ends = session_ends(caplog)
    assert " end: ok " in ends[0], ends
    for line in ends[1:3]:  # never "ok": the client did not finish its stream (nor read its output)
        assert " end: cancelled " in line and f": {CLIENT_GONE}" in line, line
    assert " end: cancelled " in ends[3] and ends[3].endswith(f": {CLIENT_GONE}, before its output was sent")
    text = daemon.metrics.render()
    assert 'outcome="ok"} 1' in text and 'outcome="cancelled"} 3' in text


def test_frame_counters_move_while_a_session_runs(start_daemon) -> None:
    daemon = start_daemon()
    engine = RemoteEngine(tcp(daemon), n_pass=3, src_fps=FILM, dst_fps=60)
    try:
        for f in CLIP[:5]:
            engine.push(f)

        def counted() -> tuple[int, int]:
            text = daemon.metrics.render()
            return tuple(int(re.search(rf"^mpd_frames_{kind}_total (\d+)$", text, re.M).group(1)) for kind in ("in", "out"))

        def streamed() -> tuple[int, int]:
            (session,) = status(tcp(daemon)).sessions
            return session.frames_in, session.frames_out

        # Counted as frames pass, not when the session ends (it is still running).
        assert wait_until(lambda: streamed()[0] == 5 and counted() == streamed())
        assert counted()[1] > 0 and daemon.registry.active == 1
    finally:
        engine.close()


def test_remote_engine_raises_a_one_line_session_error_for_a_refused_config(start_daemon) -> None:
    engine = RemoteEngine(tcp(start_daemon()), model="gimm", src_fps=FILM, dst_fps=60)
    with pytest.raises(RemoteSessionError) as err:
        engine.push(CLIP[0])
    assert err.value.code == "INVALID_ARGUMENT"
    assert "unknown model 'gimm'" in str(err.value) and "\n" not in str(err.value)


class MemoryBudget(Interpolator):
    """Real RIFE behind a device-memory budget: a batch over ``max_pixels`` x evaluations raises CUDA's OOM error."""

    name = "rife"

    def __init__(self, inner: Interpolator, max_pixels: int) -> None:
        super().__init__(inner.device, inner.dtype)
        self.inner, self.max_pixels, self.base_alignment = inner, max_pixels, inner.base_alignment

    def _infer_batch(self, requests, scale):
        need = sum(len(r.ts) for r in requests) * r_pixels(requests[0])
        if need > self.max_pixels:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {need * 12} bytes")
        return self.inner._infer_batch(requests, scale)


def r_pixels(request) -> int:
    return request.x.shape[-1] * request.x.shape[-2]


def test_out_of_memory_fails_that_session_only_with_resource_exhausted(start_daemon, rife, reference) -> None:
    daemon = start_daemon(models={"rife": MemoryBudget(rife, max_pixels=8 * 128 * 64)})
    good = RemoteEngine(tcp(daemon), n_pass=3, src_fps=FILM, dst_fps=60)
    out = good.push(CLIP[0])
    big = [np.zeros((256, 512, 3), np.uint8) + i for i in range(4)]
    big[1][:, ::2] = 200
    with pytest.raises(RemoteSessionError) as err:
        run_remote(tcp(daemon), big)
    assert err.value.code == "RESOURCE_EXHAUSTED" and "out of memory on cpu" in str(err.value)
    for f in CLIP[1:]:
        out += good.push(f)
    out += good.flush()
    assert len(out) == len(reference) and all(np.array_equal(a, b) for a, b in zip(out, reference))
    assert "RESOURCE_EXHAUSTED" in daemon.metrics.render()


# -- limits --------------------------------------------------------------------------------------


def test_session_limit_refuses_as_busy_and_frees_the_slot_afterwards(start_daemon, reference) -> None:
    daemon = start_daemon(limits=Limits(max_sessions=1))
    first = RemoteEngine(tcp(daemon), n_pass=3, src_fps=FILM, dst_fps=60)
    out = first.push(CLIP[0])
    _, err = raw_session(tcp(daemon), messages(config(), []))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "daemon busy: 1 of 1 sessions in use; retry later"
    assert dict(err.trailing_metadata())["mpd-error"] == "busy"
    with pytest.raises(DaemonUnavailableError, match="is busy"):
        run_remote(tcp(daemon), CLIP[:2])
    for f in CLIP[1:]:
        out += first.push(f)
    out += first.flush()
    assert len(out) == len(reference)
    again, _ = run_remote(tcp(daemon), CLIP)
    assert len(again) == len(reference)
    st = status(tcp(daemon))
    assert (st.sessions_created, st.sessions_released, st.sessions_rejected) == (2, 2, 2)


def test_one_user_cannot_hold_every_slot(start_daemon, sock_dir) -> None:
    tokens = sock_dir / "tokens"
    tokens.write_text("alice ta\nbob tb\n")
    daemon = start_daemon(tokens_file=tokens, limits=Limits(max_sessions=4, max_sessions_per_user=2))
    alice = [RemoteEngine(tcp(daemon), token="ta", n_pass=3, src_fps=FILM, dst_fps=60) for _ in range(2)]
    for engine in alice:
        engine.push(CLIP[0])
    _, err = raw_session(tcp(daemon), messages(config(), []), token="ta")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and dict(err.trailing_metadata())["mpd-error"] == "busy"
    assert err.details() == ("daemon busy: user 'alice' has 2 sessions, the most one user may have at once "
                             "(--max-sessions-per-user); retry later")
    replies, err = raw_session(tcp(daemon), messages(config(), [f.tobytes() for f in CLIP[:2]]), token="tb")
    assert err is None and replies[0].start.user == "bob"  # slots are left for the others
    st = status(tcp(daemon), token="tb")
    assert (st.max_sessions, st.max_sessions_per_user, st.sessions_rejected) == (4, 2, 1)
    for engine in alice:
        engine.close()
    assert Limits(max_sessions=8).sessions_per_user == 4 and Limits(max_sessions=3).sessions_per_user == 2


def test_memory_budget_admits_what_fits_refuses_busy_then_for_good(start_daemon, rife, reference) -> None:
    need = MultiPassDedup(rife, n_pass=3, src_fps=FILM, dst_fps=60).memory_bound(H, W) + 2 * 4 * H * W * 3
    # One user here (the per-user share is tested with two: test_shared_server.py): the share is the whole budget.
    daemon = start_daemon(limits=Limits(frames_in_flight=4, memory_budget=need * 3 // 2,
                                        max_memory_per_user=need * 3 // 2))
    first = RemoteEngine(tcp(daemon), n_pass=3, src_fps=FILM, dst_fps=60)
    out = first.push(CLIP[0])
    st = status(tcp(daemon))
    assert (st.memory_budget_bytes, st.memory_reserved_bytes) == (need * 3 // 2, need)
    assert [s.memory_bytes for s in st.sessions] == [need]
    _, err = raw_session(tcp(daemon), messages(config(n_pass=3), []))  # fits alone, not beside the first
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and dict(err.trailing_metadata())["mpd-error"] == "busy"
    assert err.details().startswith("daemon busy: its sessions hold") and "retry later" in err.details()
    with pytest.raises(DaemonUnavailableError, match="is busy"):
        run_remote(tcp(daemon), CLIP[:2], n_pass=3)
    big = [np.concatenate([f, f], axis=1) for f in CLIP[:2]]  # twice the pixels: more than the whole budget
    with pytest.raises(RemoteSessionError, match="more than this daemon's budget") as refused:
        run_remote(tcp(daemon), big, n_pass=3)
    assert (refused.value.code, refused.value.tag) == ("RESOURCE_EXHAUSTED", "memory")
    assert refused.value.exit_code == ExitCode.USAGE  # mpd-watch fails the file rather than retry it
    for f in CLIP[1:]:
        out += first.push(f)
    out += first.flush()
    assert len(out) == len(reference)
    again, _ = run_remote(tcp(daemon), CLIP, n_pass=3)  # the first one's memory is free again
    assert len(again) == len(reference)
    st = status(tcp(daemon))
    assert (st.memory_reserved_bytes, st.sessions_created, st.sessions_released) == (0, 5, 5)


def test_a_fast_client_that_never_reads_is_held_back(start_daemon) -> None:
    daemon = start_daemon(limits=Limits(frames_in_flight=2))

    def frames():
        yield mpd_pb2.ClientMessage(config=config(n_pass=1, dst_fps=None, times=2.0))
        for i in range(60):
            yield mpd_pb2.ClientMessage(frame=mpd_pb2.InputFrame(data=CLIP[i % len(CLIP)].tobytes()))

    channel = grpc.insecure_channel(tcp(daemon), options=[("grpc.http2.bdp_probe", 0)])
    call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(frames(), timeout=120)
    assert next(call).WhichOneof("kind") == "start"
    assert wait_until(lambda: status(tcp(daemon)).sessions[0].frames_in > 0)

    def frames_in() -> int:
        return status(tcp(daemon)).sessions[0].frames_in

    time.sleep(2.0)  # let it run into the limit
    stalled = frames_in()
    time.sleep(1.0)
    assert frames_in() == stalled < 20  # the daemon stopped reading: memory does not grow
    rest = list(call)  # now read everything: the stream resumes and completes
    assert rest[-1].WhichOneof("kind") == "summary" and rest[-1].summary.frames_in == 60
    assert sum(m.WhichOneof("kind") == "ack" for m in rest) == 60
    channel.close()


def session_ends(caplog) -> list[str]:
    """The daemon's "session ... end: ..." and "... not started: ..." log lines so far."""
    return [r.getMessage() for r in caplog.records if re.match(r"session s\d+ (end:|of .* not started:)", r.getMessage())]


def test_a_stalled_client_is_cut_off_after_the_idle_timeout(start_daemon, caplog) -> None:
    caplog.set_level(logging.INFO, logger="multipassdedup.daemon")
    daemon = start_daemon(limits=Limits(idle_timeout=1.0, frames_in_flight=2))
    gate = threading.Event()

    def stalls_after_one_frame():
        yield mpd_pb2.ClientMessage(config=config())
        yield mpd_pb2.ClientMessage(frame=mpd_pb2.InputFrame(data=CLIP[0].tobytes()))
        gate.wait(30)

    started = time.monotonic()
    replies, err = raw_session(tcp(daemon), stalls_after_one_frame())
    gate.set()
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert err.details() == "session closed after 1 s without a frame from the client"
    assert 1.0 <= time.monotonic() - started < 10 and replies[0].WhichOneof("kind") == "start"
    # A client that sends but never reads: the daemon stops reading, then ends the call.
    frames = (mpd_pb2.ClientMessage(frame=mpd_pb2.InputFrame(data=CLIP[i % 8].tobytes())) for i in range(400))
    channel = grpc.insecure_channel(tcp(daemon), options=[("grpc.http2.bdp_probe", 0)])
    call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(
        itertools.chain([mpd_pb2.ClientMessage(config=config(n_pass=1, dst_fps=None, times=8.0))], frames))
    assert next(call).WhichOneof("kind") == "start"
    assert wait_until(lambda: status(tcp(daemon)).sessions_active == 0, 30)
    with pytest.raises(grpc.RpcError) as cut:
        list(call)
    assert cut.value.code() == grpc.StatusCode.CANCELLED
    channel.close()
    assert 'outcome="DEADLINE_EXCEEDED"} 2' in daemon.metrics.render()
    # Logged as what they were (not "ok", not "client went away"), once each.
    ends = session_ends(caplog)
    assert len(ends) == 2 and all(" end: DEADLINE_EXCEEDED " in line for line in ends), ends
    assert ends[0].endswith(": session closed after 1 s without a frame from the client")
    assert ends[1].endswith(": session closed after 1 s without the client reading its output")


def test_a_client_that_vanishes_mid_stream_frees_its_session_at_once(start_daemon, reference) -> None:
    daemon = start_daemon()
    engine = RemoteEngine(tcp(daemon), n_pass=3, src_fps=FILM, dst_fps=60)
    for f in CLIP[:4]:
        engine.push(f)
    assert status(tcp(daemon)).sessions_active == 1
    engine.close()  # cancels the call: the daemon sees RST_STREAM, as when a client dies
    assert wait_until(lambda: status(tcp(daemon)).sessions_active == 0, 5)
    st = status(tcp(daemon))
    assert st.sessions_created == st.sessions_released == 1 and st.queue_depth == 0
    out, _ = run_remote(tcp(daemon), CLIP)
    assert len(out) == len(reference)
    # Gone before its config arrived: the slot is freed as well.
    gate = threading.Event()

    def never_configures():
        gate.wait(30)
        yield from ()

    channel = grpc.insecure_channel(tcp(daemon))
    call = mpd_pb2_grpc.MultiPassDedupStub(channel).Interpolate(never_configures())
    assert wait_until(lambda: status(tcp(daemon)).sessions_active == 1)
    call.cancel()
    gate.set()
    assert wait_until(lambda: status(tcp(daemon)).sessions_active == 0, 5)
    st = status(tcp(daemon))
    assert st.sessions_created == st.sessions_released == 3
    channel.close()


KILLED_CLIENT = """
import sys, time
import numpy as np
from fractions import Fraction
from multipassdedup.client.remote.session import RemoteEngine
engine = RemoteEngine(sys.argv[1], n_pass=3, src_fps=Fraction(24000, 1001), dst_fps=60)
rng = np.random.default_rng(0)
while True:
    engine.push(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8))
    time.sleep(0.05)
"""


def test_a_client_killed_mid_stream_leaves_no_session_and_the_next_client_works(start_daemon, reference) -> None:
    import subprocess
    import sys

    daemon = start_daemon()
    client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, daemon.addresses[1]])
    try:
        assert wait_until(lambda: any(s.frames_in >= 3 for s in status(tcp(daemon)).sessions), 60)
        client.kill()
        client.wait(10)
        assert wait_until(lambda: status(tcp(daemon)).sessions_active == 0, 5)
    finally:
        client.kill()
    st = status(tcp(daemon))
    assert st.sessions_created == st.sessions_released == 1 and st.queue_depth == 0
    out, _ = run_remote(daemon.addresses[1], CLIP)
    assert len(out) == len(reference) and all(np.array_equal(a, b) for a, b in zip(out, reference))


# -- auth, TLS, health, introspection ------------------------------------------------------------------


def test_token_is_required_when_configured_even_on_loopback(start_daemon, sock_dir) -> None:
    tokens = sock_dir / "tokens"
    tokens.write_text("# user token\nalice s3cret-a\nbob s3cret-b\n")
    daemon = start_daemon(token="shared-secret", tokens_file=tokens)
    for token, why in [(None, "this daemon requires a token: give it with --token or $MPD_TOKEN (other gRPC "
                              "clients: metadata 'authorization: Bearer <token>')"),
                       ("nope", "wrong token: check --token or $MPD_TOKEN")]:
        _, err = raw_session(tcp(daemon), messages(config(), [CLIP[0].tobytes()]), token=token)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and err.details() == why
        with pytest.raises(grpc.RpcError) as st_err:
            status(tcp(daemon), token=token)
        assert st_err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(RemoteSessionError) as remote_err:
            run_remote(tcp(daemon), CLIP[:2], token=token)
        assert remote_err.value.code == "UNAUTHENTICATED"
    assert probe(tcp(daemon))  # health checks need no token
    replies, err = raw_session(tcp(daemon), messages(config(), [f.tobytes() for f in CLIP[:3]]), token="s3cret-b")
    assert err is None and replies[0].start.user == "bob"
    replies, err = raw_session(daemon.addresses[1], messages(config(), []), token="shared-secret")
    assert err is None and replies[0].start.user.endswith("@unix")
    assert status(tcp(daemon), token="s3cret-a").sessions_created == 2
    assert "mpd_auth_failures_total 6" in daemon.metrics.render()


def test_listening_beyond_loopback_requires_a_token(rife) -> None:
    with pytest.raises(StartupError, match="reachable from other machines; a token is required"):
        DaemonServer(DaemonOptions(listen=["0.0.0.0:0"]), {"rife": rife})


def test_a_port_or_socket_in_use_is_a_clear_startup_error(start_daemon, rife, sock_dir) -> None:
    from multipassdedup.daemon.errors import ListenError

    daemon = start_daemon()
    for taken in daemon.addresses:
        with pytest.raises(ListenError, match="cannot listen on|another process is listening on"):
            start_daemon(listen=[taken])
    assert probe(daemon.addresses[1])  # the running daemon kept its socket


def test_tls_with_token(start_daemon, sock_dir, reference) -> None:
    cert, key = make_certificate(sock_dir)
    daemon = start_daemon(listen=["localhost:0"], token="t0k", tls_cert=cert, tls_key=key)
    address = tcp(daemon)
    out, _ = run_remote(address, CLIP, token="t0k", root_cert=cert)
    assert len(out) == len(reference) and all(np.array_equal(a, b) for a, b in zip(out, reference))
    assert probe(address, root_cert=cert) and not probe(address)  # a plain-text client cannot talk to it
    with pytest.raises(DaemonUnavailableError):
        RemoteEngine(address, token="t0k", src_fps=FILM, connect_timeout=1)


def test_health_serving_then_not_serving_when_draining(start_daemon) -> None:
    daemon = start_daemon()
    channel = open_channel(tcp(daemon))
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "multipassdedup.v1.MultiPassDedup"):
        assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    assert probe(tcp(daemon)) and probe(daemon.addresses[1])
    assert not probe("127.0.0.1:1", timeout=0.3)
    daemon.registry.draining = True
    daemon.health.draining()
    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
    _, err = raw_session(tcp(daemon), messages(config(), []))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in err.details()
    channel.close()


def test_idle_reflection_streams_cannot_take_every_thread(start_daemon, reference) -> None:
    # 16 idle reflection streams took the 16 RPC threads (8 sessions + 8 spare): the daemon answered nothing.
    daemon = start_daemon(limits=Limits(max_other_streams=4, stream_idle_timeout=5.0))
    client = ScriptClient(IDLE_REFLECTION, tcp(daemon), 20, "")
    try:
        assert client.line("first") == "first 4 refused 16"
        assert client.line("refused") == ("refused RESOURCE_EXHAUSTED too many open reflection streams (4); close one "
                                          "or retry later")
        assert health_check(tcp(daemon), timeout=1.0) == health_pb2.HealthCheckResponse.SERVING
        assert status(tcp(daemon)).sessions_active == 0
        assert daemon.streams.open_streams == 4  # the checks above were answered while the four were open
        out, _ = run_remote(tcp(daemon), CLIP)
        assert len(out) == len(reference)
        client.line("all ended", 60)  # the idle ones are closed
    finally:
        client.kill()
    assert client.count("ended CANCELLED") == 4
    text = daemon.metrics.render()
    assert "mpd_other_streams_open 0" in text and "mpd_other_streams_refused_total 16" in text
    assert "mpd_other_streams_idle_closed_total 4" in text


def test_health_watches_are_never_refused_the_greediest_caller_loses_its_oldest(start_daemon) -> None:
    # Watches shared the reflection streams' budget: four of them, opened by anyone (they need no token), took the
    # daemon out of every fleet client's health checking. They have a bound of their own now, and none is refused.
    daemon = start_daemon(token="s3cret", limits=Limits(max_other_streams=1, max_health_watches=3,
                                                         stream_idle_timeout=0))
    greedy, fleet_client = own_connection(tcp(daemon)), own_connection(tcp(daemon))
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        held = [watch(greedy) for _ in range(5)]
        assert [status for _, status in held] == [serving] * 5
        for call, _ in held[:2]:  # the fourth and fifth ended the first two, the greedy caller's own
            assert list(call) == [] and call.code() == grpc.StatusCode.OK
        newcomer, status = watch(fleet_client)
        assert status == serving  # admitted: the greedy caller's oldest (the third) was ended for it
        assert list(held[2][0]) == [] and held[2][0].code() == grpc.StatusCode.OK
        assert daemon.streams.open_watches == 3 and daemon.streams.watches_ended == 3
        daemon.health.draining()  # the watchers still open are told
        assert [next(call).status for call in (held[3][0], held[4][0], newcomer)] == \
            [health_pb2.HealthCheckResponse.NOT_SERVING] * 3
    finally:
        greedy.close()
        fleet_client.close()
    assert wait_until(lambda: daemon.streams.open_watches == 0)
    text = daemon.metrics.render()
    assert "mpd_health_watches_ended_total 3" in text and "mpd_other_streams_refused_total 0" in text


def test_idle_health_watches_end_with_ok(start_daemon, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="multipassdedup.daemon")
    daemon = start_daemon(limits=Limits(stream_idle_timeout=1.0))
    channel = own_connection(tcp(daemon))
    try:
        call, status = watch(channel)
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert list(call) == [] and call.code() == grpc.StatusCode.OK  # ended by the daemon, when idle
    finally:
        channel.close()
    assert wait_until(lambda: daemon.streams.open_watches == 0)
    assert "mpd_other_streams_idle_closed_total 1" in daemon.metrics.render()
    # Each fleet client's connection watches health: its idle close, once a minute, is a debug line, not info.
    closes = [r for r in caplog.records if r.getMessage().startswith("closing an idle health watch stream")]
    assert len(closes) == 1 and {r.levelno for r in closes} == {logging.DEBUG}


def test_half_sent_metrics_requests_time_out_and_are_bounded(start_daemon, capfd) -> None:
    import urllib.request

    from multipassdedup.daemon.metrics import MAX_METRICS_CONNECTIONS

    daemon = start_daemon(metrics_listen="127.0.0.1:0", limits=Limits(stream_idle_timeout=2.0))
    threads_before = threading.active_count()
    client = ScriptClient(HALF_OPEN_HTTP, "127.0.0.1", daemon.metrics_port, MAX_METRICS_CONNECTIONS + 6)
    try:
        client.line("opened")
        assert threading.active_count() <= threads_before + 1  # the script's reader; connections hold none
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5) as r:
            assert r.status == 200 and b"mpd_sessions_active 0" in r.read()  # answered beside them
        assert wait_until(lambda: client.count("all closed") == 1, 60)  # each kept a thread forever before
    finally:
        client.kill()
    server = daemon.metrics_server
    assert server.evicted > 0 and server.timed_out > 0 and server.open_connections == 0
    # Clients that go away with their requests half-sent: their connections end without a traceback.
    leaving = ScriptClient(HALF_OPEN_HTTP, "127.0.0.1", daemon.metrics_port, 8)
    leaving.line("opened")
    leaving.kill()
    assert wait_until(lambda: server.open_connections == 0, 30)
    assert "Traceback" not in capfd.readouterr().err
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5) as r:
        assert r.status == 200 and b"mpd_sessions_active 0" in r.read()


def test_unix_sockets_get_their_mode_and_group_whatever_the_umask(start_daemon, sock_dir, rife) -> None:
    import grp
    import stat

    other = next((g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getgid()), os.getgid())
    previous = os.umask(0)  # what made the socket 0777 before
    try:
        plain = start_daemon(listen=[f"unix://{sock_dir}/plain.sock"])
        tight = start_daemon(listen=[f"unix://{sock_dir}/tight.sock"], socket_mode=0o600, socket_group=str(other))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(sock_dir / "plain.sock").st_mode) == 0o660
    st = os.stat(sock_dir / "tight.sock")
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o600, other)
    assert probe(plain.addresses[0]) and probe(tight.addresses[0])
    with pytest.raises(StartupError, match="--socket-group: no group named 'no-such-group-here'"):
        DaemonServer(DaemonOptions(listen=[f"unix://{sock_dir}/x.sock"], socket_group="no-such-group-here"),
                     {"rife": rife})


@pytest.mark.parametrize("options, message", [
    (dict(token=""), "the token is empty"),
    (dict(token="  "), "the token is empty"),
])
def test_an_empty_token_is_an_error_not_no_authentication(rife, options, message) -> None:
    with pytest.raises(StartupError, match=message):
        DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], **options), {"rife": rife})


def test_metrics_beyond_loopback_are_warned_about(rife, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="multipassdedup.daemon")
    DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], metrics_listen="0.0.0.0:9108"), {"rife": rife})
    DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], metrics_listen="9108"), {"rife": rife})  # loopback: quiet
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["metrics on 0.0.0.0:9108 are reachable from other machines without a token (user names, "
                        "session counts, load): bind them to 127.0.0.1 or firewall the port"]


def test_list_models_status_and_reflection(start_daemon) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    daemon = start_daemon()
    channel = open_channel(tcp(daemon))
    stub = mpd_pb2_grpc.MultiPassDedupStub(channel)
    models = stub.ListModels(mpd_pb2.ListModelsRequest(), timeout=5).models
    assert [(m.name, m.device, m.dtype, m.alignment) for m in models] == [("rife", "cpu", "float32", 64)]
    st = stub.Status(mpd_pb2.StatusRequest(), timeout=5)
    assert st.device == "cpu" and st.models == ["rife"] and st.max_sessions == 8 and st.rss_bytes > 10 << 20
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           metadata=call_metadata(None), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {"multipassdedup.v1.MultiPassDedup", "grpc.health.v1.Health"} <= names
    channel.close()


def test_prometheus_metrics(start_daemon) -> None:
    import urllib.request

    daemon = start_daemon(metrics_listen="127.0.0.1:0", limits=Limits(memory_budget=2 ** 30))
    run_remote(tcp(daemon), CLIP[:4])
    raw_session(tcp(daemon), messages(config(), [b"short"]))
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "mpd_sessions_created_total 2" in text and "mpd_sessions_active 0" in text
    assert f"mpd_memory_budget_bytes {2 ** 30}" in text and "mpd_memory_reserved_bytes 0" in text
    assert 'mpd_session_outcomes_total{outcome="INVALID_ARGUMENT"} 1' in text
    assert 'mpd_session_outcomes_total{outcome="ok"} 1' in text
    assert "mpd_frames_in_total 4" in text
    assert 'mpd_batch_size_bucket{le="+Inf"}' in text and "mpd_queue_wait_seconds_count" in text


def test_precisions_served_listed_chosen_and_refused(start_daemon, rife, reference) -> None:
    from multipassdedup.core.precision import PrecisionChoice

    both = start_daemon(precisions=["fp32", "bf16"])
    stub = mpd_pb2_grpc.MultiPassDedupStub(open_channel(tcp(both)))
    info = stub.ListModels(mpd_pb2.ListModelsRequest(), timeout=5).models[0]
    assert list(info.precisions) == ["fp32", "bf16"] and info.dtype == "float32" and info.precision_reason
    status_info = stub.Status(mpd_pb2.StatusRequest(), timeout=5).model_info
    assert [(m.name, list(m.precisions)) for m in status_info] == [("rife", ["fp32", "bf16"])]
    out, _ = run_remote(tcp(both), CLIP, precision="bf16")  # a session asks for the second one
    want = run_local(rife.with_precision(PrecisionChoice("bf16", "test")), CLIP)
    assert len(out) == len(want) and all(np.array_equal(a, b) for a, b in zip(out, want))
    assert not all(np.array_equal(a, b) for a, b in zip(out, reference))  # it really ran in bf16
    out, _ = run_remote(tcp(both), CLIP[:4], precision="fp32")
    assert all(np.array_equal(a, b) for a, b in zip(out, run_local(rife, CLIP[:4])))

    only_fp32 = start_daemon(precisions=["fp32"], listen=["127.0.0.1:0"])
    _, error = raw_session(tcp(only_fp32), messages(config(precision="bf16"), []))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("precision bf16 is not served for rife by this daemon (it serves fp32; "
                               "mpd-daemon --precision)")
    _, error = raw_session(tcp(only_fp32), messages(config(precision="fp64"), []))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "precision must be one of" in error.details()
