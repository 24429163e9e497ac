"""The watcher process: recover the journal, watch folders, claim settled files, run jobs in bounded workers."""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from ...systemd_notify import SystemdNotifier
from ..errors import FolderLostError, WatchConfigError
from .config import WatchConfig
from .folder import FolderWatch
from .fs import filesystem_type, is_network_filesystem
from .jobs import JobRunner, backoff_seconds, last_lines
from .journal import FINAL_STATES, Job, JobState, Journal
from .observer import FolderObservers
from .waiting import WaitingFile, clear_waiting, write_waiting

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_JOBS_FAILED = 1  # with --once: a job of this run failed (or its content was quarantined)
GIVEN_UP = (JobState.FAILED.value, JobState.QUARANTINED.value)


class StateDirLock:
    """An exclusive lock on the state directory: two watchers sharing one journal would redo each other's jobs."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise WatchConfigError naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise WatchConfigError(f"another mpd-watch (pid {holder}) uses the state directory {self.path.parent};"
                              " give each watcher its own --state-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Drop the lock."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Watcher:
    """Runs until stopped (or, with `once`, until nothing is left); `run` returns the process exit code."""

    def __init__(self, config: WatchConfig, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self.stop = threading.Event()
        self.state_dir = Path(config.state_dir)
        self.logs_dir = self.state_dir / "logs"
        self._hints: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()  # (path, watchdog event type)
        self._notifier = SystemdNotifier()
        self._finished: Counter[str] = Counter()
        self._runner_errors = 0
        self._last_summary = ""
        self._last_waiting: list[WaitingFile] | None = None

    # -- setup and recovery -------------------------------------------------------------------------

    def _recover(self, journal: Journal, watches: dict[str, FolderWatch]) -> list[Job]:
        """Bring unfinished jobs from before a stop or crash back to a state a runner can continue."""
        resumable = []
        for job in journal.unfinished():
            watch = watches.get(job.folder)
            if watch is None:
                self.log.warning("job %d (%s) belongs to %s, which is not configured now; left as %s",
                                 job.id, job.name, job.folder, job.state.value)
                continue
            if job.state is JobState.CLAIMING:
                job = watch.recover_claim(job)
                if job is None or job.state in FINAL_STATES:
                    continue
            self.log.info("job %d: resuming %s (was %s)", job.id, job.name, job.state.value)
            resumable.append(job)
        return resumable

    # -- the loop -----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to stop (signal handlers call this)."""
        self.stop.set()

    def run(self) -> int:
        """Watch until stopped; EXIT_FATAL when event delivery or a folder is lost (so systemd restarts it); with
        ``once``, EXIT_JOBS_FAILED when a job of this run failed."""
        lock = StateDirLock(self.state_dir)
        lock.acquire()
        state_fs = filesystem_type(self.state_dir)
        if is_network_filesystem(state_fs):
            self.log.warning("state directory %s is on a network filesystem (%s): SQLite's journal is only safe"
                             " on a local disk; give this watcher a local --state-dir", self.state_dir, state_fs)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal.in_state_dir(self.state_dir)
        try:
            return self._run(journal)
        finally:
            journal.close()
            lock.release()

    def _run(self, journal: Journal) -> int:
        watches: dict[str, FolderWatch] = {}
        runners: dict[str, JobRunner] = {}
        for folder in self.config.folders:
            watch = FolderWatch(folder, journal, self.log)
            watch.prepare()
            watches[str(watch.in_dir)] = watch
            runners[str(watch.in_dir)] = JobRunner(journal, folder, self.logs_dir, self.stop, self.log)

        given_up_before = sum(journal.counts().get(state, 0) for state in GIVEN_UP)
        pending: list[tuple[float, Job]] = [(0.0, job) for job in self._recover(journal, watches)]
        observers = FolderObservers(list(self.config.folders), lambda path, kind: self._hints.put((path, kind)),
                                    self.log)
        observers.start()
        for watch in watches.values():
            watch.scan()
        executor = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="mpd-job")
        running: dict[Future[Job], Job] = {}
        tick = min(1.0, max(0.05, min(f.settle_seconds for f in self.config.folders) / 4))
        next_scan = time.monotonic() + self.config.scan_interval
        next_summary = time.monotonic() + self.config.summary_interval
        fatal: str | None = None
        self.log.info("mpd-watch ready: %d folder(s), %d job(s) resumed, up to %d at once, state in %s",
                      len(watches), len(pending), self.config.concurrency, self.state_dir)
        self._notifier.ready(self._summary_text(journal, running))
        try:
            while not self.stop.is_set():
                self._drain_hints(watches, tick)
                fatal = observers.dead_reason()
                if fatal:
                    break
                now = time.monotonic()
                try:
                    if now >= next_scan:
                        for watch in watches.values():
                            watch.scan()
                        next_scan = now + self.config.scan_interval
                    else:
                        for watch in watches.values():
                            watch.recheck()
                except FolderLostError as exc:
                    fatal = str(exc)
                    break
                self._reap(running, pending, runners)
                self._fill_slots(running, pending, watches, runners, executor)
                self._notifier.watchdog()
                self._publish_waiting(watches)
                if now >= next_summary:
                    self._log_summary(journal, running, pending, watches)
                    next_summary = now + self.config.summary_interval
                if self.config.once and not running and not pending and \
                        not any(w.pending_count() for w in watches.values()):
                    break
        finally:
            self._notifier.stopping()
            self.stop.set()
            if fatal:
                self.log.critical("stopping: %s", fatal)
            executor.shutdown(wait=True)
            self._reap(running, pending, runners)
            observers.stop()
            clear_waiting(self.state_dir)
            self._log_summary(journal, running, pending, watches, force=True)
        if fatal:
            return EXIT_FATAL
        given_up = sum(journal.counts().get(state, 0) for state in GIVEN_UP) - given_up_before
        if self.config.once and given_up > 0:
            self.log.error("%d job(s) failed (in the failed folders, with their logs)", given_up)
            return EXIT_JOBS_FAILED
        return EXIT_OK

    def _publish_waiting(self, watches: dict[str, FolderWatch]) -> None:
        """Write the files not yet claimed to the state directory for `mpd-watch status`, when the list changed."""
        files = [WaitingFile(folder, name, state)
                 for folder, watch in watches.items() for name, state in watch.waiting()]
        if files != self._last_waiting:
            try:
                write_waiting(self.state_dir, files)
            except OSError as exc:  # status shows less; the watcher goes on
                self.log.warning("cannot write the list of waiting files: %s", exc.strerror or exc)
            self._last_waiting = files

    def _drain_hints(self, watches: dict[str, FolderWatch], timeout: float) -> None:
        """Wait up to `timeout` for event hints and hand each to its folder."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                path, kind = self._hints.get(timeout=max(0.0, remaining)) if remaining > 0 else \
                    self._hints.get_nowait()
            except queue.Empty:
                return
            watch = watches.get(os.path.dirname(path))
            if watch is not None:
                watch.hint(path, kind)

    def _fill_slots(self, running: dict[Future[Job], Job], pending: list[tuple[float, Job]],
                    watches: dict[str, FolderWatch], runners: dict[str, JobRunner],
                    executor: ThreadPoolExecutor) -> None:
        """Start resumed jobs first, then claim settled files (oldest first) while slots are free."""
        now = time.monotonic()
        while len(running) < self.config.concurrency and not self.stop.is_set():
            due = next((item for item in pending if item[0] <= now), None)
            if due is not None:
                pending.remove(due)
                job = due[1]
            else:
                job = self._claim_next(watches)
                if job is None:
                    return
            running[executor.submit(runners[job.folder].run, job)] = job

    @staticmethod
    def _claim_next(watches: dict[str, FolderWatch]) -> Job | None:
        """Claim one settled file from any folder (round robin by folder order), or None."""
        for watch in watches.values():
            for path, identity in watch.ready():
                job = watch.claim(path, identity)
                if job is not None:
                    return job
        return None

    def _reap(self, running: dict[Future[Job], Job], pending: list[tuple[float, Job]],
              runners: dict[str, JobRunner]) -> None:
        """Collect finished workers; a runner that crashed leaves its job for a later retry."""
        for future in [f for f in running if f.done()]:
            job = running.pop(future)
            error = future.exception()
            if error is None:
                result = future.result()
                if result.state in FINAL_STATES:
                    self._finished[result.state.value] += 1
                elif not self.stop.is_set():
                    pending.append((time.monotonic(), result))
                continue
            self._runner_errors += 1
            folder = runners[job.folder].folder
            delay = backoff_seconds(self._runner_errors, folder.retry_base, folder.retry_max)
            self.log.error("job %d (%s): %s: %s; trying again in %.0f s", job.id, job.name,
                           type(error).__name__, error, delay, exc_info=error)
            try:
                current = runners[job.folder].journal.get(job.id)
            except KeyError:
                continue
            if current.state not in FINAL_STATES:
                pending.append((time.monotonic() + delay, current))

    def _summary_text(self, journal: Journal, running: dict[Future[Job], Job]) -> str:
        counts = journal.counts()
        finished = ", ".join(f"{k} {v}" for k, v in sorted(self._finished.items())) or "nothing yet"
        waiting = counts.get(JobState.WAITING.value, 0)
        return (f"{len(running)} running ({waiting} waiting to retry); finished since start: {finished}; "
                f"journal: {sum(counts.values())} jobs")

    def _log_summary(self, journal: Journal, running: dict[Future[Job], Job], pending: list[tuple[float, Job]],
                     watches: dict[str, FolderWatch], force: bool = False) -> None:
        candidates = sum(w.pending_count() for w in watches.values())
        text = f"{self._summary_text(journal, running)}; {candidates} file(s) settling or queued"
        if pending:
            text += f"; {len(pending)} resumable job(s) queued"
        self._notifier.status(text)
        if force or text != self._last_summary:
            self.log.info("summary: %s", text)
            self._last_summary = text
        for job in sorted(running.values(), key=lambda j: j.id):
            progress = last_lines(self.logs_dir / f"job-{job.id}.log", 1)
            if progress.startswith("in ") and "| out " in progress:
                self.log.info("progress: job %d %s: %s", job.id, job.name, progress.strip())
