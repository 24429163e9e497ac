"""The persistent job journal (SQLite): every state change is committed before the watcher acts on it."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .settle import FileIdentity

JOURNAL_FILE = "journal.sqlite3"


class JobState(str, Enum):
    """Where a job is; the comments say what a restart does with it."""

    CLAIMING = "claiming"        # rename into processing/ may or may not have happened: look
    QUEUED = "queued"            # in processing/, not started: run
    RUNNING = "running"          # client was running: clean its work dir, run again from scratch
    WAITING = "waiting"          # between attempts (backoff): run
    PUBLISHING = "publishing"    # output complete in the work dir, being renamed into place: finish that
    DISPOSING = "disposing"      # source being moved/deleted; `outcome` is the final state: finish that
    DONE = "done"
    FAILED = "failed"
    DUPLICATE = "duplicate"      # same content already done with the same options: not processed again
    QUARANTINED = "quarantined"  # same content failed too often: set aside without running
    ABANDONED = "abandoned"      # the file vanished (taken by another watcher, or removed by hand)

    def __str__(self) -> str:
        return self.value


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.DUPLICATE, JobState.QUARANTINED,
                          JobState.ABANDONED})


@dataclass(frozen=True)
class Job:
    """One row of the journal."""

    id: int
    folder: str
    name: str
    source_path: str
    processing_path: str
    dev: int
    inode: int
    size: int
    mtime_ns: int
    fingerprint: str | None
    options_digest: str
    state: JobState
    outcome: str | None
    attempts: int
    transient_failures: int
    error: str | None
    exit_code: int | None
    work_dir: str | None
    output_path: str | None
    disposition: str | None
    pid: int | None
    pid_start: str | None
    forgotten: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def identity(self) -> FileIdentity:
        """The settled identity the file was claimed with."""
        return FileIdentity(self.dev, self.inode, self.size, self.mtime_ns)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    source_path TEXT NOT NULL,
    processing_path TEXT NOT NULL,
    dev INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    fingerprint TEXT,
    options_digest TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    transient_failures INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    exit_code INTEGER,
    work_dir TEXT,
    output_path TEXT,
    disposition TEXT,
    pid INTEGER,
    pid_start TEXT,
    forgotten INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_by_content ON jobs(fingerprint, options_digest);
CREATE INDEX IF NOT EXISTS jobs_by_inode ON jobs(dev, inode);
"""

_FIELDS = [f.name for f in dataclasses.fields(Job)]


def _row_to_job(row: sqlite3.Row) -> Job:
    values = dict(zip(_FIELDS, row))
    values["state"] = JobState(values["state"])
    return Job(**values)


class Journal:
    """Thread-safe access to the journal; each method is one committed transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Journal:
        """The journal kept in a watcher's state directory."""
        return cls(Path(state_dir) / JOURNAL_FILE)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _select(self, where: str, params: Iterable[Any] = ()) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_FIELDS)} FROM jobs {where}", tuple(params)).fetchall()
        return [_row_to_job(r) for r in rows]

    def get(self, job_id: int) -> Job:
        """The current row of a job."""
        jobs = self._select("WHERE id = ?", (job_id,))
        if not jobs:
            raise KeyError(f"no job {job_id} in {self.path}")
        return jobs[0]

    def begin_claim(self, folder: str, name: str, source: str, processing: str, identity: FileIdentity,
                    options_digest: str) -> Job:
        """Record the intent to claim a file (before the rename into processing/)."""
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO jobs (folder, name, source_path, processing_path, dev, inode, size, mtime_ns,"
                " options_digest, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (folder, name, source, processing, identity.dev, identity.inode, identity.size,
                 identity.mtime_ns, options_digest, JobState.CLAIMING.value, now, now))
            job_id = cursor.lastrowid
        return self.get(job_id)

    def update(self, job: Job | int, **fields: Any) -> Job:
        """Change some fields of a job and commit; returns the new row."""
        job_id = job if isinstance(job, int) else job.id
        unknown = set(fields) - set(_FIELDS)
        if unknown:
            raise KeyError(f"unknown journal fields: {sorted(unknown)}")
        fields["updated_at"] = time.time()
        if fields.get("state") in FINAL_STATES:
            fields.setdefault("finished_at", fields["updated_at"])
        values = [v.value if isinstance(v, Enum) else v for v in fields.values()]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values, job_id))
        return self.get(job_id)

    def delete(self, job: Job) -> None:
        """Remove a row whose claim never happened."""
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

    def unfinished(self) -> list[Job]:
        """Jobs not in a final state, oldest first."""
        finals = ",".join(f"'{s.value}'" for s in FINAL_STATES)
        return self._select(f"WHERE state NOT IN ({finals}) ORDER BY id")

    def done_with_same_content(self, fingerprint: str, options_digest: str, exclude_id: int) -> Job | None:
        """An earlier finished job on the same content and options (what makes a drop a duplicate)."""
        jobs = self._select("WHERE fingerprint = ? AND options_digest = ? AND state = ? AND forgotten = 0"
                            " AND id != ? ORDER BY id LIMIT 1",
                            (fingerprint, options_digest, JobState.DONE.value, exclude_id))
        return jobs[0] if jobs else None

    def failures_of_content(self, fingerprint: str, exclude_id: int) -> list[Job]:
        """Earlier jobs on this content that failed (what leads to quarantine)."""
        return self._select("WHERE fingerprint = ? AND state = ? AND forgotten = 0 AND id != ? ORDER BY id",
                            (fingerprint, JobState.FAILED.value, exclude_id))

    def is_kept_source(self, path: str, identity: FileIdentity) -> bool:
        """True when `path` is a source that a finished job put back in place (so a scan must skip it)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM jobs WHERE disposition = ? AND dev = ? AND inode = ? AND size = ? AND mtime_ns = ?"
                " AND state IN (?, ?) AND forgotten = 0 LIMIT 1",
                (path, identity.dev, identity.inode, identity.size, identity.mtime_ns,
                 JobState.DONE.value, JobState.DUPLICATE.value)).fetchone()
        return row is not None

    def recent(self, limit: int | None = None, include_final: bool = True) -> list[Job]:
        """Jobs newest first (all unfinished ones, then finished ones up to `limit` rows in all)."""
        where = "" if include_final else "WHERE state NOT IN ({})".format(
            ",".join(f"'{s.value}'" for s in FINAL_STATES))
        suffix = f" LIMIT {int(limit)}" if limit else ""
        return self._select(f"{where} ORDER BY id DESC{suffix}")

    def counts(self) -> dict[str, int]:
        """Number of jobs per state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def forget(self, selector: str) -> list[Job]:
        """Stop counting jobs (by id, or by fingerprint prefix) for duplicate and quarantine decisions."""
        if selector.isdigit():
            jobs = self._select("WHERE id = ?", (int(selector),))
        elif len(selector) >= 8:
            jobs = self._select("WHERE fingerprint LIKE ?", (selector.lower() + "%",))
        else:
            raise ValueError("give a job id or at least 8 hex digits of a fingerprint")
        for job in jobs:
            self.update(job, forgotten=1)
        return [self.get(j.id) for j in jobs]
