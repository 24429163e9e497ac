"""mpd-watch against hostile names and stalled uploads: real watcher process, real folders, real inotify."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.waiting import wait_until
from helpers.watching import DropFolder, log_of, stop
from multipassdedup.client.watch.journal import JobState

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
    assert watcher.wait(timeout=120) == 1  # --once: a job failed
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


def finished_jobs(drop: DropFolder, count: int, timeout: float = 30) -> list:
    def ready():
        jobs = drop.jobs() if drop.state.exists() else []
        return jobs if len(jobs) >= count and all(j.state in FINAL for j in jobs) else None
    return wait_until(ready, timeout, f"{count} finished jobs")


@pytest.mark.parametrize("how", ["inotify", "poll"])
def test_stalled_upload_still_open_is_not_taken(tmp_path: Path, how: str) -> None:
    """An upload that stops for many settle times while its writer holds the file open is waited for: with
    inotify until its close-after-write, and on a polled folder as long as /proc shows the writer."""
    drop = DropFolder(tmp_path)
    watcher = drop.start(*(["--poll", "--poll-interval", "0.2"] if how == "poll" else []), settle=0.5)
    first, rest = os.urandom(9936), os.urandom(16568 - 9936)
    try:
        with open(drop.inbox / "upload.mkv", "wb") as upload:
            upload.write(first)
            upload.flush()
            time.sleep(3)  # six settle times without a change, the writer still holding the file
            assert drop.jobs() == [] and (drop.inbox / "upload.mkv").stat().st_size == len(first)
            table = status_table(drop)
            assert "jobs: none" in table and "files not claimed yet: open for writing 1" in table
            assert any(line.split()[:4] == ["-", "open", "for", "writing"] and "upload.mkv" in line
                       for line in table.splitlines())
            upload.write(rest)
        jobs = finished_jobs(drop, 1)
    finally:
        assert stop(watcher) == 0
    assert [(j.name, j.state, j.size) for j in jobs] == [("upload.mkv", JobState.DONE, 16568)]
    assert (drop.outbox / "upload.mkv").read_bytes() == first + rest + b"|processed"
    assert "upload.mkv to be closed: " in log_of(watcher)


def test_status_shows_settling_files_while_the_watcher_runs(tmp_path: Path) -> None:
    """Not "jobs: none" alone: a dropped file the watcher waits for is listed as settling, until it stops."""
    drop = DropFolder(tmp_path)
    assert "watcher: not running" in (drop.start("--once").wait(timeout=30) == 0 and status_table(drop))
    drop.drop("episode01.mkv", b"x" * 1000)
    watcher = drop.start(settle=60)
    try:
        table = wait_until(lambda: t if "settling 1" in (t := status_table(drop)) else None, 30, "status: settling")
        assert "jobs: none" in table and "files not claimed yet: settling 1" in table
        row = next(line for line in table.splitlines() if "episode01.mkv" in line)
        assert row.split()[:2] == ["-", "settling"] and row.endswith(f"in {drop.inbox}")
        assert status_table(drop, "--json").count('"state": "settling"') == 1
    finally:
        assert stop(watcher) == 0
    assert "watcher: not running" in status_table(drop) and drop.jobs() == []


def test_mpd_watch_takes_mpd_clients_spellings_and_passes_them_on(tmp_path: Path) -> None:
    """``--hwaccel`` and ``-nf`` (mpd-client's spellings) work in mpd-watch too and reach the client."""
    drop = DropFolder(tmp_path)
    drop.drop("a.mkv", b"x" * 100)
    assert drop.start("--once", "--hwaccel", "-nf", "3").wait(timeout=60) == 0
    [run] = drop.client_runs()
    words = run.split()
    assert "-hw" in words and words[words.index("-np") + 1] == "3"


def test_a_bad_pass_through_client_option_is_refused_at_start(tmp_path: Path) -> None:
    """``-- --crff 22`` reaches mpd-client as is: the watcher asks mpd-client to check it at start and refuses in one
    line, exit 2, where it started and failed every file one by one (and --once said 0)."""
    drop = DropFolder(tmp_path)
    drop.drop("a.mkv", b"x" * 100)
    watcher = drop.start("--once", "--local", "--", "--crff", "22", client=None)
    assert watcher.wait(timeout=120) == 2
    log = log_of(watcher)
    assert log.strip() == (f"mpd-watch: error: {drop.inbox}: mpd-client refuses this folder's options: unrecognized "
                           "arguments: --crff 22 (see mpd-client --help)")
    assert not drop.state.exists() or drop.jobs() == []  # nothing claimed
    assert (drop.inbox / "a.mkv").exists()


def test_once_exits_non_zero_when_a_job_failed(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    drop.drop("good.mkv", b"x" * 100)
    watcher = drop.start("--once")
    assert watcher.wait(timeout=60) == 0  # all done: 0
    drop.drop("bad.mkv", b"CORRUPT" + b"x" * 100)
    drop.drop("fine.mkv", b"y" * 100)
    watcher = drop.start("--once")
    assert watcher.wait(timeout=60) == 1  # one failed (the run before does not count)
    assert "1 job(s) failed" in log_of(watcher)
    assert {j.name: j.state for j in drop.jobs()} == {"good.mkv": JobState.DONE, "bad.mkv": JobState.FAILED,
                                                      "fine.mkv": JobState.DONE}
