"""The batching scheduler with its device thread: merging, splitting, failure isolation, fairness as it comes out
of real threads (the policy alone, on a virtual clock: test_fair_queue.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch

from helpers.waiting import wait_until
from multipassdedup.core import ModelFrame, PairInterpolator, PairRequest
from multipassdedup.core.models.base import Interpolator, split_per_pair, split_requests
from multipassdedup.daemon.errors import SubmissionCancelledError
from multipassdedup.daemon.scheduler import BatchRecord, BatchScheduler, is_out_of_memory


class BlendInterpolator(Interpolator):
    """A small real torch model: linear blend (1-t)x + ty, with an optional per-call memory budget."""

    name = "blend"
    base_alignment = 32

    def __init__(self, budget: int | None = None) -> None:
        super().__init__(torch.device("cpu"))
        self.budget = budget

    def _infer_batch(self, requests: list[PairRequest], scale: float) -> list[list[torch.Tensor]]:
        evaluations = sum(len(r.ts) for r in requests)
        if self.budget is not None and evaluations > self.budget:
            raise torch.OutOfMemoryError(f"cannot fit {evaluations} evaluations (budget {self.budget})")
        xs = torch.cat([r.x.tensor.expand(len(r.ts), -1, -1, -1) for r in requests])
        ys = torch.cat([r.y.tensor.expand(len(r.ts), -1, -1, -1) for r in requests])
        t = torch.tensor([t for r in requests for t in r.ts]).view(-1, 1, 1, 1)
        return split_per_pair((xs * (1 - t) + ys * t).split(1, 0), requests)


def frame(value: float, h: int = 32, w: int = 32) -> ModelFrame:
    return ModelFrame(torch.full((1, 3, h, w), value))


def pair(a: float, b: float, ts: list[float], h: int = 32, w: int = 32) -> PairRequest:
    return PairRequest(frame(a, h, w), frame(b, h, w), ts)


class Recorder:
    """Collects the scheduler's batch records (the ``on_batch`` observer)."""

    def __init__(self) -> None:
        self.batches: list[BatchRecord] = []
        self.lock = threading.Lock()

    def __call__(self, record: BatchRecord) -> None:
        with self.lock:
            self.batches.append(record)


def test_same_shape_submissions_of_different_sessions_run_as_one_call() -> None:
    model, rec = BlendInterpolator(), Recorder()
    sched = BatchScheduler(max_batch=16, on_batch=rec)
    futures = [sched.submit(model, [pair(0.0, 1.0, [0.5]), pair(0.2, 0.4, [0.25, 0.75])], user=f"u{i}",
                            session=f"s{i}") for i in range(3)]
    sched.start()
    try:
        results = [f.result(timeout=10) for f in futures]
    finally:
        sched.close()
    assert len(rec.batches) == 1
    assert rec.batches[0].sessions == ("s0", "s1", "s2")
    assert rec.batches[0].evaluations == 9 and rec.batches[0].pairs == 6
    assert model.stats.batches == 1 and model.stats.model_calls == 9
    assert sched.stats.cross_session_batches == 1
    for outs in results:
        assert [len(o) for o in outs] == [1, 2]
        assert torch.allclose(outs[0][0], torch.full((1, 3, 32, 32), 0.5))
        assert torch.allclose(outs[1][0], torch.full((1, 3, 32, 32), 0.25))
        assert torch.allclose(outs[1][1], torch.full((1, 3, 32, 32), 0.35))


def test_different_shapes_or_scales_are_not_merged() -> None:
    model, rec = BlendInterpolator(), Recorder()
    sched = BatchScheduler(on_batch=rec)
    f1 = sched.submit(model, [pair(0, 1, [0.5], 32, 32)], user="a", session="a1")
    f2 = sched.submit(model, [pair(0, 1, [0.5], 32, 64)], user="b", session="b1")
    f3 = sched.submit(model, [pair(0, 1, [0.5], 32, 32)], scale=0.5, user="c", session="c1")
    sched.start()
    try:
        for f in (f1, f2, f3):
            f.result(timeout=10)
    finally:
        sched.close()
    assert len(rec.batches) == 3
    assert all(len(b.sessions) == 1 for b in rec.batches)


def test_a_submission_larger_than_a_batch_is_split_and_reassembled_in_order() -> None:
    model, rec = BlendInterpolator(), Recorder()
    sched = BatchScheduler(max_batch=3, on_batch=rec)
    reqs = [pair(0, 1, [0.1, 0.2, 0.3, 0.4, 0.5]), pair(0, 0.5, []), pair(0, 1, [0.9])]
    with sched:
        outs = sched.submit(model, reqs, user="u", session="s").result(timeout=10)
    assert [len(o) for o in outs] == [5, 0, 1]
    got = [float(o[0, 0, 0, 0]) for o in outs[0]] + [float(outs[2][0][0, 0, 0, 0])]
    assert got == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])
    assert [b.evaluations for b in rec.batches] == [3, 3]
    assert split_requests(reqs[:1], 2)[0][0].ts == [0.1, 0.2]


