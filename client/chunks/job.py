"""``mpd-client -i IN -o OUT --jobs N``: one file split into chunks that run as separate sessions at once.

What Av1an does for encoders, applied to interpolation:

1. **Scan** (Av1an's scene detection pass): every frame is decoded once, its presentation time
   recorded and its scene cuts found with the engine's own test (scene_cuts.py, torch-free).
2. **Split** (chunk_plan.py): chunks of whole shots, long shots in pieces that overlap by enough
   frames that the joined output is the one a single session gives.
   At least N chunks where the cuts allow, so that a short file still fills N daemons.
3. **Schedule**: up to N chunks at once, each a session of its own -- on the daemons of ``--server``
   (members.py: each chunk on the daemon running the fewest of the job's chunks; a busy daemon is
   waited for, not counted as a failure), or in-process engines with ``--local``. Each chunk decodes
   its own frames (seeking to the keyframe before its first) and encodes what it owns, with the
   output's encoder, into a chunk file as the frames come (recording.py). A chunk whose daemon fails
   or vanishes is run again from its start, on another daemon where there is one, at most
   ``retries`` more times; a chunk that fails for good stops the others at once.
4. **Join**: the chunk files' packets are copied in order into the output -- no re-encoding --
   with audio, subtitles, attachments and chapters carried over as in file mode (transcode.py);
   the output appears under its name only when everything succeeded. The join is rehearsed on a
   few frames before anything else runs.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from ...settings import EngineSettings
from ..engine import Engine, check_rates, output_frames_for, stats_snapshot
from ..errors import ChunkFailed, ClientError, InputDataError, OutputError, UsageError
from ..file.encoders import EncodeOptions, source_layout
from ..file.output_file import may_replace, publish
from ..file.transcode import FileChoices, FileResult, Transcoder, check_paths, describe_input, main_video, open_input
from ..media.colour import ColourSpec, frame_to_rgb, rgb_format_for
from ..media.input_options import InputOptions
from ..placement import Placement, find_daemon, load_local_model
from ..progress import Progress
from ..rates import format_rational
from .members import WAIT_STEP, JobStopped, Lease, Members
from .plan import Chunk, plan_chunks, smallest_bound
from .recording import ChunkFile, ChunkRecorder, EncoderSetup, join_delay, joined_packets, rehearse
from .scene_cuts import CutFinder

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

DEFAULT_CHUNK_FRAMES = 1200  # the longest chunk, in input frames (50 s of film): a longer shot is cut in pieces
DEFAULT_RETRIES = 3  # more attempts a chunk gets after its daemon failed
STOP_GRACE = 10.0  # seconds the chunks still running get to notice that the job stops


@dataclass(frozen=True)
class ChunkOptions:
    """How a file is split: ``jobs`` sessions at once, chunks of at most ``max_frames``, ``retries`` per chunk."""

    jobs: int = 2
    max_frames: int = DEFAULT_CHUNK_FRAMES
    retries: int = DEFAULT_RETRIES


@dataclass
class Scan:
    """What the scan pass found: every frame's pts (in the video stream's time base) and the certain cuts."""

    pts: list[int]
    cuts: list[int]
    first_time: Fraction




def check_chunkable(choices: FileChoices, spec: InputOptions, settings: EngineSettings, options: ChunkOptions) -> None:
    """Usage errors for what a chunked job does not do (before anything is read)."""
    if options.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {options.jobs}")
    if options.retries < 0:
        raise UsageError(f"the retries must be at least 0, got {options.retries}")
    if not settings.compensate_delay:
        raise UsageError("--jobs splits the video at scene cuts, which needs delay compensation: leave out "
                         "--reference-timing or use --jobs 1")
    if choices.cut.active:
        raise UsageError("--jobs does not take -ss/-to/--frames: cut the file first, or use --jobs 1")
    if choices.deinterlace:
        raise UsageError("--jobs does not take --deinterlace: use --jobs 1")
    if spec.cfr is not None:
        raise UsageError("--jobs needs a constant-rate input: --cfr resampling runs with --jobs 1 only")


def scan(src: Path, rgb_format: str, colour: ColourSpec, settings: EngineSettings) -> Scan:
    """Decode every frame once: presentation times, and the cuts (when scene detection is on)."""
    finder = CutFinder(settings.scdet_threshold)
    pts: list[int] = []
    with open_input(src) as container:
        video = main_video(container)
        video.thread_type = "AUTO"
        tb = video.time_base
        try:
            for frame in container.decode(video):
                if frame.pts is None:
                    raise InputDataError(f"frame {len(pts)} of {src.name} has no timestamp; --jobs needs them")
                if pts and frame.pts <= pts[-1]:
                    raise InputDataError(f"{src.name}: frame {len(pts)} is not later than the one before it")
                pts.append(frame.pts)
                if settings.scdet:
                    finder.push(frame_to_rgb(frame, rgb_format, colour))
        except av.error.FFmpegError as e:
            raise InputDataError(f"corrupt video in {src.name} near frame {len(pts)}: {e}") from None
    if not pts:
        raise InputDataError(f"{src.name} has no decodable video frames")
    return Scan(pts, finder.cuts, pts[0] * tb)


def reopen_input(src: Path) -> av.container.InputContainer:
    """The input opened again in a chunk's worker, without ``open_input``'s capture of libav's log: capturing
    switches the log on for the whole process, and a decoder thread of another chunk that logs while a third
    chunk frees its decoder (holding the interpreter) then waits forever -- the job hung, deaf to signals."""
    try:
        return av.open(str(src), mode="r")
    except av.error.FFmpegError as e:
        raise InputDataError(f"cannot read {src.name} again: {e}") from None


def chunk_frames(src: Path, scanned: Scan, start: int, stop: int, rgb_format: str,
                 colour: ColourSpec) -> Iterator[np.ndarray]:
    """Input frames ``[start, stop)``: seek to the keyframe before ``start`` and decode from there (or from the
    beginning when the seek lands after it); every frame is checked against the scan's timestamps."""
    target = scanned.pts[start]
    for seek in ((True, False) if start else (False,)):
        with reopen_input(src) as container:
            video = main_video(container)
            video.thread_type = "AUTO"
            if seek:
                try:
                    container.seek(target, stream=video, backward=True)
                except av.error.FFmpegError:
                    continue
            index = start
            try:
                for frame in container.decode(video):
                    if frame.pts is None or frame.pts < target:
                        continue
                    if index == start and frame.pts != target:
                        break  # the seek landed past the chunk's start: decode from the beginning instead
                    if frame.pts != scanned.pts[index]:
                        raise InputDataError(f"{src.name}: frame {index} decodes with pts {frame.pts}, the scan "
                                             f"saw {scanned.pts[index]}")
                    yield frame_to_rgb(frame, rgb_format, colour)
                    index += 1
                    if index == stop:
                        return
            except av.error.FFmpegError as e:
                raise InputDataError(f"corrupt video in {src.name} near frame {index}: {e}") from None
            if index > start:
                raise InputDataError(f"{src.name} ended at frame {index}, the scan saw {len(scanned.pts)}")
    raise InputDataError(f"cannot find frame {start} of {src.name} again")


