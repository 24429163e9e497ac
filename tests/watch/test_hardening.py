"""mpd-watch against hostile names and stalled uploads: real watcher process, real folders, real inotify."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from multipassdedup.client.watch.journal import JobState

from .harness import DropFolder, log_of

FINAL = {JobState.DONE, JobState.FAILED, JobState.DUPLICATE, JobState.QUARANTINED, JobState.ABANDONED}


def status_table(drop: DropFolder, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "multipassdedup.client.watch.main", "status", "--state-dir",
                           str(drop.state), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_hostile_names_are_escaped_in_logs_status_and_reports(tmp_path: Path) -> None:
    """A name with a newline cannot forge a log line, one with an ESC cannot reach the terminal raw."""
    drop = DropFolder(tmp_path)
    forging = "ep01.mkv\n2026-01-01 00:00:00,000 INFO job 99: done all.mkv"
    colouring = "ep02\x1b[31m\x1b]0;pwned\x07.mkv"
    drop.drop(forging, b"not a video")  # the real mpd-client fails them: the names go into the log, the status,
    drop.drop(colouring, b"nor this")  # the client's own messages and failed/NAME.log
    watcher = drop.start("--once", "--local", client=None)
    assert watcher.wait(timeout=120) == 0
    jobs = drop.jobs()
    assert {j.name: j.state for j in jobs} == {forging: JobState.FAILED, colouring: JobState.FAILED}
    log = log_of(watcher)
    table = status_table(drop)
    reports = [(drop.inbox / "failed" / f"{name}.log").read_text() for name in (forging, colouring)]
    client_logs = [(drop.state / "logs" / f"job-{job.id}.log").read_text() for job in jobs]
    report = reports[0]
    for text in (log, table, *reports, *client_logs):
        assert "\x1b" not in text and "\x07" not in text
        assert not any(line.startswith("2026-01-01") for line in text.splitlines())  # no forged line
    assert "ep01.mkv\\n2026-01-01" in log and "ep02\\x1b[31m\\x1b]0;pwned\\x07.mkv" in log
    assert "'ep01.mkv\\n2026-01-01" in table and "'ep02\\x1b[31m" in table
    assert report.startswith("mpd-watch: 'ep01.mkv\\n2026-01-01 00:00:00,000 INFO job 99: done all.mkv")