class DropsAPair(BlendInterpolator):
    """Returns one output list fewer than it was asked for."""

    def interpolate_batch(self, requests, scale: float = 1.0):
        return super().interpolate_batch(requests, scale)[:-1]


def test_a_model_returning_too_few_outputs_fails_that_submission_not_the_device_thread() -> None:
    with BatchScheduler() as sched:
        bad = sched.submit(DropsAPair(), [pair(0, 1, [0.5]), pair(0, 1, [0.5])], user="u", session="bad")
        with pytest.raises(ValueError, match="cannot be split"):
            bad.result(timeout=10)
        good = sched.submit(BlendInterpolator(), [pair(0, 1, [0.25])], user="u", session="good").result(timeout=10)
    assert float(good[0][0][0, 0, 0, 0]) == pytest.approx(0.25)


def test_outputs_are_grouped_back_per_pair_and_a_count_mismatch_is_refused() -> None:
    reqs = [pair(0, 1, [0.1, 0.2]), pair(0, 1, []), pair(0, 1, [0.3])]
    assert split_per_pair(["a", "b", "c"], reqs) == [["a", "b"], [], ["c"]]
    with pytest.raises(ValueError, match="2 results"):
        split_per_pair(["a", "b"], reqs)


def test_large_frames_get_smaller_batches() -> None:
    sched = BatchScheduler(max_batch=16, max_batch_pixels=4 * 64 * 64)
    assert sched.batch_limit((1, 3, 64, 64)) == 4
    assert sched.batch_limit((1, 3, 32, 32)) == 16
    assert sched.batch_limit((1, 3, 1024, 1024)) == 1


class SlowBlend(BlendInterpolator):
    """The blend with a fixed cost per call, like a device that is the bottleneck."""

    def _infer_batch(self, requests, scale):
        time.sleep(0.01)
        return super()._infer_batch(requests, scale)


def test_fairness_holds_for_sessions_that_wait_for_each_result() -> None:
    # The daemon's pattern: each session has one submission outstanding and resubmits when it is served.
    model, rec = SlowBlend(), Recorder()
    sched = BatchScheduler(max_batch=1, on_batch=rec).start()
    stop = threading.Event()

    def session(user: str, name: str, width: int) -> None:
        proxy = sched.proxy(model, user=user, session=name)
        while not stop.is_set():
            proxy.interpolate_batch([pair(0, 1, [0.5], 32, width)])

    threads = [threading.Thread(target=session, args=("alice", f"a{i}", 32)) for i in range(4)]
    threads.append(threading.Thread(target=session, args=("bob", "b", 64)))
    for t in threads:
        t.start()
    assert wait_until(lambda: len(rec.batches) >= 120, 60)
    stop.set()
    for t in threads:
        t.join(10)
    sched.close()
    served = rec.batches[20:120]
    bob = sum(b.seconds for b in served if b.users[0] == "bob") / sum(b.seconds for b in served)
    assert 0.4 <= bob <= 0.6  # of the device time; not the 1/5 of per-session round robin


class CpuLike(BlendInterpolator):
    """The blend at a cost proportional to the evaluations in a call, as on a CPU: batching saves nothing."""

    def _infer_batch(self, requests, scale):
        time.sleep(0.002 * sum(len(r.ts) for r in requests))
        return super()._infer_batch(requests, scale)


def closed_loop(sessions: list[tuple[str, str, float]], batches: int, **options) -> list[BatchRecord]:
    """Sessions (user, name, pause) that each submit one same-shape step, wait for it, pause, and submit again
    (the daemon's pattern), on a scheduler that may merge every session's step into one batch."""
    model, rec = CpuLike(), Recorder()
    sched = BatchScheduler(max_batch=16, on_batch=rec, **options).start()
    stop = threading.Event()

    def session(user: str, name: str, pause: float) -> None:
        proxy = sched.proxy(model, user=user, session=name)
        while not stop.is_set():
            proxy.interpolate_batch([pair(0, 1, [0.5])])
            time.sleep(pause)

    threads = [threading.Thread(target=session, args=args) for args in sessions]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(rec.batches) >= batches, 120)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        sched.close()
    return rec.batches[20:batches]  # past the start, while every session runs


def work_share(records: list[BatchRecord], user: str) -> float:
    """``user``'s share of the device time the records took (a batch's time split by its parts, one step each)."""
    mine = sum(b.seconds * b.users.count(user) / len(b.users) for b in records)
    return mine / sum(b.seconds for b in records)


def test_merged_batches_share_the_device_per_user_not_per_session() -> None:
    # Filling each batch with every pending step advanced every session one step per batch: alice's four
    # sessions got 4/5 of the device beside bob's one.
    records = closed_loop([("alice", f"a{i}", 0.001) for i in range(4)] + [("bob", "b", 0.001)], 150)
    assert 0.4 <= work_share(records, "bob") <= 0.6
    assert any(len(set(b.users)) == 2 for b in records)  # the users' steps still merge