class JobProgress:
    """The whole job's progress from several workers: input frames fed, output frames kept."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.frames_in = 0
        self.frames_out = 0
        self._lock = threading.Lock()

    def add(self, frames_in: int, frames_out: int) -> None:
        with self._lock:
            self.frames_in += frames_in
            self.frames_out += frames_out
            self.progress.update(self.frames_in, self.frames_out)


class EngineSource:
    """Opens one engine per chunk attempt: a session on a daemon of the fleet, or an in-process engine."""

    def __init__(self, settings: EngineSettings, placement: Placement, stop: threading.Event) -> None:
        self.settings = settings
        self.placement = placement
        self.server = None if placement.local else (placement.server or find_daemon(placement))
        self.members: Members | None = None
        self.model = None
        self.stats_lock = threading.Lock()
        self.totals: dict[str, float] = {}
        if self.server is not None:
            self.members = Members(member_channels(self.server, placement.tls_ca), placement.busy_wait, stop)
            log.info("chunks run as sessions on %s", ", ".join(self.members.addresses))
        else:
            self._load_model()

    @property
    def remote(self) -> bool:
        return self.members is not None

    def _load_model(self) -> None:
        self.model = load_local_model(self.settings, self.placement)
        log.info("chunks run in-process: model %s on %s (%s)", self.settings.model, self.model.device,
                 self.model.precision)

    def lease(self) -> Lease | None:
        """The daemon for the next attempt (waits while all are busy); None in-process."""
        return None if self.members is None else self.members.take()

    def open(self, chunk: Chunk, lease: Lease | None) -> Engine:
        settings = dataclasses.replace(self.settings, first_index=chunk.start)
        if lease is not None:
            from ..remote.session import RemoteEngine

            return RemoteEngine(lease.address, settings, token=self.placement.token, channel=lease.channel)
        from ...core import MultiPassDedup

        return MultiPassDedup.from_settings(self.model, settings)

    def count(self, engine: Engine) -> None:
        with self.stats_lock:
            for key, value in stats_snapshot(engine).items():
                if isinstance(value, (int, float)):
                    self.totals[key] = self.totals.get(key, 0) + value

    def close(self) -> None:
        if self.members is not None:
            self.members.close()


def member_channels(server: str, tls_ca: str | None) -> list[tuple[str, grpc.Channel]]:
    """Every daemon of ``--server`` with a channel of its own (one daemon: the usual direct channel)."""
    from ..remote.channel import daemon_addresses, member_server_name, open_member_channel, parse_target
    from ..remote.session import open_channel, read_root_cert

    target = parse_target(server)
    if not target.fleet:
        return [(server, open_channel(server, tls_ca))]
    root_cert = read_root_cert(tls_ca)
    name = member_server_name(target) if root_cert is not None else None
    return [(address, open_member_channel(address, root_cert, name)) for address in daemon_addresses(target)]


def outcome_of(error: BaseException) -> str:
    """What a failed attempt means: ``busy`` (refused for now: wait for a slot, no retry spent), ``failed`` (the
    daemon failed or went away: another may do the chunk) or ``fatal`` (the same request fails anywhere)."""
    from ..errors import DaemonUnavailableError, RemoteSessionError

    if isinstance(error, DaemonUnavailableError):
        return "busy" if error.code == "RESOURCE_EXHAUSTED" else "failed"
    if isinstance(error, RemoteSessionError) and error.code in ("RESOURCE_EXHAUSTED", "ABORTED") \
            and error.tag != "memory":
        return "failed"  # e.g. out of device memory now
    return "fatal"


class ChunkRunner:
    """Runs chunks into chunk files; ``stop`` makes the ones still running give up at their next frame, and
    ``abandon`` ends their daemon sessions at once."""

    def __init__(self, src: Path, scanned: Scan, engines: EngineSource, setup: EncoderSetup, colour: ColourSpec,
                 rgb_format: str, work: Path, progress: JobProgress, retries: int, stop: threading.Event) -> None:
        self.src, self.scanned, self.engines, self.setup, self.colour = src, scanned, engines, setup, colour
        self.rgb_format, self.work, self.progress, self.retries = rgb_format, work, progress, retries
        self.stop = stop
        self._sessions: set[Engine] = set()
        self._lock = threading.Lock()

    def run(self, chunk: Chunk) -> ChunkFile:
        """The chunk's file. A busy daemon is waited for (``Members``); an attempt that failed on a daemon is run
        again from the chunk's start, on another one where there is one, up to ``retries`` times."""
        failures = 0
        attempt = 0
        while True:
            attempt += 1
            lease = self.engines.lease()
            outcome, reason = "failed", ""
            try:
                result = self._attempt(chunk, attempt, lease)
                outcome = "done"
                return result
            except Exception as e:  # sorted below: waited for, retried, or the job's error
                if self.stop.is_set():
                    raise JobStopped("stopped") from None
                outcome, reason = outcome_of(e), str(e)
                if outcome == "fatal":
                    raise
                if outcome == "failed":
                    failures += 1
                    if failures > self.retries:
                        raise ChunkFailed(f"chunk {chunk.index + 1} (input frames {chunk.start}-{chunk.stop - 1}) "
                                          f"failed {failures} times, last: {e}") from None
                    log.warning("chunk %d: %s; running it again (attempt %d of %d)", chunk.index + 1, e,
                                failures + 1, self.retries + 1)
            finally:
                if lease is not None:
                    lease.end(outcome, reason)

    def _attempt(self, chunk: Chunk, attempt: int, lease: Lease | None) -> ChunkFile:
        path = self.work / f"chunk{chunk.index:05d}.{attempt}.bin"
        recorder = ChunkRecorder(path, self.setup, self.colour)
        fed = 0
        engine: Engine | None = None
        try:
            engine = self.engines.open(chunk, lease)
            self._hold(engine)
            produced = 0

            def keep(frames: list[np.ndarray]) -> None:
                nonlocal produced
                for frame in frames:
                    if chunk.skip <= produced < chunk.skip + chunk.frames_out:
                        recorder.write(frame)
                        self.progress.add(0, 1)
                    produced += 1

            for frame in chunk_frames(self.src, self.scanned, chunk.start, chunk.stop, self.rgb_format, self.colour):
                if self.stop.is_set():
                    raise JobStopped("stopped")
                out = engine.push(frame)
                if lease is not None:
                    lease.start()  # the first push opens the session: the daemon took it
                keep(out)
                fed += 1
                self.progress.add(1, 0)
            keep(engine.flush())
            self.engines.count(engine)
            if recorder.frames != chunk.frames_out:
                raise ClientError(f"chunk {chunk.index + 1}: the session gave {recorder.frames} of its "
                                  f"{chunk.frames_out} output frames")
            recorded = recorder.finish()
            recorded.check(chunk.frames_out, f"chunk {chunk.index + 1}")
            return recorded
        except BaseException:
            self.progress.add(-fed, -recorder.frames)
            if engine is not None:
                engine.close()
            recorder.abandon()
            path.unlink(missing_ok=True)
            raise
        finally:
            if engine is not None:
                self._let_go(engine)

    def _hold(self, engine: Engine) -> None:
        if self.engines.remote:
            with self._lock:
                self._sessions.add(engine)

    def _let_go(self, engine: Engine) -> None:
        with self._lock:
            self._sessions.discard(engine)

    def abandon(self) -> None:
        """Stop every chunk: each gives up at its next frame or wait, and the daemon sessions end now (closing
        one makes its chunk's next read fail at once)."""
        self.stop.set()
        if self.engines.members is not None:
            self.engines.members.wake()
        with self._lock:
            sessions = list(self._sessions)
        for engine in sessions:
            try:
                engine.close()
            except Exception as e:  # noqa: BLE001 -- stopping anyway; the job's own error is the one to report
                log.debug("ending a chunk's session: %s", e)


