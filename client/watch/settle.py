"""Settle detection: a file is complete once size, mtime and inode stay the same for the settle time."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class FileIdentity:
    """What must not change while a file settles (and what the journal records)."""

    dev: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """The identity of a stat result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Watch:
    identity: FileIdentity
    since: float        # when this identity was first seen (or an event last said the file changed)
    last_check: float   # the most recent stat that saw this identity
    checks: int


class SettleTracker:
    """Tracks candidate files; one is settled when checks at least `settle_seconds` apart saw it unchanged."""

    def __init__(self, settle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_seconds = float(settle_seconds)
        self._clock = clock
        self._watches: dict[str, _Watch] = {}

    def __contains__(self, path: str) -> bool:
        return path in self._watches

    def __len__(self) -> int:
        return len(self._watches)

    def paths(self) -> list[str]:
        """Candidates in the order they were first seen."""
        return list(self._watches)

    def observe(self, path: str, identity: FileIdentity | None) -> None:
        """Record one stat of `path` (None: it is gone, so stop tracking it)."""
        if identity is None:
            self._watches.pop(path, None)
            return
        now = self._clock()
        watch = self._watches.get(path)
        if watch is None or watch.identity != identity:
            self._watches[path] = _Watch(identity, now, now, 1)
        else:
            watch.last_check = now
            watch.checks += 1

    def changed(self, path: str) -> None:
        """An event says the file changed: restart its settle clock even if a stat cannot tell yet."""
        watch = self._watches.get(path)
        if watch is not None:
            now = self._clock()
            watch.since = watch.last_check = now
            watch.checks = 1

    def forget(self, path: str) -> None:
        """Stop tracking `path` (claimed, or given up on)."""
        self._watches.pop(path, None)

    def is_settled(self, path: str) -> bool:
        """True once two checks at least the settle time apart have seen the same identity, with no event between."""
        watch = self._watches.get(path)
        if watch is None:
            return False
        return watch.checks >= 2 and watch.last_check - watch.since >= self.settle_seconds

    def settled(self) -> list[tuple[str, FileIdentity]]:
        """All settled candidates, oldest first."""
        return [(p, w.identity) for p, w in self._watches.items() if self.is_settled(p)]
