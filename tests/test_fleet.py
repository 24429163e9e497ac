"""A fleet of daemons behind one ``--server``: three real daemons on loopback ports, gRPC's round_robin
with health checking spreading the sessions, draining and stopped daemons left out, ``--status`` of all."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from helpers.daemons import run_local
from helpers.frames import FILM, H, W, moving_clip
from helpers.waiting import wait_until
from multipassdedup.client.errors import DaemonUnavailableError, RemoteSessionError, TargetError
from multipassdedup.client.remote.channel import daemon_addresses, open_session_channel, parse_target, split_servers
from multipassdedup.client.remote.fleet_status import fleet_status
from multipassdedup.client.remote.session import RemoteEngine, probe
from multipassdedup.daemon.limits import Limits
from multipassdedup.daemon.options import DaemonOptions
from multipassdedup.daemon.server import DaemonServer

CLIP = moving_clip(4, H, W)


@pytest.fixture
def fleet(rife):
    """Three in-process daemons on loopback TCP ports; each must have released every session it created."""
    daemons = [DaemonServer(DaemonOptions(listen=["127.0.0.1:0"]), {"rife": rife}).start() for _ in range(3)]
    yield daemons
    for d in daemons:
        assert wait_until(lambda d=d: d.registry.active == 0, 10), "a session was never released"
        assert d.registry.created == d.registry.released
        d.stop(0)


def server_list(daemons: list[DaemonServer]) -> str:
    return ",".join(d.addresses[0] for d in daemons)


def one_session(target: str, channel: grpc.Channel | None = None) -> list[np.ndarray]:
    engine = RemoteEngine(target, n_pass=2, src_fps=FILM, dst_fps=60, channel=channel)
    out = []
    for frame in CLIP:
        out += engine.push(frame)
    return out + engine.flush()


def created(daemons: list[DaemonServer]) -> list[int]:
    return [d.registry.created for d in daemons]


def test_server_values_parse_into_one_target() -> None:
    assert split_servers(["a:1,b:2", "c:3"]) == ["a:1", "b:2", "c:3"]
    assert split_servers("ipv4:///127.0.0.1:1,127.0.0.1:2") == ["ipv4:///127.0.0.1:1,127.0.0.1:2"]
    one = parse_target("127.0.0.1:50051")
    assert (one.target, one.fleet) == ("127.0.0.1:50051", False)
    pair = parse_target(["127.0.0.1:1", "127.0.0.2:2"])
    assert (pair.target, pair.fleet) == ("ipv4:///127.0.0.1:1,127.0.0.2:2", True)
    assert daemon_addresses(pair) == ["127.0.0.1:1", "127.0.0.2:2"]
    assert parse_target("dns:///localhost:9").fleet
    assert "127.0.0.1:9" in daemon_addresses(parse_target("dns:///localhost:9"))
    mixed = parse_target("127.0.0.1:1,[::1]:2")
    assert mixed.target == "ipv6:///[::1]:2,[::ffff:127.0.0.1]:1"


@pytest.mark.parametrize("value, message", [
    ("127.0.0.1:1,unix:///run/mpd.sock", "is one daemon on this machine"),
    ("127.0.0.1:1,127.0.0.1", "is not host:port"),
    (["dns:///pool:1", "127.0.0.1:2"], "names the whole fleet"),
    (",", "names no daemon"),
])
def test_a_target_that_names_no_fleet_is_a_one_line_usage_error(value, message) -> None:
    with pytest.raises(TargetError, match=message):
        parse_target(value)


def test_sessions_spread_over_every_daemon_and_match_the_engine(fleet, rife) -> None:
    target = server_list(fleet)
    channel = open_session_channel(target)
    try:
        outputs = [one_session(target, channel) for _ in range(6)]
    finally:
        channel.close()
    assert all(n >= 1 for n in created(fleet)), created(fleet)  # round_robin: every daemon took sessions
    assert sum(created(fleet)) == 6
    reference = run_local(rife, CLIP, n_pass=2)
    for out in outputs:
        assert len(out) == len(reference) and all(np.array_equal(a, b) for a, b in zip(out, reference))


def test_a_draining_daemon_gets_no_new_sessions(fleet) -> None:
    draining = fleet[0]
    draining.registry.draining = True
    draining.health.draining()  # what SIGTERM does first: health says NOT_SERVING
    target = server_list(fleet)
    for _ in range(6):
        one_session(target)
    assert draining.registry.created == 0 and draining.registry.rejected == 0  # not even asked
    assert sum(created(fleet)) == 6


def test_a_stopped_daemon_is_skipped(fleet) -> None:
    target = server_list(fleet)
    fleet[1].stop(0)
    for _ in range(6):
        one_session(target)
    assert fleet[1].registry.created == 0 and sum(created(fleet)) == 6
    assert probe(target)  # the fleet still answers


def test_a_fleet_with_no_daemon_serving_is_unavailable(fleet) -> None:
    target = server_list(fleet)
    for d in fleet:
        d.stop(0)
    assert not probe(target)
    with pytest.raises(DaemonUnavailableError, match="cannot connect"):
        RemoteEngine(target, n_pass=2, src_fps=FILM, dst_fps=60, connect_timeout=1)
    with pytest.raises(DaemonUnavailableError, match="no daemon of"):
        fleet_status(parse_target(target))


def test_status_lists_every_daemon_serving_draining_or_down(fleet) -> None:
    one_session(fleet[2].addresses[0])
    fleet[0].registry.draining = True
    fleet[0].health.draining()
    fleet[1].stop(0)
    target = server_list(fleet)
    text = fleet_status(parse_target(target))
    lines = text.splitlines()
    assert lines[0] == (f"fleet {target}: 3 daemons, 1 serving, 1 draining, 0 refusing, 1 not answering; "
                        "0 sessions running")
    a, b, c = (d.addresses[0] for d in fleet)
    assert f"daemon at {a}: cpu, models rife" in text and "draining: finishing its sessions" in text
    assert any(line.startswith(f"daemon at {b} unavailable") for line in lines), text
    assert f"daemon at {c}: cpu" in text and "(1 accepted, 1 ended, 0 refused as busy)" in text


def test_status_counts_a_daemon_refusing_the_token_as_answering(rife) -> None:
    # It was counted "not answering", although it answered: with a refusal, which names it alone.
    daemons = [DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], token=token), {"rife": rife}).start()
               for token in ("t0k", "another")]
    try:
        target = server_list(daemons)
        text = fleet_status(parse_target(target), "t0k")
        refusing = daemons[1].addresses[0]
        assert text.splitlines()[0] == (f"fleet {target}: 2 daemons, 1 serving, 0 draining, 1 refusing, 0 not "
                                        "answering; 0 sessions running")
        assert f"\n\ndaemon at {refusing}: UNAUTHENTICATED: wrong token" in text
        with pytest.raises(RemoteSessionError,
                           match=f"^daemon at {refusing}: UNAUTHENTICATED: wrong token: check --token or "
                                 r"\$MPD_TOKEN$"):
            fleet_status(parse_target(refusing + "," + refusing.replace("127.0.0.1", "localhost")), "t0k")
    finally:
        for d in daemons:
            d.stop(0)


def test_status_flag_repeated_server_lists_the_fleet(fleet, capsys) -> None:
    from multipassdedup.client.main import main

    args = ["--status"] + [a for d in fleet for a in ("--server", d.addresses[0])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"fleet {server_list(fleet)}: 3 daemons, 3 serving, 0 draining, 0 refusing, 0 not answering")
    assert all(f"daemon at {d.addresses[0]}: cpu" in out for d in fleet)


def test_a_tls_fleet_with_tokens_checks_the_certificates_name(rife, work_dir) -> None:
    from helpers.daemons import make_certificate

    cert, key = make_certificate(work_dir)
    daemons = [DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], token="t0k", tls_cert=cert, tls_key=key),
                            {"rife": rife}).start() for _ in range(2)]
    try:
        # By name: the certificates say "localhost"; the list resolves to 127.0.0.1 (and ::1, where nothing listens).
        target = ",".join(f"localhost:{d.addresses[0].rpartition(':')[2]}" for d in daemons)
        channel = open_session_channel(target, cert.read_bytes())
        try:
            for _ in range(4):
                engine = RemoteEngine(target, token="t0k", n_pass=2, src_fps=FILM, dst_fps=60, channel=channel)
                for frame in CLIP:
                    engine.push(frame)
                engine.flush()
        finally:
            channel.close()
        assert [d.registry.created >= 1 for d in daemons] == [True, True]
        text = fleet_status(parse_target(target), "t0k", cert)
        assert text.startswith(f"fleet {target}: 2 daemons, 2 serving, 0 draining, 0 refusing, 0 not answering")
        assert not probe(target)  # without the CA, no daemon of the fleet is reachable
    finally:
        for d in daemons:
            d.stop(0)


def test_watches_held_by_anyone_cannot_keep_a_new_fleet_client_out(rife) -> None:
    # Fleet health checking is a Health.Watch per daemon, which needs no token: four of them (from fleet clients or
    # anyone) used to fill --max-other-streams, and the next fleet client found no daemon ("connection failed").
    from helpers.daemons import own_connection, watch

    limits = Limits(max_other_streams=2, max_health_watches=2)
    daemons = [DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], token="t0k", limits=limits), {"rife": rife}).start()
               for _ in range(2)]
    intruders = [own_connection(d.addresses[0]) for d in daemons]
    try:
        held = [watch(channel) for channel in intruders for _ in range(3)]  # more than the bound, without a token
        assert all(d.streams.open_watches == 2 for d in daemons)
        engine = RemoteEngine(server_list(daemons), token="t0k", n_pass=2, src_fps=FILM, dst_fps=60)
        out = [f for frame in CLIP for f in engine.push(frame)] + engine.flush()
        reference = run_local(rife, CLIP, n_pass=2)
        assert len(out) == len(reference) and all(np.array_equal(a, b) for a, b in zip(out, reference))
        assert sum(d.streams.watches_ended for d in daemons) >= 3  # the intruders' own, and one each for the client
        assert len(held) == 6
    finally:
        for channel in intruders:
            channel.close()
        for d in daemons:
            d.stop(0)


def test_a_fleet_session_refused_for_its_token_names_that_daemon_alone(rife, work_dir, capsys) -> None:
    # It named the whole list ("daemon at A,B: UNAUTHENTICATED"): the session's channel does not say which one.
    import av

    from multipassdedup.client.main import main

    down, refusing = [DaemonServer(DaemonOptions(listen=["127.0.0.1:0"], token=token), {"rife": rife}).start()
                      for token in ("t0k", "another")]
    down.stop(0)  # the balancer can only pick the other one
    src = work_dir / "in.mkv"
    with av.open(str(src), "w") as c:
        stream = c.add_stream("ffv1", rate=FILM)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i, rgb in enumerate(CLIP):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    try:
        code = main(["-q", "-i", str(src), "-o", str(work_dir / "out.mkv"), "-c", "ffv1", "-np", "2", "-fps", "60",
                     "--server", f"{down.addresses[0]},{refusing.addresses[0]}", "--token", "t0k"])
        err = capsys.readouterr().err.strip().splitlines()
        assert (code, err) == (2, [f"mpd-client: error: daemon at {refusing.addresses[0]}: UNAUTHENTICATED: wrong "
                                   "token: check --token or $MPD_TOKEN"])
    finally:
        refusing.stop(0)