class ChunkJoiner(Transcoder):
    """File mode's output (temporary name, other streams, chapters, atomic rename) fed with the chunks' packets."""

    def join(self, chunks: list[Chunk], files: list[ChunkFile], first_time: Fraction) -> None:
        self.offset = self.window.settle_frames(first_time, self.out_fps)
        self.others.release_pending()
        step = 1 / self.out_fps
        others = (p for p in self._demux_others())
        waiting = next(others, None)
        parts = [(chunk.first_step, chunk_file) for chunk, chunk_file in zip(chunks, files)]
        for packet in joined_packets(parts, join_delay(files), self.offset, step):
            while waiting is not None and _time(waiting) <= packet.pts * step:
                self.others.take(waiting)
                waiting = next(others, None)
            packet.stream = self.video_out
            self._mux(packet)
            self.frames_out += 1
        while waiting is not None:
            self.others.take(waiting)
            waiting = next(others, None)
        try:
            self.others.finish()
        except av.error.FFmpegError as e:
            raise OutputError(f"cannot finish the audio of {self.dst.name}: {e}") from None
        self._close_output()
        assert self.tmp is not None
        publish(self.tmp, self.dst, self.replace)
        self.published = True

    def _demux_others(self) -> Iterator[av.Packet]:
        try:
            for packet in self.input.demux():
                if self.others.carries(packet.stream.index):
                    yield packet
        except av.error.FFmpegError as e:
            raise InputDataError(f"cannot read {self.src.name}: {e}") from None


