"""The daemon's small parts: listen addresses, tokens and identities, config defaults."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import torch

from helpers.daemons import config
from multipassdedup.daemon.auth import Authenticator, peer_host, read_tokens_file
from multipassdedup.daemon.config import parse_config
from multipassdedup.daemon.errors import ConfigError, ListenError, MemoryBudgetError, SessionLimitError, TokenFileError
from multipassdedup.daemon.limits import Limits
from multipassdedup.daemon.listen import parse_listen, prepare_unix_socket
from multipassdedup.daemon.memory import auto_budget, available_host_bytes, cgroup_memory_room, parse_budget
from multipassdedup.daemon.sessions import SessionRegistry
from multipassdedup.proto import mpd_pb2
from multipassdedup.units import format_bytes


@pytest.mark.parametrize("text, loopback, target", [
    ("127.0.0.1:50051", True, "127.0.0.1:50051"),
    ("127.8.9.10:1", True, "127.8.9.10:1"),
    ("localhost:0", True, "localhost:0"),
    ("[::1]:50051", True, "[::1]:50051"),
    ("0.0.0.0:50051", False, "0.0.0.0:50051"),
    ("[::]:50051", False, "[::]:50051"),
    ("192.168.1.5:50051", False, "192.168.1.5:50051"),
    ("gpu-box.lan:50051", False, "gpu-box.lan:50051"),  # a name may resolve to anything
    ("unix:///run/mpd/mpd.sock", True, "unix:///run/mpd/mpd.sock"),
    ("unix:/run/mpd/mpd.sock", True, "unix:///run/mpd/mpd.sock"),
])
def test_listen_addresses(text, loopback, target) -> None:
    address = parse_listen(text)
    assert address.is_loopback is loopback and address.grpc_target() == target


@pytest.mark.parametrize("text", ["50051", "127.0.0.1:http", "127.0.0.1:70000", "unix:mpd.sock", ":50051"])
def test_bad_listen_addresses(text) -> None:
    with pytest.raises(ListenError):
        parse_listen(text)


def test_a_stale_unix_socket_is_replaced_but_a_live_one_is_not(tmp_path) -> None:
    path = tmp_path / "s"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    with pytest.raises(ListenError, match="another process is listening"):
        prepare_unix_socket(path)
    live.close()  # the file stays behind, as after a crash
    assert path.exists()
    prepare_unix_socket(path)
    assert not path.exists()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ListenError, match="not a socket"):
        prepare_unix_socket(tmp_path / "plain")


def test_tokens_file_and_identities(tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice  tok-a   # her laptop\n\nbob tok-b\n")
    auth = Authenticator("shared", read_tokens_file(tokens))
    assert auth.check({"authorization": "Bearer tok-b"}) == (True, "bob")
    assert auth.check({"authorization": "bearer shared"}) == (True, "")
    assert auth.check({"authorization": "Bearer nope"})[0] is False
    assert auth.check({"authorization": "tok-a"}) == (False,
                                                      "malformed authorization metadata; expected 'Bearer <token>'")
    assert auth.identify({"authorization": "Bearer tok-a", "mpd-user": "mallory"}, "ipv4:10.0.0.2:4000") == "alice"
    assert auth.identify({"authorization": "Bearer shared", "mpd-user": "carol"}, "ipv4:10.0.0.2:4000") == \
        "carol@10.0.0.2"
    assert auth.identify({"mpd-user": "dave\n<x>"}, "ipv6:[::1]:5000") == "davex@::1"
    assert Authenticator().identify({}, "unix:") == "unix"
    assert not Authenticator().required and auth.required
    assert peer_host("ipv4:127.0.0.1:5555") == "127.0.0.1"
    bad = tmp_path / "bad"
    bad.write_text("alice\n")
    with pytest.raises(TokenFileError, match="bad:1: expected 'user token', got 1 field"):
        read_tokens_file(bad)
    bad.write_text("alice same\nbob same\n")
    with pytest.raises(TokenFileError, match="'bob' has the same token as 'alice'"):
        read_tokens_file(bad)
    with pytest.raises(TokenFileError, match="cannot read tokens file"):
        read_tokens_file(tmp_path / "missing")


def test_config_defaults_are_the_commands_defaults() -> None:
    s = parse_config(config(), ["rife"], Limits())
    e = s.engine
    assert e.scdet and e.scdet_threshold == 0.3 and e.scale == 1.0 and e.compensate_delay
    assert s.pixel_format == "rgb24" and s.frame_bytes == 128 * 64 * 3
    s = parse_config(config(no_scdet=True, reference_timing=True, pixel_format=mpd_pb2.RGB48LE, scdet_threshold=0.0,
                            dst_fps=None, times=2.5), ["rife"], Limits())
    e = s.engine
    assert not e.scdet and not e.compensate_delay and s.frame_bytes == 128 * 64 * 6 and e.times == 2.5
    assert e.scdet_threshold == 0.0  # an explicit 0 is kept, not taken for "unset"
    with pytest.raises(ConfigError, match="times must exceed 1"):
        parse_config(config(dst_fps=None, times=1.0), ["rife"], Limits())


def test_limits_size_messages_for_4k_sixteen_bit() -> None:
    limits = Limits()
    assert limits.max_frame_bytes == 4096 * 2160 * 6 > 3840 * 2160 * 6
    assert limits.max_message_bytes > 4096 * 2160 * 6
    with pytest.raises(ValueError, match="frames-in-flight must be at least 1"):
        Limits(frames_in_flight=0)


@pytest.mark.parametrize("fields, message", [
    (dict(max_other_streams=0), "max-other-streams must be at least 1, got 0"),
    (dict(max_health_watches=0), "max-health-watches must be at least 1, got 0"),
    (dict(stream_idle_timeout=float("nan")), "stream-idle-timeout must be 0 \\(never\\) or positive, got nan"),
    (dict(idle_timeout=-1.0), "idle-timeout must be 0 \\(never\\) or positive, got -1"),
    (dict(max_sessions_per_user=-2), "max-sessions-per-user must be at least 1 \\(or 0 for the default\\)"),
])
def test_limits_refuse_values_that_cannot_work(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**fields)


def test_sessions_per_user_default_to_half_the_slots_and_never_exceed_them() -> None:
    assert [Limits(max_sessions=n).sessions_per_user for n in (1, 2, 3, 8)] == [1, 1, 2, 4]
    assert Limits(max_sessions=4, max_sessions_per_user=9).sessions_per_user == 4
    registry = SessionRegistry(max_sessions=4, per_user=2)
    registry.open("alice", "p"), registry.open("alice", "p"), registry.open("bob", "p")
    with pytest.raises(SessionLimitError, match="user 'alice' has 2 sessions"):
        registry.open("alice", "p")
    assert registry.rejected == 1 and registry.active == 3


@pytest.mark.parametrize("text, size", [("auto", None), ("none", 0), ("0", 0), ("12G", 12 * 2 ** 30),
                                         ("512MiB", 512 * 2 ** 20), ("1.5G", 3 * 2 ** 29), ("1e9", 10 ** 9)])
def test_memory_budget_sizes(text, size) -> None:
    assert parse_budget(text) == size


@pytest.mark.parametrize("text", ["12X", "-1G", "G", "lots"])
def test_bad_memory_budgets(text) -> None:
    with pytest.raises(ValueError, match="memory budget must be"):
        parse_budget(text)


def test_memory_budget_defaults_and_readable_sizes() -> None:
    assert 0 < auto_budget(torch.device("cpu"))[0] < available_host_bytes()
    assert [format_bytes(n) for n in (100, 1536, 3 * 2 ** 30)] == ["100 B", "1.5 KiB", "3.0 GiB"]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_memory_room_v2_and_v1(tmp_path) -> None:
    v2 = tmp_path / "v2"
    _write(v2 / "system.slice/mpd-daemon.service/memory.max", "4294967296\n")
    _write(v2 / "system.slice/mpd-daemon.service/memory.current", "1073741824\n")
    assert cgroup_memory_room(v2, "0::/system.slice/mpd-daemon.service\n") == 3 * 2 ** 30
    _write(v2 / "memory.max", "max\n")  # the mount's root: what a container sees
    _write(v2 / "memory.current", "5\n")
    assert cgroup_memory_room(v2, "0::/elsewhere\n") is None
    v1 = tmp_path / "v1"
    _write(v1 / "memory/memory.limit_in_bytes", "2147483648\n")
    _write(v1 / "memory/memory.usage_in_bytes", "3221225472\n")  # over the limit: no room at all
    assert cgroup_memory_room(v1, "9:cpu:/\n4:memory:/docker/abc\n") == 0
    _write(v1 / "memory/memory.limit_in_bytes", "9223372036854771712\n")  # v1's "unlimited"
    assert cgroup_memory_room(v1, "4:memory:/docker/abc\n") is None
    assert cgroup_memory_room(tmp_path / "none", "0::/\n") is None
    assert cgroup_memory_room(v2, "garbage\n0::/system.slice/mpd-daemon.service\n") == 3 * 2 ** 30


def test_the_registry_reserves_memory_and_frees_it_with_the_slot() -> None:
    registry = SessionRegistry(max_sessions=3, memory_budget=1000)
    a, b, c = (registry.open("u", "p") for _ in range(3))
    registry.reserve(a, 600, "session a")
    with pytest.raises(MemoryBudgetError, match="holds? 600 B of its 1000 B memory budget") as busy:
        registry.reserve(b, 500, "session b")
    assert busy.value.busy and registry.rejected == 1
    with pytest.raises(MemoryBudgetError, match="session c needs about 1001 B of memory, more than") as never:
        registry.reserve(c, 1001, "session c")
    assert not never.value.busy
    registry.reserve(b, 400, "session b")
    assert registry.memory_reserved == 1000
    assert registry.release(a) and not registry.release(a)
    assert registry.memory_reserved == 400


def test_a_session_that_fails_at_once_still_describes_its_start(rife) -> None:
    """The start message does not need the engine: a stream can end (and free it) before it is sent."""
    import threading

    from multipassdedup.daemon.scheduler import BatchScheduler
    from multipassdedup.daemon.sessions import Session, SessionRegistry

    registry, ended = SessionRegistry(max_sessions=1), threading.Event()
    scheduler = BatchScheduler()
    scheduler.start()
    try:
        slot = registry.open("u", "peer")
        session = Session(slot, parse_config(config(), ["rife"], Limits()), rife, scheduler, 4, registry.release,
                          lambda *_: ended.set())
        session.start(iter([mpd_pb2.ClientMessage(config=config())]))  # a second config: the session fails
        assert ended.wait(30) and session.engine is None
        start = session.start_message(Limits(), "cpu").start
        assert start.n_pass == 3 and start.session_id == slot.id
    finally:
        scheduler.close()


def test_daemon_precision_flag() -> None:
    from multipassdedup.daemon.errors import StartupError
    from multipassdedup.daemon.main import build_parser, options_from_args
    from multipassdedup.daemon.server import load_models

    def options(*argv: str):
        return options_from_args(build_parser().parse_args(list(argv)))

    assert options().precisions == ["auto"]
    assert options("--precision", "BF16, fp32").precisions == ["bf16", "fp32"]
    assert options("--half").precisions == ["fp16", "auto"]  # the old flag, first
    with pytest.raises(StartupError, match=r"--precision takes auto, fp32, bf16, fp16 \(comma-separated\), got 'fp64'"):
        options("--precision", "fp64").load()
    with pytest.raises(StartupError, match=r"^gimm runs in fp32 only, not in bf16 \(mpd-daemon --precision\)$"):
        load_models(["gimm"], "cpu", precisions=["bf16"])  # refused before any weight file is looked for


def test_a_precision_that_cannot_be_served_here_is_left_out_with_a_warning(rife, caplog) -> None:
    from multipassdedup.core import precision_variants

    caplog.set_level(logging.WARNING, logger="multipassdedup.core")
    assert list(precision_variants(rife, ["fp32", "bf16", "fp16"])) == ["fp32", "bf16"]  # fp16 on a CPU
    assert [r.getMessage() for r in caplog.records] == [
        "rife: precision fp16 left out (fp16 runs on CUDA only; using fp32 on the CPU): sessions asking for it are "
        "refused"]
