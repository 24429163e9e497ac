"""mpd-watch as users run it: a real process, real folders, real inotify, a stand-in client with the real contract."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.waiting import wait_until
from helpers.watching import DropFolder, log_of, stop
from multipassdedup.client.watch.journal import JobState

PROCESSED = b"|processed"


def final_jobs(drop: DropFolder, count: int, timeout: float = 30, state: Path | None = None) -> list:
    """Wait until the journal has `count` jobs, all in final states."""
    finals = {JobState.DONE, JobState.FAILED, JobState.DUPLICATE, JobState.QUARANTINED, JobState.ABANDONED}

    def ready():
        jobs = drop.jobs(state) if (state or drop.state).exists() else []
        return jobs if len(jobs) >= count and all(j.state in finals for j in jobs) else None
    return wait_until(ready, timeout, f"{count} finished jobs")


def run_until_final(drop: DropFolder, count: int, *args: str, env: dict[str, str] | None = None) -> list:
    """Start a watcher, wait for `count` jobs in final states, stop it (asserting a clean exit 0); the jobs."""
    watcher = drop.start(*args, env=env)
    try:
        return final_jobs(drop, count)
    finally:
        assert stop(watcher) == 0


def test_three_drops_at_once_valid_corrupt_and_slowly_written(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    watcher = drop.start(settle=1.0)
    try:
        slow_chunks = [os.urandom(20_000) for _ in range(12)]
        last_write = []

        def write_slowly() -> None:
            with open(drop.inbox / "slow.mkv", "wb") as handle:   # one handle, like a download
                for chunk in slow_chunks:
                    handle.write(chunk)
                    handle.flush()
                    time.sleep(0.3)
            last_write.append(time.time())

        writer = threading.Thread(target=write_slowly)
        writer.start()
        valid = os.urandom(50_000)
        drop.drop("valid.mkv", valid)
        drop.drop("corrupt.mkv", b"CORRUPT" + os.urandom(1000))
        writer.join()
        jobs = final_jobs(drop, 3)
    finally:
        assert stop(watcher) == 0
    by_name = {j.name: j for j in jobs}
    assert len(jobs) == 3 and set(by_name) == {"valid.mkv", "corrupt.mkv", "slow.mkv"}
    assert by_name["valid.mkv"].state is JobState.DONE and by_name["slow.mkv"].state is JobState.DONE
    assert drop.outputs() == ["slow.mkv", "valid.mkv"]            # exactly one output each, no leftovers
    assert (drop.outbox / "valid.mkv").read_bytes() == valid + PROCESSED
    assert (drop.outbox / "slow.mkv").read_bytes() == b"".join(slow_chunks) + PROCESSED
    slow = by_name["slow.mkv"]
    assert slow.size == 12 * 20_000 and slow.created_at > last_write[0]   # not claimed before it settled
    corrupt = by_name["corrupt.mkv"]
    assert corrupt.state is JobState.FAILED and corrupt.attempts == 1 and corrupt.exit_code == 65
    assert sorted(p.name for p in (drop.inbox / "failed").iterdir()) == ["corrupt.mkv", "corrupt.mkv.log"]
    report = (drop.inbox / "failed" / "corrupt.mkv.log").read_text()
    assert "bad input" in report and "invalid data found" in report
    assert sorted(p.name for p in (drop.inbox / "done").iterdir()) == ["slow.mkv", "valid.mkv"]
    assert list((drop.inbox / "processing").iterdir()) == []
    assert "summary:" in log_of(watcher)


def test_part_file_is_ignored_until_renamed(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    watcher = drop.start("--scan-interval", "0.2")
    try:
        part = drop.inbox / "episode.mkv.part"
        part.write_bytes(b"x" * 1000)
        (drop.inbox / ".hidden.mkv").write_bytes(b"y")
        (drop.inbox / ".syncthing.episode2.mkv.tmp").write_bytes(b"z")
        time.sleep(2.5)                                          # many settle times and scans
        assert drop.jobs() == [] and part.exists() and drop.client_runs() == []
        part.rename(drop.inbox / "episode.mkv")
        jobs = final_jobs(drop, 1)
    finally:
        assert stop(watcher) == 0
    assert [j.name for j in jobs] == ["episode.mkv"] and jobs[0].state is JobState.DONE
    assert drop.outputs() == ["episode.mkv"]
    assert (drop.inbox / ".hidden.mkv").exists() and (drop.inbox / ".syncthing.episode2.mkv.tmp").exists()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_kill_9_mid_job_then_restart_processes_exactly_once(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    data = os.urandom(200_000)
    drop.drop("movie.mkv", data)
    watcher = drop.start(env={"FAKE_CLIENT_SECONDS": "3"})
    wait_until(lambda: drop.client_runs(), 20, "the client to start")
    wait_until(lambda: any(p.name.startswith(".mpd-work-") and any(p.iterdir()) for p in drop.outbox.iterdir()),
               10, "partial output in the work dir")
    watcher.kill()                                                # SIGKILL: no cleanup at all
    watcher.wait()
    client_pid = int(drop.client_runs()[0].split()[0])
    wait_until(lambda: not _pid_alive(client_pid), 5, "the orphaned client to die with the watcher")
    assert drop.jobs()[0].state is JobState.RUNNING
    assert not (drop.outbox / "movie.mkv").exists()               # no partial output under the final name

    restarted = drop.start(env={"FAKE_CLIENT_SECONDS": "0.5"})
    try:
        jobs = final_jobs(drop, 1)
    finally:
        assert stop(restarted) == 0
    assert len(jobs) == 1 and jobs[0].state is JobState.DONE and jobs[0].attempts == 2
    assert drop.outputs() == ["movie.mkv"]                        # one output, work dirs gone
    assert (drop.outbox / "movie.mkv").read_bytes() == data + PROCESSED
    assert len(drop.client_runs()) == 2
    assert "resuming movie.mkv (was running)" in log_of(restarted)


def test_sigterm_mid_job_requeues_without_using_an_attempt(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    drop.drop("a.mkv", b"a" * 5000)
    watcher = drop.start(env={"FAKE_CLIENT_SECONDS": "5"})
    wait_until(lambda: drop.client_runs(), 20, "the client to start")
    wait_until(lambda: "progress: job 1 a.mkv: in " in log_of(watcher), 10, "a progress line in the log")
    assert stop(watcher) == 0
    job = drop.jobs()[0]
    assert job.state is JobState.QUEUED and job.attempts == 0
    assert drop.outputs() == []                                   # work dir removed, nothing published
    jobs = run_until_final(drop, 1)
    assert jobs[0].state is JobState.DONE and jobs[0].attempts == 1 and drop.outputs() == ["a.mkv"]


def test_file_dropped_while_the_watcher_is_down_is_processed_at_start(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    first = drop.start()
    time.sleep(1.0)
    assert stop(first) == 0
    drop.drop("late.mkv", b"late" * 100)
    second = drop.start("--once")
    assert second.wait(timeout=30) == 0
    assert [(j.name, j.state) for j in drop.jobs()] == [("late.mkv", JobState.DONE)]
    assert drop.outputs() == ["late.mkv"]


def test_two_watchers_on_one_folder_never_process_a_file_twice(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    state_a, state_b = tmp_path / "state-a", tmp_path / "state-b"
    a = drop.start(state=state_a, env={"FAKE_CLIENT_SECONDS": "0.2"})
    b = drop.start(state=state_b, env={"FAKE_CLIENT_SECONDS": "0.2"})
    try:
        time.sleep(1.0)
        contents = {f"ep{i:02d}.mkv": os.urandom(3000) for i in range(8)}
        for name, data in contents.items():
            (drop.inbox / name).write_bytes(data)                # all settle at the same moment

        def all_done():
            jobs = [j for s in (state_a, state_b) if s.exists() for j in drop.jobs(s)]
            done = [j for j in jobs if j.state is JobState.DONE]
            return jobs if len(done) == len(contents) else None
        jobs = wait_until(all_done, 40, "every file done by one of the watchers")
    finally:
        assert stop(a) == 0 and stop(b) == 0
    assert sorted(j.name for j in jobs) == sorted(contents)       # one job per file in both journals together
    assert drop.outputs() == sorted(contents)
    for name, data in contents.items():
        assert (drop.outbox / name).read_bytes() == data + PROCESSED
    runs = [line.split()[1].split("-", 1)[1] for line in drop.client_runs()]
    assert sorted(runs) == sorted(contents)                       # the client ran once per file


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    times = tmp_path / "times"
    for i in range(5):
        drop.drop(f"ep{i}.mkv", os.urandom(2000))
    jobs = run_until_final(drop, 5, "--concurrency", "2",
                           env={"FAKE_CLIENT_SECONDS": "1.0", "FAKE_CLIENT_TIMES": str(times)})
    assert all(j.state is JobState.DONE for j in jobs) and len(drop.outputs()) == 5
    spans = [tuple(map(float, line.split())) for line in times.read_text().splitlines()]
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 2                                                # two at once, never three


def test_second_watcher_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    first = drop.start()
    try:
        wait_until(lambda: (drop.state / "lock").exists(), 10, "the first watcher's lock")
        time.sleep(0.5)
        second = drop.start()
        assert second.wait(timeout=20) == 2
        assert "another mpd-watch" in log_of(second)
    finally:
        assert stop(first) == 0


def test_daemon_down_retries_without_using_attempts(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]                              # closed again: a dead port
    drop = DropFolder(tmp_path)
    drop.drop("a.mkv", b"a" * 1000)
    watcher = drop.start("--server", f"127.0.0.1:{port}", "--max-attempts", "2")

    def retried_often():
        jobs = drop.jobs() if drop.state.exists() else []
        return jobs and jobs[0].transient_failures >= 4
    wait_until(retried_often, 30, "several transient failures")
    assert stop(watcher) == 0
    job = drop.jobs()[0]
    assert job.state is JobState.WAITING and job.attempts == 0 and "daemon unavailable" in job.error
    assert len(drop.client_runs()) >= 4 and drop.outputs() == []
    assert len(list((drop.inbox / "processing").iterdir())) == 1  # still claimed, not failed
    assert not (drop.inbox / "failed").exists() or not list((drop.inbox / "failed").iterdir())

    with socket.socket() as daemon:                                # the daemon comes back
        daemon.bind(("127.0.0.1", port))
        daemon.listen()
        jobs = run_until_final(drop, 1, "--server", f"127.0.0.1:{port}", "--max-attempts", "2")
    assert jobs[0].state is JobState.DONE and jobs[0].attempts == 1 and drop.outputs() == ["a.mkv"]


def test_unknown_failures_use_up_attempts_then_fail(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    drop.drop("a.mkv", b"a" * 1000)
    jobs = run_until_final(drop, 1, "--max-attempts", "3", env={"FAKE_CLIENT_EXIT": "1"})
    assert jobs[0].state is JobState.FAILED and jobs[0].attempts == 3 and len(drop.client_runs()) == 3
    report = (drop.inbox / "failed" / "a.mkv.log").read_text()
    assert "gave up after 3 attempts" in report and "forced exit 1" in report
    assert drop.outputs() == []


def test_same_content_twice_is_processed_once_unless_asked(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    data = os.urandom(10_000)
    watcher = drop.start()
    try:
        drop.drop("first.mkv", data)
        final_jobs(drop, 1)
        drop.drop("again.mkv", data)                             # same content, new name
        jobs = final_jobs(drop, 2)
    finally:
        assert stop(watcher) == 0
    assert [(j.name, j.state) for j in jobs] == [("first.mkv", JobState.DONE), ("again.mkv", JobState.DUPLICATE)]
    assert drop.outputs() == ["first.mkv"] and len(drop.client_runs()) == 1
    assert "same content as job 1" in jobs[1].error
    assert sorted(p.name for p in (drop.inbox / "done").iterdir()) == ["again.mkv", "first.mkv"]

    watcher = drop.start("--reprocess-duplicates")
    try:
        drop.drop("third.mkv", data)
        jobs = final_jobs(drop, 3)
    finally:
        assert stop(watcher) == 0
    assert jobs[2].state is JobState.DONE and drop.outputs() == ["first.mkv", "third.mkv"]


def test_content_that_keeps_failing_is_quarantined(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    bad = b"CORRUPT" + os.urandom(500)
    watcher = drop.start("--quarantine-after", "2")
    try:
        for i in range(3):
            drop.drop("bad.mkv", bad)
            final_jobs(drop, i + 1)
        jobs = drop.jobs()
    finally:
        assert stop(watcher) == 0
    assert [j.state for j in jobs] == [JobState.FAILED, JobState.FAILED, JobState.QUARANTINED]
    assert len(drop.client_runs()) == 2                            # the third drop never ran
    failed = sorted(p.name for p in (drop.inbox / "failed").iterdir())
    assert failed == ["bad (2).mkv", "bad (2).mkv.log", "bad (3).mkv", "bad (3).mkv.log", "bad.mkv", "bad.mkv.log"]
    assert "quarantined" in (drop.inbox / "failed" / "bad (3).mkv.log").read_text()


def test_keep_leaves_the_source_in_place_and_never_redoes_it(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    source = drop.drop("kept.mkv", b"k" * 3000)
    watcher = drop.start("--after", "keep", "--scan-interval", "0.3")
    try:
        final_jobs(drop, 1)
        time.sleep(2.0)                                            # several scans see the kept source
        assert len(drop.jobs()) == 1 and len(drop.client_runs()) == 1
    finally:
        assert stop(watcher) == 0
    assert source.read_bytes() == b"k" * 3000 and drop.outputs() == ["kept.mkv"]
    forget = subprocess.run([sys.executable, "-m", "multipassdedup.client.watch.main", "forget", "1",
                             "--state-dir", str(drop.state)], capture_output=True, text=True)
    assert forget.returncode == 0 and "forgot job 1" in forget.stdout
    jobs = run_until_final(drop, 2, "--after", "delete")          # forgotten: processed again, then deleted
    assert jobs[1].state is JobState.DONE and jobs[1].disposition == "deleted"
    assert not source.exists() and drop.outputs() == ["kept (2).mkv", "kept.mkv"]


def test_dead_observer_is_fatal(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    elsewhere = tmp_path / "side"
    watcher = drop.start("--processing", str(elsewhere / "processing"), "--failed", str(elsewhere / "failed"),
                         "--done", str(elsewhere / "done"))
    wait_until(lambda: "mpd-watch ready" in log_of(watcher), 20, "the watcher to start")
    drop.inbox.rmdir()
    assert watcher.wait(timeout=20) == 1
    assert "CRITICAL stopping:" in log_of(watcher)


def test_polling_finds_files_without_inotify(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    watcher = drop.start("--poll", "--poll-interval", "0.2", "--scan-interval", "1000")
    try:
        wait_until(lambda: "mpd-watch ready" in log_of(watcher), 20, "the watcher to start")
        drop.drop("polled.mkv", b"p" * 100)
        jobs = final_jobs(drop, 1)
    finally:
        assert stop(watcher) == 0
    assert jobs[0].state is JobState.DONE and "by polling" in log_of(watcher)


def test_inotify_events_find_files_between_scans(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    watcher = drop.start("--scan-interval", "1000")
    try:
        wait_until(lambda: "mpd-watch ready" in log_of(watcher), 20, "the watcher to start")
        drop.drop("evented.mkv", b"e" * 100)
        jobs = final_jobs(drop, 1, timeout=15)
    finally:
        assert stop(watcher) == 0
    assert jobs[0].state is JobState.DONE and "with inotify" in log_of(watcher)


def test_status_shows_the_journal(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    drop.drop("good.mkv", b"g" * 100)
    drop.drop("bad.mkv", b"CORRUPT")
    assert drop.start("--once").wait(timeout=30) == 1  # a job failed
    base = [sys.executable, "-m", "multipassdedup.client.watch.main", "status", "--state-dir", str(drop.state)]
    table = subprocess.run(base, capture_output=True, text=True)
    assert table.returncode == 0
    assert "done 1" in table.stdout and "failed 1" in table.stdout
    assert "good.mkv" in table.stdout and "bad input" in table.stdout
    as_json = json.loads(subprocess.run(base + ["--json"], capture_output=True, text=True).stdout)
    assert as_json["counts"] == {"done": 1, "failed": 1}
    assert {j["name"]: j["state"] for j in as_json["jobs"]} == {"good.mkv": "done", "bad.mkv": "failed"}
    missing = subprocess.run(base[:-1] + [str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no journal" in missing.stderr


def test_ready_and_watchdog_reach_systemd(tmp_path: Path) -> None:
    drop = DropFolder(tmp_path)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(20)
        watcher = drop.start(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        try:
            messages = []
            while not any("WATCHDOG=1" in m for m in messages) or not any("READY=1" in m for m in messages):
                messages.append(sock.recv(4096).decode())
        finally:
            assert stop(watcher) == 0
    assert messages[0].startswith("READY=1") and "STATUS=" in messages[0]


def test_bad_command_lines_say_what_is_wrong(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "multipassdedup.client.watch.main"]
    no_out = subprocess.run(base + ["--in", str(tmp_path)], capture_output=True, text=True)
    assert no_out.returncode == 2 and "--out" in no_out.stderr
    missing_in = subprocess.run(base + ["--in", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                                        "--state-dir", str(tmp_path / "s")], capture_output=True, text=True)
    assert missing_in.returncode == 2 and "does not exist" in missing_in.stderr
    assert "Traceback" not in missing_in.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT])
def test_ctrl_c_stops_cleanly(tmp_path: Path, signum: int) -> None:
    drop = DropFolder(tmp_path)
    watcher = drop.start()
    wait_until(lambda: "mpd-watch ready" in log_of(watcher), 20, "the watcher to start")
    watcher.send_signal(signum)
    assert watcher.wait(timeout=20) == 0
