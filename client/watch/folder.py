"""One drop folder: find candidate files (scan + event hints), wait for them to settle, claim them."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from pathlib import Path

from .config import ConfigError, FolderConfig
from .fs import fsync_path, link_no_replace
from .journal import Job, JobState, Journal
from .names import is_temporary_name
from .settle import FileIdentity, SettleTracker

CLAIM_RETRY_SECONDS = 60.0


class FolderLostError(OSError):
    """The input folder disappeared or was unmounted: the watcher must stop (and be restarted)."""


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

    def prepare(self) -> None:
        """Check the input folder, create the others, and insist processing/ shares the input's filesystem."""
        if not self.in_dir.is_dir():
            raise ConfigError(f"input folder {self.in_dir} does not exist (or is not a folder)")
        for directory in (self.folder.out_dir, self.folder.processing_dir, self.folder.failed_dir,
                          self.folder.done_dir):
            Path(directory).mkdir(parents=True, exist_ok=True)
        self.in_dev = os.stat(self.in_dir).st_dev
        if os.stat(self.folder.processing_dir).st_dev != self.in_dev:
            raise ConfigError(f"{self.folder.processing_dir} must be on the same filesystem as {self.in_dir}"
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

    def hint(self, path: str) -> None:
        """An event mentioned `path`: (re)start tracking it and restart its settle clock."""
        if not self.owns(path):
            return
        identity = self._identity_if_candidate(path)
        if identity is None:
            self.tracker.forget(path)
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
                self.tracker.forget(path)
        return len(self.tracker)

    def recheck(self) -> None:
        """Stat every candidate again (this is what lets the settle time pass)."""
        for path in self.tracker.paths():
            self.tracker.observe(path, self._identity_if_candidate(path))

    def ready(self) -> list[tuple[str, FileIdentity]]:
        """Settled candidates that may be claimed now."""
        now = time.monotonic()
        return [(p, i) for p, i in self.tracker.settled() if self._claim_blocked_until.get(p, 0.0) <= now]

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
            self.journal.delete(job)
            self.tracker.forget(path)
            self.log.info("%s was taken by someone else before this watcher could claim it", path)
            return None
        except OSError as exc:
            self.journal.delete(job)
            self._claim_blocked_until[path] = time.monotonic() + CLAIM_RETRY_SECONDS
            self.log.error("cannot claim %s: %s; trying again in %.0f s", path, exc.strerror, CLAIM_RETRY_SECONDS)
            return None
        claimed = FileIdentity.of(os.lstat(processing))
        if claimed != identity and self._give_back(processing, path):
            self.journal.delete(job)
            self.log.warning("%s changed while being claimed; waiting for it to settle again", path)
            return None
        fsync_path(Path(self.folder.processing_dir))
        self.tracker.forget(path)
        self._claim_blocked_until.pop(path, None)
        self.log.info("claimed %s (%d bytes) as job %d", name, claimed.size, job.id)
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
