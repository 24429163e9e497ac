"""``mpd-client -i IN -o OUT --jobs N``: one file split into chunks that run as separate sessions at once.

What Av1an does for encoders, applied to interpolation:

1. **Scan** (Av1an's scene detection pass): every frame is decoded once, its presentation time
   recorded and its scene cuts found with the engine's own test (scene_cuts.py, torch-free).
2. **Split** (chunk_plan.py): chunks of whole shots, long shots in pieces that overlap by enough
   frames that the joined output is the one a single session gives.
3. **Schedule**: up to N chunks at once, each a session of its own -- on the daemons of ``--server``
   (one shared channel: gRPC's round_robin spreads them over the serving daemons), or in-process
   engines with ``--local``. Each chunk decodes its own frames (seeking to the keyframe before its
   first) and encodes what it owns into a chunk file as the frames come. A chunk whose daemon fails
   or vanishes is run again from its start, on whichever daemon the balancer gives next, at most
   ``retries`` more times.
4. **Join**: the chunk files' packets are copied in order into the output -- no re-encoding --
   with audio, subtitles, attachments and chapters carried over as in file mode (transcode.py);
   the output appears under its name only when everything succeeded.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ...settings import EngineSettings
from ..engine import Engine, check_rates, output_frames_for, stats_snapshot
from ..errors import ChunkFailed, ClientError, InputDataError, OutputError, UsageError
from ..file.encoders import EncodeOptions, EncoderChoice, open_encoder, source_layout
from ..file.output_file import may_replace, publish
from ..file.transcode import FileChoices, FileResult, Transcoder, check_paths, describe_input, main_video, open_input
from ..media.colour import ColourSpec, frame_to_rgb, rgb_format_for, rgb_to_frame
from ..media.input_options import InputOptions
from ..placement import Placement, find_daemon, load_local_model
from ..progress import Progress
from ..rates import format_rational
from .plan import Chunk, plan_chunks, smallest_bound
from .scene_cuts import CutFinder

log = logging.getLogger(__name__)

DEFAULT_CHUNK_FRAMES = 1200  # the longest chunk, in input frames (50 s of film): a longer shot is cut in pieces
DEFAULT_RETRIES = 3  # more attempts a chunk gets after its daemon failed
CHUNK_FORMAT = "nut"  # chunk files: any codec, exact 1/out_fps timestamps


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


def chunk_frames(src: Path, scanned: Scan, start: int, stop: int, rgb_format: str,
                 colour: ColourSpec) -> Iterator[np.ndarray]:
    """Input frames ``[start, stop)``: seek to the keyframe before ``start`` and decode from there (or from the
    beginning when the seek lands after it); every frame is checked against the scan's timestamps."""
    target = scanned.pts[start]
    for seek in ((True, False) if start else (False,)):
        with open_input(src) as container:
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


class ChunkWriter:
    """One chunk's owned output frames, encoded as they come into a chunk file, the output's encoder settings."""

    def __init__(self, path: Path, template: av.video.stream.VideoStream, encoder: EncoderChoice,
                 out_fps: Fraction, colour: ColourSpec) -> None:
        self.path = path
        self.colour = colour
        self.encoder = encoder
        self.frames = 0
        self.container = av.open(str(path), mode="w", format=CHUNK_FORMAT)
        try:
            stream = self.container.add_stream(encoder.codec, rate=out_fps, options=encoder.options)
            stream.width, stream.height, stream.pix_fmt = template.width, template.height, template.pix_fmt
            ctx, src = stream.codec_context, template.codec_context
            ctx.time_base = 1 / out_fps
            for tag in ("colorspace", "color_primaries", "color_trc", "color_range", "field_order"):
                setattr(ctx, tag, getattr(src, tag))
            if src.sample_aspect_ratio:
                ctx.sample_aspect_ratio = src.sample_aspect_ratio
            open_encoder(ctx, encoder)
            self.stream = stream
        except BaseException:
            self.container.close()
            raise

    def write(self, rgb: np.ndarray) -> None:
        frame = rgb_to_frame(rgb, self.encoder.pix_fmt, self.colour)
        frame.pts = self.frames
        frame.time_base = self.stream.codec_context.time_base
        self.frames += 1
        try:
            self.container.mux(self.stream.encode(frame))
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write chunk {self.path.name}: {e}") from None

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))
            self.container.close()
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot finish chunk {self.path.name}: {e}") from None


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
    """Opens one engine per chunk attempt: a session on the fleet's shared channel, or an in-process engine."""

    def __init__(self, settings: EngineSettings, placement: Placement) -> None:
        self.settings = settings
        self.placement = placement
        self.server = None if placement.local else (placement.server or find_daemon(placement))
        self.channel = None
        self.model = None
        self.stats_lock = threading.Lock()
        self.totals: dict[str, float] = {}
        if self.server is not None:
            from ..remote.session import open_channel

            self.channel = open_channel(self.server, placement.tls_ca)
            log.info("chunks run as sessions on %s", self.server)
        else:
            self._load_model()

    @property
    def remote(self) -> bool:
        return self.server is not None

    def _load_model(self) -> None:
        self.model = load_local_model(self.settings, self.placement)
        log.info("chunks run in-process: model %s on %s (%s)", self.settings.model, self.model.device,
                 self.model.precision)

    def open(self, chunk: Chunk) -> Engine:
        settings = dataclasses.replace(self.settings, first_index=chunk.start)
        if self.remote:
            from ..remote.session import RemoteEngine

            return RemoteEngine(self.server, token=self.placement.token, root_cert=self.placement.tls_ca,
                                model=self.settings.model, precision=self.settings.precision, channel=self.channel,
                                **settings.engine_keywords())
        from ...core import MultiPassDedup

        return MultiPassDedup.from_settings(self.model, settings)

    def count(self, engine: Engine) -> None:
        with self.stats_lock:
            for key, value in stats_snapshot(engine).items():
                if isinstance(value, (int, float)):
                    self.totals[key] = self.totals.get(key, 0) + value

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()