def _time(packet: av.Packet) -> Fraction:
    ts = packet.pts if packet.pts is not None else packet.dts
    return ts * packet.time_base if ts is not None else Fraction(0)


def run_chunked(src: Path, dst: Path, spec: InputOptions, settings: EngineSettings, placement: Placement,
                encode: EncodeOptions, choices: FileChoices, show_progress: bool,
                options: ChunkOptions) -> FileResult:
    """Interpolate ``src`` into ``dst`` as chunks run ``options.jobs`` at once, joined without re-encoding.

    What can fail at the join is tried first (``recording.rehearse``), before the scan and the chunks."""
    check_chunkable(choices, spec, settings, options)
    check_paths(src, dst)
    replace = may_replace(dst, choices.overwrite)
    info = describe_input(src, spec)
    settings = check_rates(settings, info.rate)
    split_shots = not settings.adaptive  # keyframe re-timing: whole shots only (chunk_plan.py says why)
    if split_shots and options.max_frames < smallest_bound(settings.passes):
        raise UsageError(f"--chunk-frames must be at least {smallest_bound(settings.passes)} for "
                         f"{settings.passes} passes, got {options.max_frames}")
    out_fps = settings.out_fps
    from ..file.cut import CutWindow

    window = CutWindow(choices.cut, info.start)
    with ChunkJoiner(src, dst, info, encode, spec, choices, window, out_fps, replace) as job:
        setup = EncoderSetup.of(job.video_out, job.encoder, out_fps)
        work = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.chunks.", dir=dst.parent))
        engines: EngineSource | None = None
        try:
            assert job.output is not None
            rehearse(setup, info.spec, job.video_out, job.output.format.name, work)
            depth = max(source_layout(info.pix_fmt)[1], job.encoder.bit_depth)
            rgb_format = rgb_format_for(2 if depth > 8 else 1)
            log.info("input: %s, %dx%d %s, %s fps; scanning for scene cuts", src.name, info.width, info.height,
                     info.pix_fmt, format_rational(info.rate))
            scanned = scan(src, rgb_format, info.spec, settings)
            n_frames = len(scanned.pts)
            chunks = plan_chunks(n_frames, settings.ratio, settings.passes, scanned.cuts, options.max_frames,
                                 split_shots, options.jobs)
            longest = max((c.stop - c.start for c in chunks), default=0)
            if not split_shots and longest > options.max_frames:
                log.warning("adaptive re-timing keeps each shot in one chunk: the longest is %d frames (over "
                            "--chunk-frames %d); give -np N (the passes) to split long shots", longest,
                            options.max_frames)
            limit = output_frames_for(n_frames, info.rate, out_fps)  # file mode's count: frames before the input ends
            chunks = [dataclasses.replace(c, end_step=min(c.end_step, limit)) for c in chunks]
            log.info("%d frames, %d certain cut%s: %d chunk%s, %d at once", n_frames, len(scanned.cuts),
                     "" if len(scanned.cuts) == 1 else "s", len(chunks), "" if len(chunks) == 1 else "s",
                     min(options.jobs, len(chunks)))
            progress = Progress(show_progress, limit)
            stop = threading.Event()
            engines = EngineSource(settings, placement, stop)
            runner = ChunkRunner(src, scanned, engines, setup, info.spec, rgb_format, work, JobProgress(progress),
                                 options.retries, stop)
            files = run_all(chunks, runner, options.jobs)
            job.join(chunks, files, scanned.first_time)
            job.frames_in = n_frames
            progress.update(n_frames, job.frames_out)
            progress.close()
        finally:
            if engines is not None:
                engines.close()
            shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s: %d frames at %s fps (%s %s), from %d input frames in %d chunks", dst, job.frames_out,
             format_rational(out_fps), job.encoder.codec, job.encoder.pix_fmt, n_frames, len(chunks))
    return FileResult(dst, n_frames, job.frames_out, out_fps, job.encoder.codec, job.encoder.pix_fmt,
                      dict(engines.totals))


