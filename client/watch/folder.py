"""One drop folder: find candidate files (scan + event hints), wait for them to settle, claim them."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from pathlib import Path

from ..errors import FolderLostError, WatchConfigError
from .config import FolderConfig
from .fs import fsync_path, link_no_replace, writers_of
from .journal import Job, JobState, Journal
from .names import is_temporary_name
from .observer import uses_polling
from .settle import FileIdentity, SettleTracker

CLAIM_RETRY_SECONDS = 60.0
WRITERS_RECHECK_SECONDS = 1.0  # how often /proc is searched again for the writers of a settled file
# A write seen by inotify without its close-after-write: wait for the close this long at least (a lost event must
# not hold a file forever), and only while /proc shows no writer either.
UNCLOSED_WAIT_MIN_SECONDS = 3600.0
UNCLOSED_WAIT_SETTLES = 30
WRITE_EVENTS = frozenset({"modified"})  # IN_MODIFY: a write(2) or truncate through an open file
CLOSE_EVENTS = frozenset({"closed"})  # IN_CLOSE_WRITE: a file opened for writing was closed




class FolderWatch:
    """Candidates of one input folder and the claim that moves a settled one into processing/."""

    def __init__(self, folder: FolderConfig, journal: Journal, log: logging.Logger) -> None:
        self.folder = folder
        self.journal = journal
        self.log = log
        self.in_dir = Path(folder.in_dir)
        self.tracker = SettleTracker(folder.settle_seconds)
        self._claim_blocked_until: dict[str, float] = {}
        self._reported_skips: set[str] = set()
        self.in_dev = 0
        self.sees_closes = False  # inotify reports close-after-write here (not on a polled folder)
        self._unclosed: dict[str, float] = {}  # path -> when a write was seen with no close-after-write since
        self._writers: dict[str, tuple[float, list[int]]] = {}  # path -> (when /proc was searched, writer pids)
        self.open_for_writing: dict[str, str] = {}  # settled, but still open for writing: path -> why we know

    def prepare(self) -> None:
        """Check the input folder, create the others, and insist processing/ shares the input's filesystem."""
        if not self.in_dir.is_dir():
            raise WatchConfigError(f"input folder {self.in_dir} does not exist (or is not a folder)")
        for directory in (self.folder.out_dir, self.folder.processing_dir, self.folder.failed_dir,
                          self.folder.done_dir):
            Path(directory).mkdir(parents=True, exist_ok=True)
        self.in_dev = os.stat(self.in_dir).st_dev
        self.sees_closes = not uses_polling(self.folder)[0]
        if os.stat(self.folder.processing_dir).st_dev != self.in_dev:
            raise WatchConfigError(f"{self.folder.processing_dir} must be on the same filesystem as {self.in_dir}"
                              " (claiming a file is a rename)")

    def owns(self, path: str) -> bool:
        """True when `path` is a direct child of this input folder."""
        return os.path.dirname(path) == str(self.in_dir)

    def _identity_if_candidate(self, path: str) -> FileIdentity | None:
        """The identity of `path` if it is a file this folder should take (eventually), else None."""
        name = os.path.basename(path)
        if is_temporary_name(name):
            return None
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISLNK(st.st_mode) and path not in self._reported_skips:
                self._reported_skips.add(path)
                self.log.warning("%s is a symbolic link; drop the file itself (links are not taken)", path)
            return None
        identity = FileIdentity.of(st)
        if self.journal.is_kept_source(path, identity):
            return None
        return identity

    def hint(self, path: str, kind: str = "") -> None:
        """An event of watchdog type `kind` mentioned `path`: (re)start tracking it and restart its settle clock.

        On an inotify folder a write ("modified") marks the file as open for writing until its
        close-after-write ("closed") arrives: a stalled upload is not taken however long it stays still.
        """
        if not self.owns(path):
            return
        if self.sees_closes and kind in WRITE_EVENTS:
            self._unclosed.setdefault(path, time.monotonic())
        elif kind in CLOSE_EVENTS:
            self._unclosed.pop(path, None)
        identity = self._identity_if_candidate(path)
        if identity is None:
            self._forget(path)
            return
        self.tracker.observe(path, identity)
        self.tracker.changed(path)

    def scan(self) -> int:
        """List the folder (the truth; events are only hints); returns the number of candidates.

        Raises FolderLostError when the folder is gone or another filesystem is mounted there now.
        """
        try:
            if os.stat(self.in_dir).st_dev != self.in_dev:
                raise FolderLostError(f"the filesystem of {self.in_dir} changed (unmounted?)")
        except FileNotFoundError:
            raise FolderLostError(f"input folder {self.in_dir} is gone") from None
        seen = set()
        with os.scandir(self.in_dir) as entries:
            for entry in entries:
                path = os.path.join(self.in_dir, entry.name)
                identity = self._identity_if_candidate(path)
                if identity is not None:
                    seen.add(path)
                    self.tracker.observe(path, identity)
        for path in self.tracker.paths():
            if path not in seen:
                self._forget(path)
        return len(self.tracker)

    def _forget(self, path: str) -> None:
        """Stop tracking `path` (gone, claimed or no longer a candidate) and what was known of its writers."""
        self.tracker.forget(path)
        self._unclosed.pop(path, None)
        self._writers.pop(path, None)
        self.open_for_writing.pop(path, None)

    def recheck(self) -> None:
        """Stat every candidate again (this is what lets the settle time pass)."""
        for path in self.tracker.paths():
            identity = self._identity_if_candidate(path)
            if identity is None:
                self._forget(path)
            else:
                self.tracker.observe(path, identity)

    def ready(self) -> list[tuple[str, FileIdentity]]:
        """Settled candidates that may be claimed now: not blocked, and not open for writing as far as we can tell."""
        now = time.monotonic()
        ready = []
        for path, identity in self.tracker.settled():
            if self._claim_blocked_until.get(path, 0.0) > now:
                continue
            why = self._still_open(path, now)
            if why is None:
                self.open_for_writing.pop(path, None)
                ready.append((path, identity))
            elif self.open_for_writing.get(path) != why:
                self.open_for_writing[path] = why
                self.log.info("waiting for %s to be closed: %s", path, why)
        return ready

    def _still_open(self, path: str, now: float) -> str | None:
        """Why a settled file is still being written (its writer holds it open), or None when nothing says so.

        /proc is searched at most every WRITERS_RECHECK_SECONDS per file. A write seen without its close is
        trusted for UNCLOSED_WAIT_* only while /proc shows no writer (an event can be lost)."""
        searched, pids = self._writers.get(path, (-WRITERS_RECHECK_SECONDS, []))
        if now - searched >= WRITERS_RECHECK_SECONDS:
            pids = writers_of(path)
            self._writers[path] = (now, pids)
        if pids:
            return f"open for writing by process {', '.join(map(str, pids))}"
        since = self._unclosed.get(path)
        if since is None:
            return None
        if now - since > max(UNCLOSED_WAIT_MIN_SECONDS, UNCLOSED_WAIT_SETTLES * self.folder.settle_seconds):
            self._unclosed.pop(path, None)
            self.log.warning("%s was written without a close-after-write for %.0f s and no writer is visible; "
                             "taking it", path, now - since)
            return None
        return "written, and not closed since (inotify saw no close-after-write)"

    def waiting(self) -> list[tuple[str, str]]:
        """(name, what it waits for) of every candidate: "settling", "open for writing" or "settled" (no free slot)."""
        files = []
        for path in self.tracker.paths():
            state = ("open for writing" if path in self.open_for_writing else
                     "settled" if self.tracker.is_settled(path) else "settling")
            files.append((os.path.basename(path), state))
        return files

    def pending_count(self) -> int:
        """Candidates still settling or waiting for a free slot."""
        return len(self.tracker)

    def claim(self, path: str, identity: FileIdentity) -> Job | None:
        """Rename a settled file into processing/ under a unique name; None if it changed or someone else won."""
        name = os.path.basename(path)
        processing = Path(self.folder.processing_dir) / f"{secrets.token_hex(4)}-{name}"
        current = self._identity_if_candidate(path)
        if current != identity:
            self.tracker.observe(path, current)
            return None
        job = self.journal.begin_claim(str(self.in_dir), name, path, str(processing), identity,
                                       self.folder.options_digest())
        try:
            os.rename(path, processing)
        except FileNotFoundError:
            if os.path.lexists(processing):
                # Our rename did happen (an NFS client retransmitted it after a lost reply and the server
                # answered the retry with ENOENT): the random name is this watcher's alone, so the file is ours.
                self.log.info("%s: the rename reported the file gone but it arrived as %s; claimed", path, processing)
            else:
                self._lost_claim(job, path)
                return None
        except OSError as exc:
            self.journal.delete(job)
            self._claim_blocked_until[path] = time.monotonic() + CLAIM_RETRY_SECONDS
            self.log.error("cannot claim %s: %s; trying again in %.0f s", path, exc.strerror, CLAIM_RETRY_SECONDS)
            return None
        return self._finish_claim(job, path, identity, processing)

    def _lost_claim(self, job: Job, path: str) -> None:
        """Another watcher renamed `path` first: drop the row of the claim that never happened."""
        self.journal.delete(job)
        self._forget(path)
        self.log.info("%s was taken by someone else before this watcher could claim it", path)

    def _finish_claim(self, job: Job, path: str, identity: FileIdentity, processing: Path) -> Job | None:
        """The file is in processing/ under this watcher's name: check it did not change, record the claim."""
        claimed = FileIdentity.of(os.lstat(processing))
        if claimed != identity and self._give_back(processing, path):
            self.journal.delete(job)
            self.log.warning("%s changed while being claimed; waiting for it to settle again", path)
            return None
        fsync_path(Path(self.folder.processing_dir))
        self._forget(path)
        self._claim_blocked_until.pop(path, None)
        self.log.info("claimed %s (%d bytes) as job %d", job.name, claimed.size, job.id)
        return self.journal.update(job, state=JobState.QUEUED, dev=claimed.dev, inode=claimed.inode,
                                   size=claimed.size, mtime_ns=claimed.mtime_ns)

    @staticmethod
    def _give_back(processing: Path, original: str) -> bool:
        """Undo a claim (the file was still changing); False if the original name is taken by now."""
        if not link_no_replace(processing, Path(original)):
            return False
        if processing.exists():
            processing.unlink()
        return True

    def recover_claim(self, job: Job) -> Job | None:
        """Settle a claim interrupted by a crash; returns the job if the file is in processing/."""
        if os.path.lexists(job.processing_path):
            return self.journal.update(job, state=JobState.QUEUED)
        if os.path.lexists(job.source_path):
            self.journal.delete(job)
            return None
        return self.journal.update(job, state=JobState.ABANDONED,
                                   error="claim interrupted and the file is gone (another watcher took it?)")