def retryable(error: BaseException) -> bool:
    """A daemon that failed or went away, is busy, or ran out of device memory now: another may do the chunk."""
    from ..errors import DaemonUnavailableError, RemoteSessionError

    if isinstance(error, DaemonUnavailableError):
        return True
    return isinstance(error, RemoteSessionError) and error.code in ("RESOURCE_EXHAUSTED", "ABORTED") \
        and error.tag != "memory"


class ChunkRunner:
    """Runs chunks into chunk files; ``stop`` makes the ones still running give up at their next frame."""

    def __init__(self, src: Path, scanned: Scan, engines: EngineSource, template: av.video.stream.VideoStream,
                 encoder: EncoderChoice, out_fps: Fraction, colour: ColourSpec, rgb_format: str, work: Path,
                 progress: JobProgress, retries: int) -> None:
        self.src, self.scanned, self.engines = src, scanned, engines
        self.template, self.encoder, self.out_fps, self.colour = template, encoder, out_fps, colour
        self.rgb_format, self.work, self.progress, self.retries = rgb_format, work, progress, retries
        self.stop = threading.Event()

    def run(self, chunk: Chunk) -> Path:
        """The chunk's file; a failed attempt on a daemon is retried (from the chunk's start) up to ``retries``."""
        attempts = 1 + (self.retries if self.engines.remote else 0)
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(chunk, attempt)
            except Exception as e:  # noqa: BLE001 -- sorted below: retried, or the job's error
                if self.stop.is_set() or not retryable(e):
                    raise
                if attempt == attempts:
                    raise ChunkFailed(f"chunk {chunk.index + 1} (input frames {chunk.start}-{chunk.stop - 1}) failed "
                                      f"{attempts} times, last: {e}") from None
                log.warning("chunk %d: %s; running it again (attempt %d of %d)", chunk.index + 1, e, attempt + 1,
                            attempts)
        raise AssertionError("unreachable")

    def _attempt(self, chunk: Chunk, attempt: int) -> Path:
        path = self.work / f"chunk{chunk.index:05d}.{attempt}.{CHUNK_FORMAT}"
        writer = ChunkWriter(path, self.template, self.encoder, self.out_fps, self.colour)
        fed = 0
        engine: Engine | None = None
        try:
            engine = self.engines.open(chunk)
            produced = 0

            def keep(frames: list[np.ndarray]) -> None:
                nonlocal produced
                for frame in frames:
                    if chunk.skip <= produced < chunk.skip + chunk.frames_out:
                        writer.write(frame)
                        self.progress.add(0, 1)
                    produced += 1

            for frame in chunk_frames(self.src, self.scanned, chunk.start, chunk.stop, self.rgb_format, self.colour):
                if self.stop.is_set():
                    raise ClientError("stopped: another chunk failed")
                keep(engine.push(frame))
                fed += 1
                self.progress.add(1, 0)
            keep(engine.flush())
            self.engines.count(engine)
            if writer.frames != chunk.frames_out:
                raise ClientError(f"chunk {chunk.index + 1}: the session gave {writer.frames} of its "
                                  f"{chunk.frames_out} output frames")
            writer.close()
            return path
        except BaseException:
            self.progress.add(-fed, -writer.frames)
            if engine is not None:
                engine.close()
            try:
                writer.container.close()
            except Exception:  # noqa: BLE001 -- thrown away; the first error is the one to report
                pass
            path.unlink(missing_ok=True)
            raise