def run_all(chunks: list[Chunk], runner: ChunkRunner, jobs: int) -> list[ChunkFile]:
    """Every chunk's file, in the chunks' order; ``jobs`` run at a time, the longest first (as Av1an queues them:
    a long chunk started last would leave the other workers idle at the end).

    The first chunk that fails for good stops the others and is raised; so is an exception in this thread (a
    stop signal). Either way the chunks still running are stopped and their daemon sessions ended before this
    returns: the workers are given ``STOP_GRACE`` seconds to notice (one frame's work), and are daemon threads, so
    that one stuck in native code cannot keep the process from ending.
    """
    queue = deque(sorted(chunks, key=lambda c: (-(c.stop - c.start), c.index)))
    results: dict[int, ChunkFile] = {}
    failure: list[BaseException] = []
    done = threading.Condition()

    def work() -> None:
        while not runner.stop.is_set():
            with done:
                if not queue:
                    return
                chunk = queue.popleft()
            try:
                result = runner.run(chunk)
            except BaseException as e:  # noqa: BLE001 -- handed to the main thread
                with done:
                    if not failure and not runner.stop.is_set():
                        failure.append(e)
                    done.notify_all()
                runner.abandon()
                return
            with done:
                results[chunk.index] = result
                done.notify_all()

    workers = [threading.Thread(target=work, name=f"mpd-chunk-{n}", daemon=True)
               for n in range(max(1, min(jobs, len(chunks))))]
    for worker in workers:
        worker.start()
    try:
        with done:
            while not failure and len(results) < len(chunks):
                done.wait(WAIT_STEP)
        if failure:
            raise failure[0]
        return [results[c.index] for c in chunks]
    finally:
        runner.abandon()
        deadline = time.monotonic() + STOP_GRACE
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        stuck = [w.name for w in workers if w.is_alive()]
        if stuck:
            log.debug("chunk workers still running after %g s: %s", STOP_GRACE, ", ".join(stuck))
