"""The batching scheduler: one thread owns the device and merges same-shape model calls of many sessions.

Sessions submit lists of ``PairRequest``s (one pipeline step each) and block on a future. The
scheduler thread asks its policy (``FairQueue``, fair_queue.py: who is next, shared fairly by device
time) for the next batch, whose parts share a model, frame shape, dtype and scale, runs it as one
``interpolate_batch`` call, and tells the policy how long the device took. The statistics (batches,
waits, device seconds per session) are kept here.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..core.models.base import CallStats, Interpolator, PairRequest, split_counts, split_per_pair, split_requests
from .errors import SchedulerClosedError, SubmissionCancelledError
from .fair_queue import FairQueue

# Histogram bounds for the time a submission waits for the device, in seconds.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
# How long a session whose step was just delivered keeps its place in the fair order (seconds): the
# time its pipeline takes to prepare the next step (outputs sent, next frame read and converted).
DEFAULT_ANTICIPATION = 0.05
POLL_SECONDS = 0.1  # a safety net: the device thread re-plans at least this often while work waits


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device or host allocation failure (CUDA OOM, torch CPU allocator, MemoryError)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass(frozen=True)
class BatchRecord:
    """What one batched model invocation held; handed to the ``on_batch`` observer."""

    model: str
    shape: tuple[int, ...]
    sessions: tuple[Hashable, ...]  # one entry per submission part, in batch order
    users: tuple[Hashable, ...]
    pairs: int
    evaluations: int
    waits: tuple[float, ...]  # seconds each part waited before the batch started
    seconds: float
    error: str = ""


@dataclass
class SchedulerStats:
    """Counters for status pages and metrics."""

    batches: int = 0
    submissions: int = 0  # whole submissions received (one per pipeline step of one session)
    parts: int = 0  # queue entries served (a submission larger than a batch is split into parts)
    pairs: int = 0
    evaluations: int = 0
    cross_session_batches: int = 0
    max_batch_pairs: int = 0
    errors: int = 0
    out_of_memory: int = 0
    batch_evaluations: Counter = field(default_factory=Counter)  # evaluations per batch -> batches
    wait_counts: list[int] = field(default_factory=lambda: [0] * (len(WAIT_BUCKETS) + 1))
    wait_sum: float = 0.0
    busy_seconds: float = 0.0

    def copy(self) -> SchedulerStats:
        return replace(self, batch_evaluations=Counter(self.batch_evaluations), wait_counts=list(self.wait_counts))

    def snapshot(self) -> dict:
        d = dict(self.__dict__)
        d["batch_evaluations"] = dict(self.batch_evaluations)
        d["wait_counts"] = list(self.wait_counts)
        return d


class _Job:
    """One submission: its parts' results are gathered here and the caller's future set when all are in."""

    def __init__(self, n_parts: int) -> None:
        self.future: Future = Future()
        self.results: list[list[list[torch.Tensor]] | None] = [None] * n_parts
        self.remaining = n_parts
        self._lock = threading.Lock()  # the device thread delivers while a cancelling thread may fail

    def deliver(self, index: int, outputs: list[list[torch.Tensor]]) -> None:
        with self._lock:
            if self.future.done():
                return
            self.results[index] = outputs
            self.remaining -= 1
            if self.remaining:
                return
        self.future.set_result(self.results)

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.future.done():
                return
            self.future.set_exception(exc)


@dataclass
class _Part:
    """A queue entry: some pairs of one submission (all of them unless it exceeded a batch)."""

    job: _Job
    index: int
    model: Interpolator
    requests: list[PairRequest]
    scale: float
    key: tuple
    user: Hashable
    session: Hashable
    cost: int
    submitted: float


def _evaluations(requests: Sequence[PairRequest]) -> int:
    return sum(max(1, len(r.ts)) for r in requests)


class BatchScheduler:
    """Runs every model call of every session on one thread, batched and shared fairly by device time.

    ``max_batch`` bounds the model evaluations (output frames) per call and ``max_batch_pixels``
    bounds evaluations x frame pixels, so large frames get smaller batches. ``batch_window``
    (seconds) lets the thread wait that long for more same-shape work before it starts a batch
    that is not full yet; 0 starts at once (work still merges whenever the device was busy).
    ``anticipation`` (seconds) is how long a session just served keeps its place in the fair
    order (fair_queue.py); 0 turns that off (fair for sessions that always have work queued only).
    """

    def __init__(self, max_batch: int = 16, max_batch_pixels: int = 16 * 1920 * 1088,
                 batch_window: float = 0.0, on_batch: Callable[[BatchRecord], None] | None = None,
                 anticipation: float = DEFAULT_ANTICIPATION) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self.max_batch_pixels = max_batch_pixels
        self.batch_window = batch_window
        self.on_batch = on_batch
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._queue: FairQueue[_Part] = FairQueue(lambda key: self.batch_limit(key[1]), anticipation)
        self._device_seconds: dict[Hashable, float] = {}  # session -> device seconds charged (running sessions)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._batch_started: float | None = None

    @property
    def anticipation(self) -> float:
        return self._queue.anticipation

    # -- public API -------------------------------------------------------------------------

    def start(self) -> BatchScheduler:
        """Start the device thread (submissions made before this wait in the queue)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mpd-scheduler", daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float | None = 10.0) -> None:
        """Fail whatever is still queued and stop the device thread."""
        with self._cond:
            self._closed = True
            for part in self._queue.clear():
                part.job.fail(SchedulerClosedError("the inference scheduler has shut down"))
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> BatchScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats_copy(self) -> SchedulerStats:
        """A consistent copy of the counters (the device thread keeps updating ``stats``)."""
        with self._cond:
            return self.stats.copy()

    def device_seconds(self) -> dict[Hashable, float]:
        """Device seconds charged to each running session so far (what the fair share is measured in)."""
        with self._cond:
            return dict(self._device_seconds)

    @property
    def queue_depth(self) -> int:
        """Queue entries waiting for the device."""
        with self._cond:
            return self._queue.pending

    def batch_limit(self, shape: Sequence[int]) -> int:
        """Most evaluations one call may hold for frames of this (N, C, H, W) shape."""
        pixels = max(1, int(shape[-1]) * int(shape[-2]))
        return max(1, min(self.max_batch, self.max_batch_pixels // pixels))

    def submit(self, model: Interpolator, requests: Sequence[PairRequest], scale: float = 1.0, *,
               user: Hashable = "", session: Hashable = "") -> Future:
        """Queue one session's independent pairs; the future gives one list of output tensors per pair."""
        requests = list(requests)
        job_future: Future = Future()
        todo = [r for r in requests if r.ts]
        if not todo:
            job_future.set_result([[] for _ in requests])
            return job_future
        shape = tuple(todo[0].x.shape)
        key = (id(model), shape, todo[0].x.tensor.dtype, float(scale))
        chunks = split_requests(todo, self.batch_limit(shape))
        job = _Job(len(chunks))
        now = time.monotonic()
        parts = [_Part(job, i, model, chunk, float(scale), key, user, session, _evaluations(chunk), now)
                 for i, chunk in enumerate(chunks)]
        with self._cond:
            if self._closed:
                raise SchedulerClosedError("the inference scheduler has shut down")
            self.stats.submissions += 1
            self._device_seconds.setdefault(session, 0.0)
            self._queue.push(parts, now)
            self._cond.notify_all()
        return self._reassemble(job, requests)

    def end_session(self, session: Hashable, reason: str = "session ended") -> int:
        """Forget ``session``, failing its queued submissions; returns how many parts were dropped."""
        with self._cond:
            dropped = self._queue.end_session(session, time.monotonic())
            self._device_seconds.pop(session, None)
            self._cond.notify_all()  # the device thread may be waiting for this session to come back
        for part in dropped:
            part.job.fail(SubmissionCancelledError(reason))
        return len(dropped)

    def proxy(self, model: Interpolator, *, user: Hashable, session: Hashable) -> ScheduledInterpolator:
        """A stand-in for ``model`` whose inference goes through this scheduler as (user, session)."""
        return ScheduledInterpolator(self, model, user=user, session=session)

    # -- the device thread ------------------------------------------------------------------

    def _next_batch(self) -> list[_Part] | None:
        """Wait for work, then take the batch the policy gives, waiting for sessions expected back."""
        with self._cond:
            windowed = False
            while True:
                if self._closed:
                    return None
                if self._queue.pending == 0:
                    windowed = False
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if self.batch_window > 0 and not windowed:
                    windowed = True
                    deadline = now + self.batch_window
                    while not self._closed and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                    continue
                batch, wake = self._queue.next_batch(now)
                if batch:
                    return batch
                self._cond.wait(POLL_SECONDS if wake is None else max(0.0, wake - now))

    def _delivered(self, batch: list[_Part]) -> None:
        with self._cond:
            self._queue.delivered(batch, time.monotonic())
            self._cond.notify_all()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [p for p in batch if not p.job.future.done()]  # the others' sessions were cancelled
            self._delivered([p for p in batch if p.job.future.done()])
            if live:
                self._batch_started = time.monotonic()
                try:
                    self._execute(live, split_on_error=True)
                finally:
                    self._batch_started = None

    def stalled_for(self) -> float | None:
        """Seconds the running batch has taken so far (0 when idle); None when the device thread is not running."""
        if self._thread is None or not self._thread.is_alive():
            return None
        started = self._batch_started
        return 0.0 if started is None else time.monotonic() - started

    def _execute(self, batch: list[_Part], split_on_error: bool) -> None:
        started = time.monotonic()
        waits = tuple(started - p.submitted for p in batch)
        requests = [r for p in batch for r in p.requests]
        model, scale = batch[0].model, batch[0].scale
        error: BaseException | None = None
        try:
            per_part = split_counts(model.interpolate_batch(requests, scale), [len(p.requests) for p in batch])
        except Exception as exc:  # noqa: BLE001 - a failing batch must fail its sessions, not this thread
            error = exc
        seconds = time.monotonic() - started
        self._record(batch, requests, waits, seconds, error)
        if error is None:
            self._delivered(batch)  # before the results go out: their sessions may come back at once
            for p, part_outputs in zip(batch, per_part):
                p.job.deliver(p.index, part_outputs)
            return
        if is_out_of_memory(error) and model.device.type == "cuda":
            torch.cuda.empty_cache()
        if split_on_error and len(batch) > 1:
            # Run each part alone so that only the session whose work fails is failed.
            for p in batch:
                self._execute([p], split_on_error=False)
            return
        self._delivered(batch)
        for p in batch:
            p.job.fail(error)

    def _record(self, batch: list[_Part], requests: list[PairRequest], waits: tuple[float, ...],
                seconds: float, error: BaseException | None) -> None:
        """Charge the batch's device time to its sessions (the fair share) and count it."""
        evaluations = _evaluations(requests)
        sessions = tuple(p.session for p in batch)
        with self._cond:
            for session, share in self._queue.charge(batch, seconds).items():
                if session in self._device_seconds:
                    self._device_seconds[session] += share
            st = self.stats
            st.batches += 1
            st.parts += len(batch)
            st.pairs += len(requests)
            st.evaluations += evaluations
            st.busy_seconds += seconds
            st.cross_session_batches += len(set(sessions)) > 1
            st.max_batch_pairs = max(st.max_batch_pairs, len(requests))
            st.batch_evaluations[evaluations] += 1
            for w in waits:
                st.wait_counts[bisect.bisect_left(WAIT_BUCKETS, w)] += 1
                st.wait_sum += w
            if error is not None:
                st.errors += 1
                st.out_of_memory += is_out_of_memory(error)
        if self.on_batch is not None:
            self.on_batch(BatchRecord(
                model=getattr(batch[0].model, "name", ""), shape=tuple(batch[0].key[1]), sessions=sessions,
                users=tuple(p.user for p in batch), pairs=len(requests), evaluations=evaluations,
                waits=waits, seconds=seconds, error="" if error is None else f"{type(error).__name__}: {error}"))

    @staticmethod
    def _reassemble(job: _Job, requests: list[PairRequest]) -> Future:
        """A future giving one output list per original request, built from the parts' results."""
        result: Future = Future()

        def done(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                result.set_exception(exc)
                return
            # The parts hold the submission's (pair, t) outputs in order; a pair split by time spans parts.
            frames = [frame for part in f.result() for outputs in part for frame in outputs]
            try:
                result.set_result(split_per_pair(frames, requests))
            except ValueError as mismatch:  # a model that returned the wrong number of frames
                result.set_exception(mismatch)

        job.future.add_done_callback(done)
        return result


class ScheduledInterpolator:
    """A session's ``PairInterpolator``: the wrapped model prepares frames, inference runs on the scheduler thread.

    Facts about the model (name, device, dtype) are read from ``model`` itself.
    """

    def __init__(self, scheduler: BatchScheduler, model: Interpolator, *, user: Hashable,
                 session: Hashable) -> None:
        self.scheduler = scheduler
        self.model = model
        self.user = user
        self.session = session
        self.stats = CallStats()  # this session's share only

    @property
    def name(self) -> str:
        return self.model.name

    def alignment(self, scale: float = 1.0) -> int:
        return self.model.alignment(scale)

    def to_tensor(self, frame: np.ndarray) -> torch.Tensor:
        return self.model.to_tensor(frame)

    def held_frame_bytes(self, height: int, width: int, scale: float = 1.0, features: bool = True) -> int:
        return self.model.held_frame_bytes(height, width, scale, features)

    def interpolate_batch(self, requests: Sequence[PairRequest], scale: float = 1.0) -> list[list[torch.Tensor]]:
        """Submit to the shared scheduler and wait for this session's outputs."""
        todo = [r for r in requests if r.ts]
        if todo:
            self.stats.pairs += len(todo)
            self.stats.model_calls += sum(len(r.ts) for r in todo)
            self.stats.batches += 1
        return self.scheduler.submit(self.model, requests, scale, user=self.user, session=self.session).result()
