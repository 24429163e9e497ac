"""``mpd-client --status`` for a fleet: every daemon of ``--server``, each asked on its own.

A fleet's session channel reaches only the daemons that are SERVING; the status asks each
address directly, so draining and unreachable daemons are listed too, and one that answers with a
refusal (a token it does not accept) is counted as refusing, not as not answering.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from ...proto import mpd_pb2, mpd_pb2_grpc
from ..errors import DaemonUnavailableError, RemoteSessionError
from .channel import DaemonTarget, daemon_addresses, member_server_name, open_member_channel
from .daemon_status import format_status
from .session import call_metadata, error_from_rpc, read_root_cert

STATUS_TIMEOUT = 5.0


@dataclass
class DaemonReport:
    """One daemon's answer: its Status, or the one-line reason it gave none."""

    address: str
    status: mpd_pb2.StatusResponse | None = None
    error: str = ""
    refusal: RemoteSessionError | None = None  # it answered, and refused (a token it does not accept)


def ask_daemon(address: str, token: str | None, root_cert: bytes | None, server_name: str | None,
               timeout: float = STATUS_TIMEOUT) -> DaemonReport:
    """The Status of the daemon at ``address`` (a plain channel: no health checking, draining ones answer too)."""
    channel = open_member_channel(address, root_cert, server_name)
    try:
        reply = mpd_pb2_grpc.MultiPassDedupStub(channel).Status(mpd_pb2.StatusRequest(), timeout=timeout,
                                                                 metadata=call_metadata(token))
        return DaemonReport(address, reply)
    except grpc.RpcError as err:
        error = error_from_rpc(err, address)
        return DaemonReport(address, error=str(error),
                            refusal=error if isinstance(error, RemoteSessionError) else None)
    finally:
        channel.close()


def fleet_reports(target: DaemonTarget, token: str | None = None,
                  root_cert: bytes | str | Path | None = None) -> list[DaemonReport]:
    """Every daemon of the fleet's answer, asked at once (an unreachable one costs its timeout, not the sum)."""
    root_cert = read_root_cert(root_cert)
    addresses = daemon_addresses(target)
    name = member_server_name(target)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(addresses)))) as pool:
        return list(pool.map(lambda a: ask_daemon(a, token, root_cert, name), addresses))


def format_fleet(target: DaemonTarget, reports: list[DaemonReport]) -> str:
    """A summary line for the fleet, then each daemon's status (or why it did not answer), a blank line between."""
    up = [r for r in reports if r.status is not None]
    draining = sum(1 for r in up if r.status.draining)
    refusing = sum(1 for r in reports if r.refusal is not None)
    running = sum(r.status.sessions_active for r in up)
    head = (f"fleet {target.text}: {len(reports)} daemon{'' if len(reports) == 1 else 's'}, "
            f"{len(up) - draining} serving, {draining} draining, {refusing} refusing, "
            f"{len(reports) - len(up) - refusing} not answering; {running} session{'' if running == 1 else 's'} "
            "running")
    blocks = [format_status(r.address, r.status) if r.status is not None else
              r.error if r.error.startswith(f"daemon at {r.address}") else f"daemon at {r.address}: {r.error}"
              for r in reports]
    return "\n\n".join([head] + blocks)


def fleet_status(target: DaemonTarget, token: str | None = None, root_cert: bytes | str | Path | None = None) -> str:
    """``--status`` of a fleet; the refusal when every daemon refuses it (a wrong token), DaemonUnavailableError
    when not one of its daemons answers."""
    reports = fleet_reports(target, token, root_cert)
    if not any(r.status is not None for r in reports):
        refusal = next((r.refusal for r in reports if r.refusal is not None), None)
        if refusal is not None:
            raise refusal
        raise DaemonUnavailableError(f"no daemon of {target.text} answers: {reports[0].error if reports else ''}")
    return format_fleet(target, reports)


def refusing_daemons(target: DaemonTarget, code: str, token: str | None = None,
                     root_cert: bytes | str | Path | None = None) -> list[str]:
    """The daemons of the fleet that refuse this client's Status with ``code`` (UNAUTHENTICATED: a token they do
    not accept): a session's refusal comes through the fleet's one channel, which does not say which daemon it
    was."""
    return [r.address for r in fleet_reports(target, token, root_cert) if r.refusal is not None
            and r.refusal.code == code]