def test_one_users_sessions_still_fill_batches_together() -> None:
    records = closed_loop([("alice", f"a{i}", 0.001) for i in range(4)], 100)
    assert sum(len(b.sessions) for b in records) / len(records) >= 3  # not one session per batch
    assert Counter(s for b in records for s in b.sessions).keys() == {f"a{i}" for i in range(4)}


def test_a_slow_session_is_not_waited_for_and_does_not_hold_others_back() -> None:
    # bob takes 0.2 s to come back (a client sending slowly), longer than the scheduler keeps his place.
    records = closed_loop([("alice", f"a{i}", 0.001) for i in range(4)] + [("bob", "b", 0.2)], 120,
                          anticipation=0.05)
    alice_batches = [b for b in records if "bob" not in b.users]
    assert sum(len(b.users) for b in alice_batches) / len(alice_batches) >= 3  # alice keeps batching her four
    assert 0 < work_share(records, "bob") < 0.2


def test_device_seconds_are_charged_to_the_running_sessions() -> None:
    model, rec = SlowBlend(), Recorder()
    sched = BatchScheduler(max_batch=4, on_batch=rec)
    futures = [sched.submit(model, [pair(0, 1, [0.5])], user="alice", session="a") for _ in range(3)]
    futures += [sched.submit(model, [pair(0, 1, [0.25, 0.75])], user="bob", session="b") for _ in range(3)]
    with sched:
        for f in futures:
            f.result(timeout=30)
        charged = sched.device_seconds()
        assert charged.keys() == {"a", "b"}
        assert sum(charged.values()) == pytest.approx(sched.stats_copy().busy_seconds)
        assert sum(charged.values()) == pytest.approx(sum(b.seconds for b in rec.batches))
        sched.end_session("a")
        assert sched.device_seconds().keys() == {"b"}  # an ended session is forgotten




def test_ending_a_session_fails_its_queued_work_and_spares_others() -> None:
    model = BlendInterpolator()
    sched = BatchScheduler()
    doomed = [sched.submit(model, [pair(0, 1, [0.5])], user="u", session="gone") for _ in range(3)]
    kept = sched.submit(model, [pair(0, 1, [0.5])], user="u", session="stays")
    assert sched.queue_depth == 4
    assert sched.end_session("gone", "client went away") == 3
    assert sched.queue_depth == 1
    for f in doomed:
        with pytest.raises(SubmissionCancelledError, match="client went away"):
            f.result(timeout=1)
    with sched:
        assert len(kept.result(timeout=10)[0]) == 1


def test_out_of_memory_in_a_merged_batch_fails_only_the_session_that_cannot_fit() -> None:
    model, rec = BlendInterpolator(budget=3), Recorder()
    sched = BatchScheduler(max_batch=16, on_batch=rec)
    small1 = sched.submit(model, [pair(0, 1, [0.5, 0.5])], user="a", session="s1")
    small2 = sched.submit(model, [pair(0, 1, [0.5])], user="b", session="s2")
    big = sched.submit(model, [pair(0, 1, [0.5] * 4)], user="c", session="s3")
    with sched:
        assert len(small1.result(timeout=10)[0]) == 2
        assert len(small2.result(timeout=10)[0]) == 1
        with pytest.raises(torch.OutOfMemoryError) as err:
            big.result(timeout=10)
    assert is_out_of_memory(err.value)
    assert rec.batches[0].error.startswith("OutOfMemoryError")  # all three merged, too big
    assert sched.stats.out_of_memory == 2  # the merged batch, then the big one alone


def test_proxy_runs_real_rife_through_the_scheduler_and_merges_sessions(rife) -> None:
    rng = np.random.default_rng(1)
    frames = [rife.to_tensor(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)) for _ in range(4)]
    reqs = [[PairRequest(ModelFrame(frames[0]), ModelFrame(frames[1]), [0.5])],
            [PairRequest(ModelFrame(frames[2]), ModelFrame(frames[3]), [0.25, 0.5])]]
    direct = [rife.interpolate_batch(r) for r in reqs]
    rec = Recorder()
    sched = BatchScheduler(batch_window=0.5, on_batch=rec).start()
    try:
        proxies = [sched.proxy(rife, user=f"u{i}", session=f"s{i}") for i in range(2)]
        assert proxies[0].alignment(1.0) == rife.alignment(1.0) and proxies[0].model is rife
        assert isinstance(proxies[0], PairInterpolator) and isinstance(rife, PairInterpolator)
        results: list = [None, None]
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, proxies[i].interpolate_batch(reqs[i])))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sched.close()
    assert len(rec.batches) == 1 and set(rec.batches[0].sessions) == {"s0", "s1"}
    assert proxies[1].stats.model_calls == 2 and proxies[0].stats.model_calls == 1
    for got, want in zip(results, direct):
        for g, w in zip(got[0], want[0]):
            assert (g - w).abs().max() < 0.01  # batch composition changes float rounding only
