"""`mpd-watch status`: the journal as a table (or JSON) for people and scripts."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter

from ...escaping import escaped
from .journal import FINAL_STATES, Job, Journal
from .waiting import read_waiting


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _shorten(text: str | None, width: int) -> str:
    """A name or message for one cell: escaped (no raw newline or ESC reaches the terminal), cut to ``width``."""
    text = escaped(text or "")
    return text if len(text) <= width else text[: width - 1] + "…"


def status_jobs(journal: Journal, limit: int | None) -> list[Job]:
    """Every unfinished job, then the newest finished ones (up to `limit` of those; None for all)."""
    jobs = journal.recent()
    unfinished = [j for j in jobs if j.state not in FINAL_STATES]
    finished = [j for j in jobs if j.state in FINAL_STATES]
    return unfinished + (finished if limit is None else finished[:limit])


def render_table(journal: Journal, limit: int | None) -> str:
    """Counts per state, the files the running watcher waits for, then one line per file not claimed yet and per
    job: id, state, attempts, times, name, and where things went."""
    counts = journal.counts()
    lines = [f"journal: {escaped(str(journal.path))}",
             "jobs: " + (", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "none")]
    waiting = read_waiting(journal.path.parent)
    if waiting is None:
        lines.append("watcher: not running")
    else:
        states = Counter(f.state for f in waiting)
        lines.append("files not claimed yet: " + (", ".join(f"{s} {n}" for s, n in sorted(states.items())) or "none"))
    jobs = status_jobs(journal, limit)
    if jobs or waiting:
        lines.append(f"{'id':>5}  {'state':<16} {'att':>3} {'tmp':>3}  {'updated':<19}  {'name':<32}  detail")
    for file in waiting or []:
        lines.append(f"{'-':>5}  {file.state:<16} {'':>3} {'':>3}  {'':<19}  {_shorten(file.name, 32):<32}  "
                     f"in {_shorten(file.folder, 100)}")
    for job in jobs:
        if job.state.value == "done":
            detail = f"-> {job.output_path}"
        elif job.error:
            detail = job.error
        else:
            detail = job.disposition or ""
        lines.append(f"{job.id:>5}  {job.state.value:<16} {job.attempts:>3} {job.transient_failures:>3}  "
                     f"{_when(job.updated_at):<19}  {_shorten(job.name, 32):<32}  {_shorten(detail, 100)}")
    return "\n".join(lines)


def render_json(journal: Journal, limit: int | None) -> str:
    """The same jobs as JSON objects (all journal fields), plus the counts."""
    jobs = [{**dataclasses.asdict(j), "state": j.state.value} for j in status_jobs(journal, limit)]
    waiting = read_waiting(journal.path.parent)
    files = None if waiting is None else [dataclasses.asdict(f) for f in waiting]
    return json.dumps({"journal": str(journal.path), "counts": journal.counts(), "jobs": jobs,
                       "watcher_running": waiting is not None, "waiting": files or []}, indent=2)
