"""``mpd-client --status`` for a fleet: every daemon of ``--server``, each asked on its own.

A fleet's session channel reaches only the daemons that are SERVING; the status asks each
address directly, so draining and unreachable daemons are listed too.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from ...proto import mpd_pb2, mpd_pb2_grpc
from ...proto.wire import channel_options
from ..errors import DaemonUnavailableError
from .channel import DaemonTarget, daemon_addresses, tls_server_name
from .daemon_status import format_status
from .session import call_metadata, error_from_rpc, read_root_cert

STATUS_TIMEOUT = 5.0


@dataclass
class DaemonReport:
    """One daemon's answer: its Status, or the one-line reason it gave none."""

    address: str
    status: mpd_pb2.StatusResponse | None = None
    error: str = ""


def ask_daemon(address: str, token: str | None, root_cert: bytes | None, server_name: str | None,
               timeout: float = STATUS_TIMEOUT) -> DaemonReport:
    """The Status of the daemon at ``address`` (a plain channel: no health checking, draining ones answer too)."""
    options = channel_options()
    if root_cert is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root_cert), options)
    try:
        reply = mpd_pb2_grpc.MultiPassDedupStub(channel).Status(mpd_pb2.StatusRequest(), timeout=timeout,
                                                                 metadata=call_metadata(token))
        return DaemonReport(address, reply)
    except grpc.RpcError as err:
        return DaemonReport(address, error=str(error_from_rpc(err, address)))
    finally:
        channel.close()


def fleet_reports(target: DaemonTarget, token: str | None = None,
                  root_cert: bytes | str | Path | None = None) -> list[DaemonReport]:
    """Every daemon of the fleet's answer, asked at once (an unreachable one costs its timeout, not the sum)."""
    root_cert = read_root_cert(root_cert)
    addresses = daemon_addresses(target)
    name = tls_server_name(target) or (target.target.split("///")[-1].rpartition(":")[0]
                                       if target.target.startswith("dns:") else None)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(addresses)))) as pool:
        return list(pool.map(lambda a: ask_daemon(a, token, root_cert, name), addresses))


def format_fleet(target: DaemonTarget, reports: list[DaemonReport]) -> str:
    """A summary line for the fleet, then each daemon's status (or why it did not answer), a blank line between."""
    up = [r for r in reports if r.status is not None]
    draining = sum(1 for r in up if r.status.draining)
    running = sum(r.status.sessions_active for r in up)
    head = (f"fleet {target.text}: {len(reports)} daemon{'' if len(reports) == 1 else 's'}, "
            f"{len(up) - draining} serving, {draining} draining, {len(reports) - len(up)} not answering; "
            f"{running} session{'' if running == 1 else 's'} running")
    blocks = [format_status(r.address, r.status) if r.status is not None else f"daemon at {r.address}: {r.error}"
              for r in reports]
    return "\n\n".join([head] + blocks)


def fleet_status(target: DaemonTarget, token: str | None = None, root_cert: bytes | str | Path | None = None) -> str:
    """``--status`` of a fleet; DaemonUnavailableError when not one of its daemons answers."""
    reports = fleet_reports(target, token, root_cert)
    if not any(r.status is not None for r in reports):
        raise DaemonUnavailableError(f"no daemon of {target.text} answers: {reports[0].error if reports else ''}")
    return format_fleet(target, reports)
