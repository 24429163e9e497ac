"""The scheduler's policy on its own (daemon/fair_queue.py): no threads, no torch, a virtual clock.

A simulated device runs the queue: each batch takes the device seconds its key costs per evaluation
(times a noise factor where a test says so), and the sessions come back with their next step a think
time after their last one was delivered, as the daemon's sessions do. Shares are measured in the
device seconds the queue was charged, so the figures are exact and the same on every run.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass

import pytest

from multipassdedup.daemon.fair_queue import FairQueue


@dataclass(eq=False)
class Entry:
    key: str
    cost: int
    user: str
    session: str


@dataclass
class Client:
    """A session that submits one step of ``cost`` evaluations of ``key`` at a time, ``think`` s after the last."""

    user: str
    session: str
    key: str
    cost: int = 1
    think: float = 0.0
    start: float = 0.0


class Device:
    """A FairQueue driven on a virtual clock by closed-loop clients."""

    def __init__(self, per_evaluation: dict[str, float], anticipation: float = 0.05, batch_limit: int = 16,
                 noise: float = 0.0, seed: int = 1) -> None:
        self.queue: FairQueue[Entry] = FairQueue(lambda key: batch_limit, anticipation)
        self.per_evaluation = per_evaluation
        self.noise = noise
        self.random = random.Random(seed)
        self.now = 0.0
        self.seconds: Counter = Counter()  # user -> device seconds charged
        self.evaluations: Counter = Counter()  # user -> evaluations computed
        self.by_session: Counter = Counter()  # session -> device seconds charged
        self.batches: list[list[Entry]] = []

    def run(self, clients: list[Client], until: float, measure_from: float = 0.0) -> None:
        """Serve the clients until the clock passes ``until``; counts only batches started after ``measure_from``."""
        ready = {c.session: c.start for c in clients}  # session -> when its next step is submitted
        by_name = {c.session: c for c in clients}
        while self.now < until:
            due = sorted((when, name) for name, when in ready.items() if when is not None and when <= self.now)
            for _when, name in due:
                c = by_name[name]
                self.queue.push([Entry(c.key, c.cost, c.user, c.session)], self.now)
                ready[name] = None
            batch, wake = self.queue.next_batch(self.now)
            if not batch:
                upcoming = [t for t in ready.values() if t is not None]
                times = upcoming + ([wake] if wake is not None else [])
                assert times, "nothing queued and nobody coming back"
                self.now = max(self.now, min(times))
                continue
            evaluations = sum(e.cost for e in batch)
            factor = 1.0 + self.noise * (2 * self.random.random() - 1)
            seconds = self.per_evaluation[batch[0].key] * evaluations * factor
            started = self.now
            self.now += seconds
            charged = self.queue.charge(batch, seconds)
            assert sum(charged.values()) == pytest.approx(seconds)
            self.queue.delivered(batch, self.now)
            if started >= measure_from:
                self.batches.append(batch)
                for e in batch:
                    self.seconds[e.user] += seconds * e.cost / evaluations
                    self.evaluations[e.user] += e.cost
                    self.by_session[e.session] += seconds * e.cost / evaluations
            for e in batch:
                ready[e.session] = self.now + by_name[e.session].think

    def share(self, user: str) -> float:
        return self.seconds[user] / sum(self.seconds.values())


def test_the_policy_needs_neither_threads_nor_torch() -> None:
    code = ("import sys, multipassdedup.daemon.fair_queue; "
            "print(sorted(m for m in ('torch', 'threading', 'grpc', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_four_sessions_of_one_user_get_what_one_session_of_another_gets() -> None:
    device = Device({"64x64": 0.01})
    clients = [Client("alice", f"a{i}", "64x64") for i in range(4)] + [Client("bob", "b", "64x64")]
    device.run(clients, until=20, measure_from=1)
    assert device.share("bob") == pytest.approx(0.5, abs=0.02)  # per-session sharing would give him 1/5
    alice = [device.by_session[f"a{i}"] for i in range(4)]
    assert max(alice) - min(alice) <= 0.05 * sum(alice) / 4  # her four split her half evenly
    assert any(len({e.user for e in b}) == 2 for b in device.batches)  # same-shape steps still merge


def test_frame_sizes_share_the_device_by_time_not_by_frames() -> None:
    # A 128x72 session beside a 512x288 one, which costs 16 times as much per frame: sharing by frames
    # left the small one a seventeenth of the device (33.6 fps alone, 3.1 fps beside the large one).
    device = Device({"128x72": 0.002, "512x288": 0.032})
    device.run([Client("small", "s", "128x72"), Client("large", "l", "512x288")], until=10, measure_from=1)
    assert device.share("small") == pytest.approx(0.5, abs=0.02)
    alone = Device({"128x72": 0.002})
    alone.run([Client("small", "s", "128x72")], until=10, measure_from=1)
    # Half the device is half its frames per second alone (by frames it got 1/17 of them).
    assert device.evaluations["small"] == pytest.approx(alone.evaluations["small"] / 2, rel=0.05)
    assert device.evaluations["small"] == pytest.approx(16 * device.evaluations["large"], rel=0.05)


@pytest.mark.parametrize("small_cost, large_cost", [(1, 6), (6, 1), (2, 5)], ids=["adaptive-vs-6-passes",
                                                                                  "6-passes-vs-1", "2-vs-5"])
def test_pass_counts_and_sizes_together_share_the_device_by_time(small_cost, large_cost) -> None:
    # Evaluations per step differ with the pass count (n_pass model calls per frame; adaptive about one).
    device = Device({"small": 0.003, "large": 0.02})
    device.run([Client("u1", "s", "small", cost=small_cost), Client("u2", "l", "large", cost=large_cost)],
               until=30, measure_from=1)
    assert device.share("u1") == pytest.approx(0.5, abs=0.03)


def test_shares_hold_when_every_batch_takes_a_different_time() -> None:
    # A loaded host: each batch takes between half and one and a half times its usual time. The queue charges
    # what was measured, so the shares stay halves in the seconds it accounts.
    device = Device({"small": 0.002, "large": 0.03}, noise=0.5, seed=7)
    clients = [Client("alice", f"a{i}", "small") for i in range(3)] + [Client("bob", "b", "large", cost=3)]
    device.run(clients, until=60, measure_from=1)
    assert device.share("bob") == pytest.approx(0.5, abs=0.03)


def test_a_user_arriving_late_is_served_at_once_but_earns_no_credit() -> None:
    device = Device({"k": 0.01}, batch_limit=1)
    device.run([Client("alice", "a", "k"), Client("bob", "b", "k", start=5.0)], until=5.2, measure_from=4.5)
    served = [b[0].user for b in device.batches]
    first_bob = served.index("bob")
    assert set(served[:first_bob]) == {"alice"}
    assert served[first_bob:first_bob + 20] == ["bob", "alice"] * 10  # he is served next, then they alternate


def serve(queue: FairQueue[Entry], now: float, seconds: float) -> list[str]:
    """Run the batch the queue gives at ``now`` for ``seconds`` of device time; the users it served."""
    batch, _ = queue.next_batch(now)
    queue.charge(batch, seconds)
    queue.delivered(batch, now + seconds)
    return [e.user for e in batch]


def test_a_session_expected_back_is_waited_for_and_a_slow_one_is_not() -> None:
    queue: FairQueue[Entry] = FairQueue(lambda key: 16, anticipation=0.05)
    queue.push([Entry("x", 1, "alice", "a")], 0.0)
    queue.push([Entry("y", 1, "bob", "b")], 0.0)
    assert serve(queue, 0.0, 1.0) == ["alice"]
    assert serve(queue, 1.0, 0.5) == ["bob"]
    queue.push([Entry("x", 1, "alice", "a")], 1.5)
    # bob has had less of the device and is expected back: the queue waits for him until 1.55, not for longer.
    assert queue.next_batch(1.5) == ([], pytest.approx(1.55))
    queue.push([Entry("y", 1, "bob", "b")], 1.52)
    assert serve(queue, 1.52, 0.01) == ["bob"]
    # bob took 0.02 s to come back; now he takes 0.2 s (a client that sends slowly): not waited for next time.
    queue.push([Entry("y", 1, "bob", "b")], 1.73)
    assert serve(queue, 1.73, 0.01) == ["bob"]
    fifth, wake = queue.next_batch(1.74)
    assert [e.user for e in fifth] == ["alice"] and wake is None


def test_a_batch_stops_where_fair_order_reaches_a_session_already_in_it() -> None:
    queue: FairQueue[Entry] = FairQueue(lambda key: 16, anticipation=0.0)
    for i in range(4):
        queue.push([Entry("k", 1, "alice", f"a{i}")], 0.0)
    queue.push([Entry("k", 1, "bob", "b")], 0.0)
    queue.push([Entry("k", 1, "bob", "b")], 0.0)  # bob's next step is queued too
    batch, _ = queue.next_batch(0.0)
    users = Counter(e.user for e in batch)
    # Alternating from alice (first in order): 3 of hers and bob's 2; next is bob, in the batch with nothing
    # more queued: the batch ends there.
    assert users == {"alice": 3, "bob": 2}  # not all four of alice's beside bob's


def test_a_batch_holds_one_key_within_its_limit() -> None:
    queue: FairQueue[Entry] = FairQueue(lambda key: {"small": 4, "large": 1}[key])
    for i in range(6):
        queue.push([Entry("small", 1, f"u{i}", f"s{i}")], 0.0)
    queue.push([Entry("large", 1, "v", "l")], 0.0)
    batch, _ = queue.next_batch(0.0)
    assert len(batch) == 4 and {e.key for e in batch} == {"small"}


def test_ending_a_session_returns_its_queued_entries_and_spares_others() -> None:
    queue: FairQueue[Entry] = FairQueue(lambda key: 1)
    mine = [Entry("k", 1, "alice", "a") for _ in range(3)]
    queue.push(mine, 0.0)
    queue.push([Entry("k", 1, "bob", "b")], 0.0)
    assert queue.end_session("a", 0.0) == mine
    assert queue.pending == 1
    batch, _ = queue.next_batch(0.0)
    assert [e.user for e in batch] == ["bob"]
    assert queue.clear() == [] and queue.pending == 0


def test_the_estimate_charged_while_a_batch_runs_is_replaced_by_the_measured_time() -> None:
    queue: FairQueue[Entry] = FairQueue(lambda key: 16)
    queue.push([Entry("k", 2, "alice", "a")], 0.0)
    batch, _ = queue.next_batch(0.0)
    assert queue.estimate(batch[0]) == 0.0  # nothing known of the key yet
    assert queue.charge(batch, 0.4) == {"a": pytest.approx(0.4)}
    queue.delivered(batch, 0.4)
    entry = Entry("k", 3, "alice", "a")
    assert queue.estimate(entry) == pytest.approx(0.6)  # 0.2 s per evaluation, learned
