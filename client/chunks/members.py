"""Where a chunked job's sessions run: each chunk on the daemon of ``--server`` running the fewest of the job's chunks.

A job places its chunks itself instead of letting one balanced channel pick: every daemon of the
fleet (``remote.channel.daemon_addresses``: the list's entries, a ``dns:///`` name's addresses) gets a
channel of its own, so that

- N chunks at once go to N different daemons when there are N (the one running the fewest of the
  job's chunks, ties in the fleet's order), whatever order the connections came up in;
- a daemon that refuses a session as busy is left alone for a backoff (a quarter second, doubling
  to two) while the chunk goes to another, and when every daemon is busy the chunk waits for the
  first one to come back or for one of the job's own sessions to end (which frees a slot). It waits
  as long as another chunk of the job runs, and up to ``busy_wait`` seconds while none does: then
  the fleet is full with other work, and the job ends (exit 69);
- a daemon that failed (gone, draining, stopped answering) is left alone longer (one second,
  doubling to eight) while its chunk is retried elsewhere;
- a failure names the daemon that failed, not the whole list.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import grpc

from ..errors import ClientError, ExitCode

log = logging.getLogger(__name__)

BUSY_BACKOFF = (0.25, 2.0)  # seconds a daemon that refused as busy is left alone: first, largest (doubling)
FAILURE_BACKOFF = (1.0, 8.0)  # the same for a daemon that failed
WAIT_STEP = 0.5  # a waiting chunk looks at the stop flag at least this often


class NoFreeSession(ClientError):
    """Every daemon stayed busy for the busy wait while no chunk of the job ran (retry later)."""

    exit_code = ExitCode.UNAVAILABLE


class JobStopped(ClientError):
    """The job is stopping (another chunk failed for good, or a signal): this chunk gives up."""


@dataclass
class Member:
    """One daemon of the fleet as the job sees it."""

    address: str
    channel: grpc.Channel
    order: int
    running: int = 0  # the job's chunks on it now (started or starting)
    ready_at: float = 0.0  # monotonic time before which it gets no chunk (busy or failed just now)
    busy_backoff: float = BUSY_BACKOFF[0]
    failure_backoff: float = FAILURE_BACKOFF[0]


class Lease:
    """One chunk attempt's daemon, from ``Members.take`` until ``end``."""

    def __init__(self, members: Members, member: Member) -> None:
        self.members = members
        self.member = member
        self.started = False
        self.ended = False

    @property
    def address(self) -> str:
        return self.member.address

    @property
    def channel(self) -> grpc.Channel:
        return self.member.channel

    def start(self) -> None:
        """The session started (the daemon took it)."""
        if not self.started:
            self.started = True
            self.members._started(self)

    def end(self, outcome: str, reason: str = "") -> None:
        """The attempt is over: ``done``, ``busy`` (refused as busy) or ``failed``; ``reason`` for the log."""
        if not self.ended:
            self.ended = True
            self.members._ended(self, outcome, reason)


class Members:
    """The fleet's daemons for one job: ``take`` a daemon for a chunk attempt, ``Lease.end`` gives it back."""

    def __init__(self, members: list[tuple[str, grpc.Channel]], busy_wait: float, stop: threading.Event) -> None:
        self.members = [Member(address, channel, n) for n, (address, channel) in enumerate(members)]
        self.busy_wait = busy_wait
        self.stop = stop
        self.sessions = 0  # the job's sessions running now
        self.last_change = time.monotonic()  # when one of the job's sessions last started or ended
        self.last_busy = ""  # the latest busy refusal, for the message when the wait runs out
        self._told_busy = False
        self._cond = threading.Condition()

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.members]

    def take(self) -> Lease:
        """The daemon for a chunk attempt: of those not left alone, the one running the fewest of the job's chunks.
        Waits while every daemon is left alone; JobStopped once the job stops, NoFreeSession when the busy wait
        ran out."""
        waiting_since = time.monotonic()
        with self._cond:
            while True:
                if self.stop.is_set():
                    raise JobStopped("stopped")
                now = time.monotonic()
                free = [m for m in self.members if m.ready_at <= now]
                if free:
                    member = min(free, key=lambda m: (m.running, m.order))
                    member.running += 1
                    return Lease(self, member)
                idle_since = max(self.last_change, waiting_since)
                if self.sessions == 0 and now - idle_since >= self.busy_wait:
                    raise NoFreeSession(f"no daemon of {', '.join(self.addresses)} had a free session for "
                                        f"{self.busy_wait:g} s ({self.last_busy})")
                until = min(m.ready_at for m in self.members)
                if self.sessions == 0:
                    until = min(until, idle_since + self.busy_wait)
                self._cond.wait(max(0.0, min(until - now, WAIT_STEP)))

    def wake(self) -> None:
        """Wake the waiting chunks (the job is stopping)."""
        with self._cond:
            self._cond.notify_all()

    def _started(self, lease: Lease) -> None:
        with self._cond:
            self.sessions += 1
            self.last_change = time.monotonic()
            lease.member.busy_backoff = BUSY_BACKOFF[0]
            lease.member.failure_backoff = FAILURE_BACKOFF[0]

    def _ended(self, lease: Lease, outcome: str, reason: str) -> None:
        member = lease.member
        with self._cond:
            member.running -= 1
            now = time.monotonic()
            if lease.started:
                self.sessions -= 1
                self.last_change = now
                member.ready_at = min(member.ready_at, now)  # its session's slot is free again
            if outcome == "busy":
                member.ready_at = now + member.busy_backoff
                member.busy_backoff = min(BUSY_BACKOFF[1], member.busy_backoff * 2)
                self.last_busy = reason
                tell, self._told_busy = not self._told_busy, True
            elif outcome == "failed":
                member.ready_at = now + member.failure_backoff
                member.failure_backoff = min(FAILURE_BACKOFF[1], member.failure_backoff * 2)
                tell = False
            else:
                tell = False
            self._cond.notify_all()
        if tell:
            log.warning("%s; chunks wait for a free session (while other chunks of the job run, and up to %g s "
                        "while none does)", reason, self.busy_wait)

    def close(self) -> None:
        for member in self.members:
            member.channel.close()
