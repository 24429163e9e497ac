"""The scheduler's policy: which queued work goes to the device next, shared fairly by device time.

Pure bookkeeping, so that it is tested on its own: no threads, no clock (every call is told the time,
``now``), no torch. ``BatchScheduler`` (scheduler.py) owns the device thread and asks this class what
to run; it reports back when work was delivered and how long the device took for it.

Fairness is two-level start-time fair queueing on a virtual clock: users are served in order of the
device time they have received, and within a user so are that user's sessions. One user with four
streams and another with one therefore get half the device each while both have work waiting, whatever
their frame sizes, models or pass counts: a batch is charged the device seconds it took, split among its
parts by their evaluations (the parts of one batch share one frame shape and model, so an evaluation
costs each of them the same). Nobody can bank credit while idle: a flow that returns restarts at the
current virtual time.

A batch is filled in that same order and stops where the order reaches a flow with nothing queued
that will be back: a session already in the batch (it submits its next step only once this one is
done), or one whose last step was just delivered and that is expected back (``anticipation``).
Filling a batch with every pending same-key step instead would advance every session one step per
batch, whatever its user: four sessions of one user would get four fifths of the device beside one
session of another. A session counts as expected back for up to ``anticipation`` seconds after its
work is delivered, unless it took longer than that to come back last time (a client that sends
slowly is not waited for); the scheduler waits for such a session when the fair order reaches it, so
that its step joins the batch rather than being overtaken. Once the wait lapses the session is idle,
and restarts at the current virtual time when it returns.

While a batch runs, its parts are charged an estimate (the key's recent device seconds per
evaluation); when it is done, ``charge`` replaces the estimate by the measured time, so the order of the
next batch is decided on what the device really spent.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

ESTIMATE_WEIGHT = 0.25  # weight of the newest batch in a key's running seconds-per-evaluation estimate


class Work(Protocol):
    """A queue entry as the policy sees it: who it belongs to, what it may share a batch with, its size."""

    key: Hashable  # entries with equal keys may run in one batch (same model, frame shape, dtype, scale)
    cost: int  # evaluations (output frames): what fills a batch
    user: Hashable
    session: Hashable


W = TypeVar("W", bound=Work)


@dataclass(eq=False)
class _Flow:
    """A fair-queueing flow (a user, or a session within a user): its virtual time and waiting work.

    ``vtime`` is the device time the flow has been given, measured on the shared virtual clock; a
    flow that was idle restarts at the clock, so idling earns no credit and costs no debt.
    """

    vtime: float = 0.0
    order: int = 0  # when it was last served; breaks vtime ties round-robin
    pending: int = 0  # entries waiting (users: over all their sessions)
    parts: deque = field(default_factory=deque)  # sessions only
    sessions: dict = field(default_factory=dict)  # users only: session -> _Flow
    vclock: float = 0.0  # users only: start tag of the session last served
    # Sessions only: kept in service (their place in the fair order held) until then, while their
    # next step is prepared; infinite while their work is on the device.
    expected_until: float = 0.0
    delivered: float | None = None  # sessions only: when their last work was delivered, until they submit again
    think: float | None = None  # sessions only: how long they took to come back after their last delivery

    def expected(self, now: float) -> bool:
        """A session with nothing queued that is expected back (its place kept)."""
        return self.expected_until > now

    def in_service(self, now: float) -> bool:
        """Has work queued, or (sessions) is expected back; a user when any of its sessions is."""
        if self.pending:
            return True
        if self.sessions:
            return any(s.expected(now) for s in self.sessions.values())
        return self.expected(now)


@dataclass
class _Charge:
    """An entry on the device: the flows it was charged to and the estimate charged so far."""

    user: _Flow
    session: _Flow
    estimate: float


class FairQueue(Generic[W]):
    """Queued work of many users and sessions, handed out in batches in fair order (module docstring).

    ``batch_limit(key)`` is the most evaluations one batch of that key may hold. ``anticipation`` (seconds)
    is how long a session just served keeps its place in the order; 0 turns that off.
    """

    def __init__(self, batch_limit: Callable[[Hashable], int], anticipation: float = 0.0) -> None:
        if anticipation < 0:
            raise ValueError(f"anticipation must be 0 or positive, got {anticipation}")
        self.batch_limit = batch_limit
        self.anticipation = anticipation
        self.pending = 0  # entries waiting
        self._users: dict[Hashable, _Flow] = {}
        self._vclock = 0.0
        self._order = itertools.count(1)
        self._last_order = 0
        self._per_evaluation: dict[Hashable, float] = {}  # key -> recent device seconds per evaluation
        self._on_device: dict[int, _Charge] = {}  # id(entry) -> how it was charged when taken

    # -- queueing ---------------------------------------------------------------------------

    def push(self, entries: Sequence[W], now: float) -> None:
        """Queue one submission's entries (all of one user and session), in order."""
        if not entries:
            return
        flow = self._session_flow(entries[0].user, entries[0].session, now)
        flow.parts.extend(entries)
        flow.pending += len(entries)
        self._users[entries[0].user].pending += len(entries)
        self.pending += len(entries)

    def end_session(self, session: Hashable, now: float) -> list[W]:
        """Forget ``session``; returns its queued entries (the caller fails them)."""
        dropped: list[W] = []
        for user in self._users.values():
            flow = user.sessions.pop(session, None)
            if flow is None:
                continue
            dropped.extend(flow.parts)
            user.pending -= len(flow.parts)
            self.pending -= len(flow.parts)
        self._prune(now)
        return dropped

    def clear(self) -> list[W]:
        """Forget everything queued; returns the entries (the caller fails them)."""
        dropped = [p for u in self._users.values() for s in u.sessions.values() for p in s.parts]
        self._users.clear()
        self.pending = 0
        return dropped

    def _session_flow(self, user: Hashable, session: Hashable, now: float) -> _Flow:
        """The session's flow, restarting it (and its user) at the current virtual time if it was idle."""
        u = self._users.get(user)
        if u is None:
            u = self._users[user] = _Flow(vtime=self._vclock)
        elif not u.in_service(now):
            u.vtime = max(u.vtime, self._vclock)
        s = u.sessions.get(session)
        if s is None:
            s = u.sessions[session] = _Flow(vtime=u.vclock)
        elif not s.in_service(now):
            s.vtime = max(s.vtime, u.vclock)
        if s.delivered is not None:
            s.think = now - s.delivered
            s.delivered = None
        s.expected_until = 0.0
        return s

    def _prune(self, now: float) -> None:
        """Drop idle flows whose state would be reset on their return anyway (no credit, no debt to keep)."""
        for u in self._users.values():
            for key in [k for k, f in u.sessions.items() if not f.in_service(now) and f.vtime <= u.vclock]:
                del u.sessions[key]
        for key in [k for k, u in self._users.items() if not u.sessions and u.vtime <= self._vclock]:
            del self._users[key]

    # -- batches ----------------------------------------------------------------------------

    def estimate(self, entry: Work) -> float:
        """The device seconds ``entry`` is expected to take: its key's recent seconds per evaluation (0 until
        a batch of that key has run)."""
        return self._per_evaluation.get(entry.key, 0.0) * entry.cost

    def next_batch(self, now: float) -> tuple[list[W], float | None]:
        """The entries fair order gives now, taken off the queue and charged their estimate; or, when none
        should start yet, ``([], when)``: look again at ``when`` (a session expected back by then would join
        the batch), or after the next ``push`` if ``when`` is None."""
        planned, wake = self._plan(now)
        if wake is not None or not planned:
            return [], wake
        return self._take(planned, now), None

    def _plan(self, now: float) -> tuple[list[_Flow], float | None]:
        """The sessions whose next entries make the batch fair order gives now, one per entry, in order;
        and, when a session expected back would join it, the time to look again (None: take it as it is).

        Works on copies of the virtual times: ``_take`` then charges the same entries the same way.
        """
        tags: dict[_Flow, list] = {}  # flow in service -> [vtime, order], as it would be after the entries planned
        for u in self._users.values():
            live = [s for s in u.sessions.values() if s.in_service(now)]
            if live:
                tags[u] = [u.vtime, u.order]
                tags.update((s, [s.vtime, s.order]) for s in live)
        planned: list[_Flow] = []
        taken: dict[_Flow, int] = {}
        key, budget, order = None, 0, self._last_order
        while True:
            users = [u for u in self._users.values() if u in tags]
            if not users:
                return planned, None
            user = min(users, key=tags.__getitem__)
            session = min((s for s in user.sessions.values() if s in tags), key=tags.__getitem__)
            k = taken.get(session, 0)
            if k == len(session.parts):
                # Next in fair order with nothing queued: worth waiting for if it can still join this batch;
                # if it is in it already, it comes back only after this batch, and nothing may overtake it.
                return planned, (session.expected_until if k == 0 else None)
            part = session.parts[k]
            if key is None:
                key, budget = part.key, self.batch_limit(part.key)
            elif part.key != key or part.cost > budget:
                return planned, None
            planned.append(session)
            taken[session] = k + 1
            budget -= part.cost
            order += 1
            for flow in (user, session):
                tags[flow][0] += self.estimate(part)
                tags[flow][1] = order
            if budget <= 0:
                return planned, None

    def _take(self, planned: list[_Flow], now: float) -> list[W]:
        """Dequeue the planned entries and charge their users and sessions their estimates (as ``_plan`` assumed)."""
        owner = {id(s): u for u in self._users.values() for s in u.sessions.values()}
        batch = []
        for session in planned:
            user = owner[id(session)]
            part = session.parts.popleft()
            self.pending -= 1
            user.pending -= 1
            session.pending -= 1
            self._vclock = max(self._vclock, user.vtime)
            user.vclock = max(user.vclock, session.vtime)
            self._last_order = order = next(self._order)
            estimate = self.estimate(part)
            for flow in (user, session):
                flow.vtime += estimate
                flow.order = order
            session.expected_until = math.inf  # in service until its work is delivered
            self._on_device[id(part)] = _Charge(user, session, estimate)
            batch.append(part)
        self._prune(now)
        return batch

    def charge(self, batch: Sequence[W], seconds: float) -> dict[Hashable, float]:
        """The device took ``seconds`` for ``batch`` (entries of one key, from ``next_batch``): charge each entry's
        user and session its share by evaluations instead of the estimate, and learn the key's cost. Returns the
        seconds charged per session."""
        evaluations = sum(p.cost for p in batch)
        shares: dict[Hashable, float] = {}
        if not batch or evaluations <= 0:
            return shares
        for part in batch:
            share = seconds * part.cost / evaluations
            shares[part.session] = shares.get(part.session, 0.0) + share
            charged = self._on_device.pop(id(part), None)
            if charged is not None:
                for flow in (charged.user, charged.session):
                    flow.vtime += share - charged.estimate
                continue
            # Run again (a failed batch's entries are retried one by one): charged to the flows it has now.
            user = self._users.get(part.user)
            session = user.sessions.get(part.session) if user is not None else None
            for flow in (user, session):
                if flow is not None:
                    flow.vtime += share
        key = batch[0].key
        rate = seconds / evaluations
        known = self._per_evaluation.get(key)
        self._per_evaluation[key] = rate if known is None else known + ESTIMATE_WEIGHT * (rate - known)
        return shares

    def delivered(self, batch: Iterable[W], now: float) -> None:
        """The batch's sessions are expected back with their next step (for ``anticipation`` s at most), except
        those that took longer than that last time."""
        for part in batch:
            self._on_device.pop(id(part), None)  # never charged (its session was cancelled): the estimate stays
            user = self._users.get(part.user)
            session = user.sessions.get(part.session) if user is not None else None
            if session is None:
                continue
            if session.parts:  # more of its work is queued: in service anyway
                session.expected_until = 0.0
                continue
            session.delivered = now
            quick = session.think is None or session.think <= self.anticipation
            session.expected_until = now + self.anticipation if quick else 0.0
        self._prune(now)
