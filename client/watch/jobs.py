"""Drive one claimed job to a final state: run the client, retry, publish the output, dispose of the source.

Every step first commits the new state to the journal, then acts, and each step can be redone after a crash
(see JobState for what a restart does in each state).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shlex
import shutil
import threading
import time
from pathlib import Path

from ...escaping import escaped
from ...units import format_bytes
from ..errors import ExitCode
from .config import FolderConfig
from .fingerprint import content_fingerprint
from .fs import free_name, fsync_path, link_no_replace, move_to_free_name
from .journal import FINAL_STATES, Job, JobState, Journal
from .outcome import ClientOutcome, OutcomeKind, classify_exit
from .process import ClientProcess, kill_leftover

LOG_TAIL_LINES = 60
WORK_DIR_PREFIX = ".mpd-work-"


def backoff_seconds(failures: int, base: float, cap: float) -> float:
    """Exponential backoff (base, 2*base, 4*base, ... up to cap) with +-10 % jitter."""
    delay = min(cap, base * (2 ** max(0, failures - 1)))
    return delay * random.uniform(0.9, 1.1)


def command_line(argv: list[str]) -> str:
    """A command for a log: shell-quoted arguments, and any with a newline or ESC (a dropped file's name) escaped."""
    return " ".join(escaped(arg) if not arg.isprintable() else shlex.quote(arg) for arg in argv)


def last_lines(path: Path, lines: int, max_bytes: int = 1 << 16) -> str:
    """The last `lines` lines of a log file (reading at most its last `max_bytes`)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(no client output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no client output)"


class JobRunner:
    """Runs jobs of one folder; safe to use from several worker threads at once."""

    def __init__(self, journal: Journal, folder: FolderConfig, logs_dir: Path, stop: threading.Event,
                 log: logging.Logger) -> None:
        self.journal = journal
        self.folder = folder
        self.logs_dir = logs_dir
        self.stop = stop
        self.log = log

    # -- the state machine ------------------------------------------------------------------------

    def run(self, job: Job) -> Job:
        """Advance `job` until it is final, or until the watcher stops (then it is left resumable)."""
        steps = {
            JobState.QUEUED: self._attempt,
            JobState.WAITING: self._attempt,
            JobState.RUNNING: self._recover_running,
            JobState.PUBLISHING: self._publish,
            JobState.DISPOSING: self._dispose,
        }
        while job.state not in FINAL_STATES:
            if self.stop.is_set() and job.state in (JobState.QUEUED, JobState.WAITING):
                return job
            step = steps.get(job.state)
            if step is None:
                raise RuntimeError(f"job {job.id} is in state {job.state}, which a runner cannot advance")
            job = step(job)
        return job

    def _recover_running(self, job: Job) -> Job:
        """A job that was running when the watcher died: kill a leftover client, drop its work, run again."""
        if kill_leftover(job.pid, job.pid_start):
            self.log.warning("job %d: killed client pid %d left over from before the restart", job.id, job.pid)
        self._remove_work_dir(job)
        return self.journal.update(job, state=JobState.WAITING, work_dir=None, pid=None, pid_start=None,
                                   error="interrupted: the watcher stopped while the client ran")

    def _attempt(self, job: Job) -> Job:
        """One client run (after the duplicate and quarantine checks), then the next state."""
        source = Path(job.processing_path)
        if not source.exists():
            if not self._processing_dir_mounted(job):
                outcome = ClientOutcome(OutcomeKind.TRANSIENT, int(ExitCode.OUTPUT_ERROR),
                                        f"{source.parent} is unavailable (filesystem unmounted?)", loud=True)
                return self._after_failure(self.journal.update(job, attempts=job.attempts + 1), outcome, 0.0, None)
            self.log.error("job %d: %s vanished from %s", job.id, job.name, source.parent)
            return self.journal.update(job, state=JobState.ABANDONED, error=f"source vanished from {source}")
        if job.fingerprint is None:
            fingerprint = content_fingerprint(source)
            decided = self._check_history(job, fingerprint)
            if decided is not None:
                return decided
            job = self.journal.update(job, fingerprint=fingerprint)
        if job.attempts >= self.folder.max_attempts:
            return self._fail(job, f"gave up after {job.attempts} attempts: {job.error or 'interrupted'}")

        work_dir = Path(self.folder.out_dir) / f"{WORK_DIR_PREFIX}{job.id}-{secrets.token_hex(4)}"
        job = self.journal.update(job, state=JobState.RUNNING, attempts=job.attempts + 1, work_dir=str(work_dir),
                                  started_at=time.time(), pid=None, pid_start=None, exit_code=None)
        output = work_dir / self._output_name(job)
        client_log = self.logs_dir / f"job-{job.id}.log"
        started = time.monotonic()
        try:
            work_dir.mkdir(parents=True)
            with open(client_log, "a") as log_file:
                log_file.write(f"=== attempt {job.attempts} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                               f"{command_line(self.folder.client_argv(source, output))}\n")
            client = ClientProcess(self.folder.client_argv(source, output), client_log)
            pid, pid_start = client.start()
        except OSError as exc:  # not the file's fault: unwritable output folder, disk full, no client
            self._remove_work_dir(job)
            what = f"cannot start the job: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            outcome = ClientOutcome(OutcomeKind.TRANSIENT, int(ExitCode.OUTPUT_ERROR), what, loud=True)
            return self._after_failure(job, outcome, 0.0, None)
        self.log.info("job %d: start %s (attempt %d/%d, %s)", job.id, job.name, job.attempts,
                      self.folder.max_attempts, format_bytes(job.size))
        job = self.journal.update(job, pid=pid, pid_start=pid_start)
        code = client.wait(self.stop)
        elapsed = time.monotonic() - started
        if code is None or (code != 0 and self.stop.is_set()):  # stopped, or the client got the stop signal too
            self._remove_work_dir(job)
            self.log.info("job %d: interrupted by shutdown after %.1f s; it will run again", job.id, elapsed)
            return self.journal.update(job, state=JobState.QUEUED, attempts=job.attempts - 1, work_dir=None,
                                       pid=None, pid_start=None, error="interrupted by shutdown")
        outcome = classify_exit(code)
        if outcome.kind is OutcomeKind.SUCCESS:
            if output.is_file() and output.stat().st_size > 0:
                fsync_path(output)
                self.log.info("job %d: client finished in %.1f s", job.id, elapsed)
                final = free_name(Path(self.folder.out_dir), output.name)
                return self.journal.update(job, state=JobState.PUBLISHING, output_path=str(final), exit_code=code,
                                           pid=None, pid_start=None, error=None)
            outcome = ClientOutcome(OutcomeKind.ATTEMPT, code, "client exited 0 but wrote no output")
        self._remove_work_dir(job)
        return self._after_failure(job, outcome, elapsed, client_log)

    def _after_failure(self, job: Job, outcome: ClientOutcome, elapsed: float, client_log: Path | None) -> Job:
        """Decide between failed/, a free retry and a retry that used an attempt."""
        detail = f"{outcome.meaning} (exit {outcome.exit_code})"
        last_line = last_lines(client_log, 1) if client_log is not None else ""
        if last_line and not last_line.startswith(("=== attempt", "(no client output)")):
            detail += f": {last_line.strip()}"
        common = dict(work_dir=None, pid=None, pid_start=None, exit_code=outcome.exit_code, error=detail)
        if outcome.kind is OutcomeKind.PERMANENT:
            self.log.error("job %d: %s after %.1f s", job.id, detail, elapsed)
            return self._fail(self.journal.update(job, **common), detail)
        if outcome.kind is OutcomeKind.TRANSIENT:
            transient = job.transient_failures + 1
            delay = backoff_seconds(transient, self.folder.retry_base, self.folder.retry_max)
            job = self.journal.update(job, state=JobState.WAITING, attempts=job.attempts - 1,
                                      transient_failures=transient, **common)
            level = logging.ERROR if outcome.loud else logging.WARNING
            self.log.log(level, "job %d: %s; retrying in %.1f s (no attempt used, %d transient failures so far)",
                         job.id, detail, delay, transient)
            self.stop.wait(delay)
            return job
        if job.attempts >= self.folder.max_attempts:
            self.log.error("job %d: %s; no attempts left", job.id, detail)
            return self._fail(self.journal.update(job, **common),
                              f"gave up after {job.attempts} attempts: {detail}")
        delay = backoff_seconds(job.attempts, self.folder.retry_base, self.folder.retry_max)
        job = self.journal.update(job, state=JobState.WAITING, **common)
        self.log.warning("job %d: %s; retrying in %.1f s (attempt %d/%d used)", job.id, detail, delay,
                         job.attempts, self.folder.max_attempts)
        self.stop.wait(delay)
        return job

    @staticmethod
    def _processing_dir_mounted(job: Job) -> bool:
        """True when processing/ is still on the filesystem the job's file was claimed on."""
        try:
            return os.stat(Path(job.processing_path).parent).st_dev == job.dev
        except OSError:
            return False

    def _check_history(self, job: Job, fingerprint: str) -> Job | None:
        """Duplicate and quarantine decisions from earlier jobs on the same content; None to go ahead."""
        if not self.folder.reprocess_duplicates:
            earlier = self.journal.done_with_same_content(fingerprint, job.options_digest, job.id)
            if earlier is not None:
                reason = (f"same content as job {earlier.id} ({earlier.name}), already processed with the same"
                          f" options into {earlier.output_path}")
                self.log.info("job %d: %s is a duplicate: %s", job.id, job.name, reason)
                return self.journal.update(job, state=JobState.DISPOSING, outcome=JobState.DUPLICATE.value,
                                           fingerprint=fingerprint, error=reason)
        failures = self.journal.failures_of_content(fingerprint, job.id)
        if len(failures) >= self.folder.quarantine_after:
            last = failures[-1]
            reason = (f"quarantined: this content already failed {len(failures)} times (jobs "
                      f"{', '.join(str(f.id) for f in failures)}); last error: {last.error}. To try again:"
                      f" mpd-watch forget {fingerprint[:12]}, then drop the file again")
            self.log.error("job %d: %s %s", job.id, job.name, reason)
            return self.journal.update(job, state=JobState.DISPOSING, outcome=JobState.QUARANTINED.value,
                                       fingerprint=fingerprint, error=reason)
        return None

    def _fail(self, job: Job, reason: str) -> Job:
        """Record the failure; the source then goes to failed/ with a log."""
        return self.journal.update(job, state=JobState.DISPOSING, outcome=JobState.FAILED.value, error=reason)

    # -- publishing and disposal --------------------------------------------------------------------

    def _output_name(self, job: Job) -> str:
        stem = Path(job.name).stem or job.name
        return f"{stem}.{self.folder.container}"

    def _publish(self, job: Job) -> Job:
        """Give the finished output its final name (never replacing a file), then dispose of the source."""
        assert job.output_path is not None
        final = Path(job.output_path)
        temp = Path(job.work_dir) / self._output_name(job) if job.work_dir else None
        if temp is not None and temp.exists():
            while not (final.exists() and os.path.samefile(temp, final)):
                if link_no_replace(temp, final):
                    break
                final = free_name(final.parent, final.name)
                job = self.journal.update(job, output_path=str(final))
            fsync_path(final.parent)
        elif not final.exists():
            self._remove_work_dir(job)
            self.log.error("job %d: finished output vanished before it was published; running again", job.id)
            return self.journal.update(job, state=JobState.QUEUED, work_dir=None, output_path=None,
                                       attempts=max(0, job.attempts - 1), error="output vanished before publishing")
        self._remove_work_dir(job)
        size = final.stat().st_size
        self.log.info("job %d: output %s (%s)", job.id, final, format_bytes(size))
        return self.journal.update(job, state=JobState.DISPOSING, outcome=JobState.DONE.value, work_dir=None)

    def _dispose(self, job: Job) -> Job:
        """Move, keep or delete the source as the outcome and folder ask; idempotent after a crash."""
        outcome = JobState(job.outcome)
        source = Path(job.processing_path)
        if outcome in (JobState.FAILED, JobState.QUARANTINED):
            disposition = self._move_to_failed(job, source)
        elif self.folder.after == "delete":
            source.unlink(missing_ok=True)
            disposition = "deleted"
        elif self.folder.after == "keep":
            disposition = self._put_back(job, source)
        else:
            disposition = self._move(job, source, Path(self.folder.done_dir), job.name)
        job = self.journal.update(job, state=outcome, outcome=None, disposition=disposition)
        self._log_final(job)
        return job

    def _move(self, job: Job, source: Path, directory: Path, name: str) -> str:
        """Move the source into `directory` (finishing an interrupted move if there was one)."""
        recorded = Path(job.disposition) if job.disposition and job.disposition != "deleted" else None
        if not source.exists():
            return str(recorded) if recorded else "(gone)"
        if recorded is not None and recorded.exists() and os.path.samefile(source, recorded):
            source.unlink()
            return str(recorded)
        directory.mkdir(parents=True, exist_ok=True)
        intended = free_name(directory, name)
        self.journal.update(job, disposition=str(intended))
        return str(move_to_free_name(source, directory, name))

    def _put_back(self, job: Job, source: Path) -> str:
        """Return the source to its original name (the journal then skips it), or to done/ if that is taken."""
        original = Path(job.source_path)
        if not source.exists():
            return job.disposition or "(gone)"
        if job.disposition and job.disposition != str(original):  # an interrupted move to done/
            return self._move(job, source, Path(self.folder.done_dir), job.name)
        if original.exists() and os.path.samefile(source, original):
            source.unlink()
            return str(original)
        self.journal.update(job, disposition=str(original))
        if link_no_replace(source, original):
            if source.exists():
                source.unlink()
            return str(original)
        self.log.warning("job %d: %s was taken again meanwhile; keeping the source in %s", job.id, original,
                         self.folder.done_dir)
        return self._move(job, source, Path(self.folder.done_dir), job.name)

    def _move_to_failed(self, job: Job, source: Path) -> str:
        """Move the source to failed/ and write a `.log` next to it saying why."""
        failed_dir = Path(self.folder.failed_dir)
        failed_dir.mkdir(parents=True, exist_ok=True)
        target = self._move(job, source, failed_dir, job.name)
        if target == "(gone)":
            return target
        log_path = Path(target + ".log")
        if not log_path.exists():
            temp = log_path.with_name(f".{log_path.name}.{secrets.token_hex(4)}.tmp")
            temp.write_text(self._failure_report(job))
            os.replace(temp, log_path)
        return target

    def _failure_report(self, job: Job) -> str:
        """The text of failed/<name>.log."""
        state = "quarantined" if job.outcome == JobState.QUARANTINED.value else "failed"
        lines = [
            f"mpd-watch: {escaped(job.name)} {state}",
            f"reason: {escaped(job.error or '', quote=False)}",
            f"job: {job.id}   attempts used: {job.attempts}   transient failures: {job.transient_failures}"
            f"   last exit code: {job.exit_code}",
            f"source: {escaped(job.source_path)}   size: {job.size} bytes   fingerprint: {job.fingerprint}",
            f"claimed: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.created_at))}"
            f"   given up: {time.strftime('%Y-%m-%d %H:%M:%S')}",
            f"client command: {command_line(self.folder.client_argv(Path(job.processing_path), Path('OUTPUT')))}",
            "",
            "last lines of the client's output:",
            last_lines(self.logs_dir / f"job-{job.id}.log", LOG_TAIL_LINES),
            "",
        ]
        return "\n".join(lines)

    def _remove_work_dir(self, job: Job) -> None:
        if job.work_dir and Path(job.work_dir).name.startswith(WORK_DIR_PREFIX):
            shutil.rmtree(job.work_dir, ignore_errors=True)

    def _log_final(self, job: Job) -> None:
        took = f"{job.finished_at - job.created_at:.1f} s" if job.finished_at else "?"
        if job.state is JobState.DONE:
            self.log.info("job %d: done %s -> %s in %s (source: %s)", job.id, job.name, job.output_path, took,
                          job.disposition)
        elif job.state is JobState.DUPLICATE:
            self.log.info("job %d: skipped duplicate %s (source: %s)", job.id, job.name, job.disposition)
        else:
            self.log.error("job %d: %s %s: %s (source: %s)", job.id, job.state.value, job.name, job.error,
                           job.disposition)
