"""Claiming and crash recovery, step by step: each journal state left by a crash is finished correctly."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers.watching import FAKE_CLIENT_COMMAND
from multipassdedup.client.errors import FolderLostError
from multipassdedup.client.watch.config import FolderConfig, build_folder
from multipassdedup.client.watch.folder import FolderWatch
from multipassdedup.client.watch.jobs import JobRunner
from multipassdedup.client.watch.journal import Job, JobState, Journal
from multipassdedup.client.watch.process import process_start_time
from multipassdedup.client.watch.settle import FileIdentity

LOG = logging.getLogger("test-watch")


@pytest.fixture
def setup(tmp_path: Path):
    folder = build_folder({"in": str(tmp_path / "in"), "out": str(tmp_path / "out"), "settle": 0,
                           "retry_base": 0.05, "retry_max": 0.1,
                           "client_command": shlex.split(FAKE_CLIENT_COMMAND)}, "test")
    (tmp_path / "in").mkdir()
    journal = Journal.in_state_dir(tmp_path / "state")
    watch = FolderWatch(folder, journal, LOG)
    watch.prepare()
    logs = tmp_path / "state" / "logs"
    logs.mkdir()
    runner = JobRunner(journal, folder, logs, threading.Event(), LOG)
    yield folder, journal, watch, runner
    journal.close()


def settle(watch: FolderWatch, path: Path) -> FileIdentity:
    watch.scan()
    watch.recheck()
    ready = dict(watch.ready())
    return ready[str(path)]


def test_claim_renames_into_processing(setup) -> None:
    folder, journal, watch, _ = setup
    source = folder.in_dir / "a.mkv"
    source.write_bytes(b"abc")
    job = watch.claim(str(source), settle(watch, source))
    assert job is not None and job.state is JobState.QUEUED
    assert not source.exists() and Path(job.processing_path).read_bytes() == b"abc"
    assert Path(job.processing_path).parent == folder.processing_dir
    assert Path(job.processing_path).name.endswith("-a.mkv")


def test_claim_lost_to_another_watcher_leaves_no_row(setup) -> None:
    folder, journal, watch, _ = setup
    source = folder.in_dir / "a.mkv"
    source.write_bytes(b"abc")
    identity = settle(watch, source)
    os.rename(source, folder.processing_dir / "other-watcher-a.mkv")     # someone else won the race
    assert watch.claim(str(source), identity) is None
    assert journal.recent() == [] and watch.pending_count() == 0


def test_a_rename_that_happened_but_reported_enoent_is_still_our_claim(setup, monkeypatch) -> None:
    """What an NFS client may report for a retransmitted rename: the file moved, yet the call says ENOENT."""
    folder, journal, watch, _ = setup
    source = folder.in_dir / "a.mkv"
    source.write_bytes(b"abc")
    identity = settle(watch, source)
    real_rename = os.rename

    def rename_then_lose_the_reply(src, dst):
        real_rename(src, dst)
        raise FileNotFoundError(2, "No such file or directory")
    monkeypatch.setattr(os, "rename", rename_then_lose_the_reply)
    job = watch.claim(str(source), identity)
    monkeypatch.undo()
    assert job is not None and job.state is JobState.QUEUED
    assert Path(job.processing_path).read_bytes() == b"abc" and [j.id for j in journal.recent()] == [job.id]


def test_file_changed_after_settling_is_not_claimed(setup) -> None:
    folder, journal, watch, _ = setup
    source = folder.in_dir / "a.mkv"
    source.write_bytes(b"abc")
    identity = settle(watch, source)
    with open(source, "ab") as handle:
        handle.write(b"more")
    assert watch.claim(str(source), identity) is None
    assert source.exists() and journal.recent() == [] and str(source) not in dict(watch.ready())


def _claiming_row(journal: Journal, folder: FolderConfig, name: str) -> Job:
    source = folder.in_dir / name
    return journal.begin_claim(str(folder.in_dir), name, str(source), str(folder.processing_dir / f"x-{name}"),
                               FileIdentity(0, 0, 3, 0), folder.options_digest())


def test_interrupted_claims_are_settled(setup) -> None:
    folder, journal, watch, _ = setup
    renamed = _claiming_row(journal, folder, "renamed.mkv")
    Path(renamed.processing_path).write_bytes(b"abc")                    # the rename had happened
    not_renamed = _claiming_row(journal, folder, "still-there.mkv")
    Path(not_renamed.source_path).write_bytes(b"abc")                    # crash before the rename
    gone = _claiming_row(journal, folder, "gone.mkv")
    assert watch.recover_claim(renamed).state is JobState.QUEUED
    assert watch.recover_claim(not_renamed) is None
    assert watch.recover_claim(gone).state is JobState.ABANDONED
    assert [j.id for j in journal.recent()] == [gone.id, renamed.id]


def _queued(journal: Journal, watch: FolderWatch, folder: FolderConfig, name: str, data: bytes) -> Job:
    source = folder.in_dir / name
    source.write_bytes(data)
    return watch.claim(str(source), settle(watch, source))


def test_crash_while_running_reruns_from_scratch(setup) -> None:
    folder, journal, watch, runner = setup
    job = _queued(journal, watch, folder, "a.mkv", b"data")
    stale = folder.out_dir / ".mpd-work-1-dead"
    stale.mkdir()
    (stale / "a.mkv").write_bytes(b"half")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # a live process that reuses the recorded pid must not be killed (start time differs)
        job = journal.update(job, state=JobState.RUNNING, attempts=1, work_dir=str(stale), pid=bystander.pid,
                             pid_start="1")
        done = runner.run(job)
        assert bystander.poll() is None and process_start_time(bystander.pid) is not None
    finally:
        bystander.kill()
        bystander.wait()
    assert done.state is JobState.DONE and done.attempts == 2
    assert not stale.exists() and sorted(p.name for p in folder.out_dir.iterdir()) == ["a.mkv"]
    assert (folder.out_dir / "a.mkv").read_bytes() == b"data|processed"


def test_crash_while_publishing_is_finished_without_a_second_output(setup) -> None:
    folder, journal, watch, runner = setup
    for name, already_linked in (("a.mkv", False), ("b.mkv", True)):
        job = _queued(journal, watch, folder, name, b"data")
        work = folder.out_dir / f".mpd-work-{job.id}-abcd"
        work.mkdir()
        (work / name).write_bytes(b"result")
        final = folder.out_dir / name
        if already_linked:
            os.link(work / name, final)                                   # crash after the link
        job = journal.update(job, state=JobState.PUBLISHING, work_dir=str(work), output_path=str(final),
                             fingerprint="f" * 64, attempts=1)
        done = runner.run(job)
        assert done.state is JobState.DONE and done.output_path == str(final)
        assert final.read_bytes() == b"result" and not work.exists()
    assert sorted(p.name for p in folder.out_dir.iterdir()) == ["a.mkv", "b.mkv"]
    assert sorted(p.name for p in folder.done_dir.iterdir()) == ["a.mkv", "b.mkv"]


def test_publishing_never_replaces_an_existing_output(setup) -> None:
    folder, journal, watch, runner = setup
    (folder.out_dir / "a.mkv").write_bytes(b"someone else's")
    job = _queued(journal, watch, folder, "a.mkv", b"data")
    done = runner.run(job)
    assert done.state is JobState.DONE and done.output_path == str(folder.out_dir / "a (2).mkv")
    assert (folder.out_dir / "a.mkv").read_bytes() == b"someone else's"


def test_crash_while_disposing_finishes_the_move(setup) -> None:
    folder, journal, watch, runner = setup
    job = _queued(journal, watch, folder, "a.mkv", b"data")
    target = folder.done_dir / "a.mkv"
    os.link(job.processing_path, target)                                  # crash between link and unlink
    job = journal.update(job, state=JobState.DISPOSING, outcome="done", disposition=str(target))
    done = runner.run(job)
    assert done.state is JobState.DONE and done.disposition == str(target)
    assert not Path(job.processing_path).exists() and target.read_bytes() == b"data"
    assert sorted(p.name for p in folder.done_dir.iterdir()) == ["a.mkv"]


def test_crash_while_failing_still_writes_the_log(setup) -> None:
    folder, journal, watch, runner = setup
    job = _queued(journal, watch, folder, "bad.mkv", b"CORRUPT")
    target = folder.failed_dir / "bad.mkv"
    os.rename(job.processing_path, target)                                # moved, but no log yet
    job = journal.update(job, state=JobState.DISPOSING, outcome="failed", disposition=str(target),
                         error="bad input (exit 65)")
    failed = runner.run(job)
    assert failed.state is JobState.FAILED and failed.disposition == str(target)
    assert "bad input (exit 65)" in (folder.failed_dir / "bad.mkv.log").read_text()


def test_source_removed_from_processing_is_abandoned(setup) -> None:
    folder, journal, watch, runner = setup
    job = _queued(journal, watch, folder, "a.mkv", b"data")
    os.unlink(job.processing_path)
    assert runner.run(job).state is JobState.ABANDONED


def test_a_client_that_cannot_start_is_retried_without_using_attempts(setup, tmp_path: Path) -> None:
    folder, journal, watch, _ = setup
    broken = dataclasses.replace(folder, client_command=(str(tmp_path / "no-such-client"),))
    stop = threading.Event()
    runner = JobRunner(journal, broken, tmp_path / "state" / "logs", stop, LOG)
    job = _queued(journal, watch, folder, "a.mkv", b"data")
    threading.Timer(0.5, stop.set).start()
    waiting = runner.run(job)
    assert waiting.state is JobState.WAITING and waiting.attempts == 0 and waiting.transient_failures >= 2
    assert "cannot start the job" in waiting.error and "no-such-client" in waiting.error
    assert Path(waiting.processing_path).exists() and sorted(folder.out_dir.iterdir()) == []


def test_unmounted_processing_folder_is_waited_for_not_abandoned(setup, tmp_path: Path) -> None:
    folder, journal, watch, runner = setup
    job = _queued(journal, watch, folder, "a.mkv", b"data")
    parked = tmp_path / "parked"
    os.rename(folder.processing_dir, parked)                   # as if its filesystem went away
    threading.Timer(0.5, runner.stop.set).start()
    waiting = runner.run(job)
    assert waiting.state is JobState.WAITING and waiting.attempts == 0 and "unavailable" in waiting.error
    assert (parked / Path(job.processing_path).name).exists()


def test_scan_notices_a_lost_input_folder(setup, tmp_path: Path) -> None:
    folder, journal, watch, _ = setup
    watch.scan()
    os.rename(folder.in_dir, tmp_path / "moved-away")
    with pytest.raises(FolderLostError, match="is gone"):
        watch.scan()