class ChunkJoiner(Transcoder):
    """File mode's output (temporary name, other streams, chapters, atomic rename) fed with the chunks' packets."""

    def join(self, chunks: list[Chunk], files: list[Path], first_time: Fraction) -> None:
        self.offset = self.window.settle_frames(first_time, self.out_fps)
        self.others.release_pending()
        step = 1 / self.out_fps
        others = (p for p in self._demux_others())
        waiting = next(others, None)
        for chunk, path in zip(chunks, files):
            with av.open(str(path)) as part:
                for packet in part.demux(part.streams.video[0]):
                    if not packet.size:
                        continue
                    tb = packet.time_base
                    pts = self.offset + chunk.first_step + round(packet.pts * tb / step)
                    dts = self.offset + chunk.first_step + round(packet.dts * tb / step) if packet.dts is not None \
                        else pts
                    while waiting is not None and _time(waiting) <= pts * step:
                        self.others.take(waiting)
                        waiting = next(others, None)
                    packet.stream = self.video_out
                    packet.time_base = step
                    packet.pts, packet.dts = pts, dts
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
    """Interpolate ``src`` into ``dst`` as chunks run ``options.jobs`` at once, joined without re-encoding."""
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
        depth = max(source_layout(info.pix_fmt)[1], job.encoder.bit_depth)
        rgb_format = rgb_format_for(2 if depth > 8 else 1)
        log.info("input: %s, %dx%d %s, %s fps; scanning for scene cuts", src.name, info.width, info.height,
                 info.pix_fmt, format_rational(info.rate))
        scanned = scan(src, rgb_format, info.spec, settings)
        n_frames = len(scanned.pts)
        chunks = plan_chunks(n_frames, settings.ratio, settings.passes, scanned.cuts, options.max_frames,
                             split_shots)
        longest = max((c.stop - c.start for c in chunks), default=0)
        if not split_shots and longest > options.max_frames:
            log.warning("adaptive re-timing keeps each shot in one chunk: the longest is %d frames (over --chunk-frames"
                        " %d); give -np N (the passes) to split long shots", longest, options.max_frames)
        limit = output_frames_for(n_frames, info.rate, out_fps)  # file mode's count: frames before the input ends
        chunks = [dataclasses.replace(c, end_step=min(c.end_step, limit)) for c in chunks]
        log.info("%d frames, %d certain cut%s: %d chunk%s, %d at once", n_frames, len(scanned.cuts),
                 "" if len(scanned.cuts) == 1 else "s", len(chunks), "" if len(chunks) == 1 else "s",
                 min(options.jobs, len(chunks)))
        progress = Progress(show_progress, limit)
        work = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.chunks.", dir=dst.parent))
        engines = EngineSource(settings, placement)
        try:
            runner = ChunkRunner(src, scanned, engines, job.video_out, job.encoder, out_fps, info.spec, rgb_format,
                                 work, JobProgress(progress), options.retries)
            files = run_all(chunks, runner, options.jobs)
            job.join(chunks, files, scanned.first_time)
            job.frames_in = n_frames
            progress.update(n_frames, job.frames_out)
            progress.close()
        finally:
            engines.close()
            shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s: %d frames at %s fps (%s %s), from %d input frames in %d chunks", dst, job.frames_out,
             format_rational(out_fps), job.encoder.codec, job.encoder.pix_fmt, n_frames, len(chunks))
    return FileResult(dst, n_frames, job.frames_out, out_fps, job.encoder.codec, job.encoder.pix_fmt,
                      dict(engines.totals))


def run_all(chunks: list[Chunk], runner: ChunkRunner, jobs: int) -> list[Path]:
    """Every chunk's file, in the chunks' order; ``jobs`` run at a time, the longest first (as Av1an queues them:
    a long chunk started last would leave the other workers idle at the end). The first failure stops the others
    and is raised."""
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="mpd-chunk") as pool:
        queued = sorted(chunks, key=lambda c: (-(c.stop - c.start), c.index))
        futures: dict[int, Future[Path]] = {c.index: pool.submit(runner.run, c) for c in queued}
        try:
            return [futures[c.index].result() for c in chunks]
        except BaseException:
            runner.stop.set()
            for f in futures.values():
                f.cancel()
            raise

