"""Where the daemons are: ``--server`` parsed into a gRPC target, and the channel a session runs on.

``--server`` names one daemon (``host:port``, ``unix:///path``) or a fleet: several addresses
(``A,B,C``, or the flag repeated, joined with commas) or a gRPC target URI that resolves to several
(``dns:///gpu-pool.lan:50051``, ``ipv4:///10.0.0.1:50051,10.0.0.2:50051``, ``ipv6:///...``).

A fleet's sessions go through one channel whose service config asks gRPC itself to spread them
(``round_robin`` load balancing) over the daemons that pass client-side health checking against
the ``grpc.health.v1`` service every daemon serves: a draining daemon (SIGTERM) reports
NOT_SERVING and gets no new session, a daemon that is down is not READY and is skipped. Nothing
here coordinates the daemons; the balancing and the health watching are gRPC's.

A single address keeps a direct channel without health checking, so that a daemon that is
draining still answers the session with its own refusal (one daemon has no other to go to).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from ...proto import mpd_pb2
from ...proto.wire import channel_options
from ..errors import TargetError

#: The service the daemons' health service reports on (SERVING, NOT_SERVING once draining).
HEALTH_SERVICE = mpd_pb2.DESCRIPTOR.services_by_name["MultiPassDedup"].full_name
RESOLVER_SCHEMES = ("dns:", "ipv4:", "ipv6:")




@dataclass(frozen=True)
class DaemonTarget:
    """What ``--server`` names: the gRPC target string, and whether it is a fleet.

    ``text`` is what the user gave (for messages); ``target`` what gRPC dials.
    """

    text: str
    target: str
    fleet: bool


def split_servers(values: str | Iterable[str]) -> list[str]:
    """The entries of ``--server`` (comma lists, repeated flags); a resolver URI stays whole, commas and all."""
    items = [values] if isinstance(values, str) else list(values)
    entries: list[str] = []
    for item in items:
        item = item.strip()
        if item.startswith(RESOLVER_SCHEMES):
            entries.append(item)
            continue
        entries += [part.strip() for part in item.split(",") if part.strip()]
    return entries


def parse_target(values: str | Iterable[str]) -> DaemonTarget:
    """``--server``'s value(s) as one gRPC target.

    Several ``host:port`` entries become one ``ipv4:``/``ipv6:`` target (names resolved now, every
    address a name has); a resolver URI is passed on as it is and must be the only entry; a unix
    socket is one daemon on this machine and cannot be part of a list.
    """
    entries = split_servers(values)
    text = ",".join(entries)
    if not entries:
        raise TargetError("--server names no daemon")
    uris = [e for e in entries if e.startswith(RESOLVER_SCHEMES)]
    if uris:
        if len(entries) > 1:
            raise TargetError(f"a target URI ({uris[0]}) names the whole fleet: give it alone, not with other "
                              "addresses")
        return DaemonTarget(text, entries[0], fleet=True)
    if len(entries) == 1:
        return DaemonTarget(text, entries[0], fleet=False)
    unix = [e for e in entries if e.startswith("unix:")]
    if unix:
        raise TargetError(f"{unix[0]} is one daemon on this machine; a list of daemons takes host:port addresses "
                          "(let local daemons listen on loopback ports)")
    return DaemonTarget(text, address_list_target(entries), fleet=True)


def address_list_target(entries: Sequence[str]) -> str:
    """``host:port`` entries as one ``ipv4:///``/``ipv6:///`` target (IPv4 addresses mapped when both appear)."""
    v4: list[str] = []
    v6: list[str] = []
    for entry in entries:
        host, port = split_host_port(entry)
        for family, address in resolve(host, port):
            (v4 if family == socket.AF_INET else v6).append(address)
    if not v6:
        return "ipv4:///" + ",".join(f"{a}:{p}" for a, p in _unique(v4))
    mapped = [(f"::ffff:{a}", p) for a, p in v4]
    return "ipv6:///" + ",".join(f"[{a}]:{p}" for a, p in _unique(v6 + mapped))


def split_host_port(entry: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; TargetError when the port is missing or not a number."""
    host, sep, port = entry.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"{entry!r} is not host:port (a daemon in a list needs its port)")
    return host, int(port)


def resolve(host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
    """Every TCP address of ``host`` (IPv4 and IPv6), as (family, (address, port)); TargetError when none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise TargetError(f"cannot resolve {host}: {e.strerror}") from None
    return [(family, (sockaddr[0], port)) for family, _, _, _, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)]


def _unique(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return list(dict.fromkeys(pairs))


def fleet_service_config() -> str:
    """The service config of a fleet channel: round_robin over the daemons that health checking calls SERVING."""
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": HEALTH_SERVICE},
    })


def tls_server_name(target: DaemonTarget) -> str | None:
    """The name a fleet's certificates are checked against when the target has no host name of its own.

    A ``dns:///name:port`` target is checked against ``name`` by gRPC; a list of addresses given by
    name is checked against its first name (the fleet's certificate must carry that name).
    """
    if not target.fleet or target.target.startswith("dns:"):
        return None
    first = split_servers(target.text)[0]
    if first.startswith(RESOLVER_SCHEMES):
        return None
    return split_host_port(first)[0]


def open_session_channel(address: str, root_cert: bytes | str | Path | None = None, tls: bool = False,
                         ) -> grpc.Channel:
    """The channel sessions run on: direct for one daemon, load-balanced and health-checked for a fleet."""
    target = parse_target(address)
    options = channel_options()
    if target.fleet:
        options.append(("grpc.service_config", fleet_service_config()))
    if root_cert is None and not tls:
        return grpc.insecure_channel(target.target, options=options)
    if isinstance(root_cert, (str, Path)):
        root_cert = Path(root_cert).read_bytes()  # the caller reports an unreadable file (remote.open_channel)
    name = tls_server_name(target)
    if name is not None:
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(target.target, grpc.ssl_channel_credentials(root_certificates=root_cert),
                               options=options)


def member_server_name(target: DaemonTarget) -> str | None:
    """The name a fleet member's certificate is checked against when it is dialled by its own address: the list's
    first name, or a ``dns:///`` target's name."""
    if target.target.startswith("dns:"):
        return split_host_port(target.target.split("/")[-1])[0]
    return tls_server_name(target)


def open_member_channel(address: str, root_cert: bytes | None = None, server_name: str | None = None
                        ) -> grpc.Channel:
    """A plain channel to one daemon of a fleet (no balancing, no health checking): each member asked on its own,
    as ``--status`` and a chunked job do. TLS when ``root_cert``, checked against ``server_name`` if given."""
    options = channel_options()
    if root_cert is None:
        return grpc.insecure_channel(address, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root_cert), options)


def daemon_addresses(target: DaemonTarget) -> list[str]:
    """Each daemon of a target as an address of its own (for ``--status``): a list's entries, a URI's addresses
    (a ``dns:`` name: every address it resolves to now)."""
    if not target.fleet:
        return [target.target]
    entries = split_servers(target.text)
    if not entries[0].startswith(RESOLVER_SCHEMES):
        return entries  # a list as given: a name with IPv4 and IPv6 addresses is still one daemon
    scheme, _, rest = target.target.partition(":")
    rest = rest.lstrip("/")
    if scheme in ("ipv4", "ipv6"):
        return [part for part in rest.split(",") if part]
    # dns:[//authority/]host:port -- every address the name resolves to now.
    host_port = rest.split("/")[-1]
    host, port = split_host_port(host_port)
    return [f"[{a}]:{p}" if family == socket.AF_INET6 else f"{a}:{p}" for family, (a, p) in resolve(host, port)]
