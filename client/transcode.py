"""File mode: decode with PyAV, interpolate, encode; audio, subtitles, attachments and chapters copied unchanged.

The output is written under a hidden temporary name in the output's folder and renamed into
place only when everything succeeded, so the final name never holds a half-written file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..settings import EngineSettings
from .cadence import CfrResampler, ConstantRateGuard, is_constant_rate
from .colour import ColourSpec, frame_to_rgb, matrix_for, rgb_format_for, rgb_to_frame
from .encoders import EncodeOptions, EncoderChoice, choose_encoder, source_layout
from .engines import Engine, Placement, abandon_on_error, open_engine
from .exitcodes import InputDataError, OutputError, UsageError
from .pipe_filter import PipeInput, output_frames_for, pump
from .progress import Progress
from .rates import format_rational

log = logging.getLogger(__name__)

PRESCAN_PACKETS = 600  # video packets checked for a constant rate before any work starts
# Per-stream statistics Matroska muxers write; they describe the input stream, not ours.
STALE_TAGS = ("DURATION", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES", "BPS", "_STATISTICS_", "ENCODER")


@dataclass
class VideoInput:
    """The input's video stream as the engine needs it."""

    rate: Fraction
    width: int
    height: int
    pix_fmt: str
    spec: ColourSpec
    frames: int  # 0 when unknown


def check_paths(src: Path, dst: Path) -> None:
    """Usage errors before anything is opened: missing input, output folder, output == input."""
    if not src.exists():
        raise UsageError(f"input file not found: {src}")
    if not src.is_file():
        raise UsageError(f"input is not a file: {src}")
    if not dst.parent.is_dir():
        raise UsageError(f"output folder does not exist: {dst.parent}")
    if dst.exists() and dst.samefile(src):
        raise UsageError(f"output would overwrite the input: {dst}")


def open_input(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise InputDataError(f"cannot read {path}: {e.strerror or e}") from None


def main_video(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream that is a real video (not cover art)."""
    for s in container.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    raise InputDataError(f"{container.name} has no video stream")


def frame_times(container: av.container.InputContainer, video, limit: int) -> list[Fraction]:
    """Presentation times of the first ``limit`` video packets (demuxing only, no decoding)."""
    times = []
    for packet in container.demux(video):
        if packet.pts is not None and packet.size:
            times.append(packet.pts * packet.time_base)
        if len(times) >= limit:
            break
    return times


def describe_input(path: Path, spec: PipeInput) -> VideoInput:
    """Probe the input: rate (checked for constancy unless --cfr), size, format, colour, frame count."""
    with open_input(path) as container:
        video = main_video(container)
        ctx = video.codec_context
        rate = spec.cfr or spec.in_fps or video.average_rate or video.guessed_rate
        if not rate:
            raise InputDataError(f"cannot tell the frame rate of {path}; pass --in-fps RATE or --cfr RATE")
        rate = Fraction(rate)
        if spec.cfr is None:
            try:
                times = frame_times(container, video, PRESCAN_PACKETS)
            except av.error.FFmpegError as e:
                raise InputDataError(f"cannot read {path}: {e}") from None
            if not is_constant_rate(times, rate):
                raise InputDataError(f"{path.name} has a variable frame rate (average "
                                     f"{float(rate):.3f} fps); pass --cfr RATE (e.g. --cfr "
                                     f"{format_rational(guess_cfr(rate))}) to convert it to a constant rate")
        pix_fmt = ctx.pix_fmt or "yuv420p"
        spec_c = ColourSpec(matrix_for(spec.matrix, ctx.width, ctx.height, ctx.colorspace), ctx.color_range == 2)
        frames = video.frames
        if not frames and video.duration and video.time_base:
            frames = round(video.duration * video.time_base * rate)
        elif not frames and container.duration:
            frames = round(Fraction(container.duration, av.time_base) * rate)
        return VideoInput(rate, ctx.width, ctx.height, pix_fmt, spec_c, int(frames or 0))


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def guess_cfr(rate: Fraction) -> Fraction:
    """The common rate nearest an average rate, to suggest for --cfr."""
    common = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
              Fraction(50), Fraction(60000, 1001), Fraction(60)]
    return min(common, key=lambda r: abs(r - rate))


class Transcoder:
    """One file conversion: input container in, temporary output container out, renamed on success."""

    def __init__(self, src: Path, dst: Path, info: VideoInput, engine: Engine, encoder: EncoderChoice,
                 spec: PipeInput, container_format: str | None, progress: Progress) -> None:
        self.src, self.dst = src, dst
        self.info = info
        self.engine = engine
        self.encoder = encoder
        self.spec = spec
        self.progress = progress
        self.frames_in = 0
        self.frames_out = 0
        self.input = open_input(src)
        self.video_in = main_video(self.input)
        self.video_in.thread_type = "AUTO"
        try:
            fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.", suffix=f".partial{dst.suffix}")
        except OSError as e:
            self.input.close()
            raise OutputError(f"cannot write in {dst.parent}: {e.strerror or e}") from None
        os.close(fd)
        self.tmp = Path(tmp)
        try:
            self.output = av.open(str(self.tmp), mode="w", format=container_format or self._format_for(dst),
                                  container_options=self._container_options(dst, container_format))
        except (av.error.FFmpegError, ValueError, OSError) as e:
            self.tmp.unlink(missing_ok=True)
            raise UsageError(f"cannot write {dst.name}: {e}; name the container with -f/--format") from None
        self.copied: dict[int, av.stream.Stream] = {}
        self.video_out = None
        self.offset = 0
        self._encoded = 0

    @staticmethod
    def _format_for(dst: Path) -> str | None:
        return None if dst.suffix else "matroska"

    @staticmethod
    def _container_options(dst: Path, container_format: str | None) -> dict[str, str]:
        """MP4/MOV get their index at the front (playable while downloading); the rewrite happens before the rename."""
        mp4 = container_format in ("mp4", "mov") or (container_format is None and
                                                    dst.suffix.lower() in (".mp4", ".m4v", ".mov"))
        return {"movflags": "+faststart"} if mp4 else {}

    # -- setup -------------------------------------------------------------------------------

    def _add_video(self) -> None:
        out_fps = self.engine.out_fps
        stream = self.output.add_stream(self.encoder.codec, rate=out_fps, options=self.encoder.options)
        stream.width, stream.height = self.info.width, self.info.height
        stream.pix_fmt = self.encoder.pix_fmt
        ctx, src = stream.codec_context, self.video_in.codec_context
        ctx.time_base = 1 / out_fps
        for tag in ("colorspace", "color_primaries", "color_trc", "color_range"):
            setattr(ctx, tag, getattr(src, tag))
        if src.sample_aspect_ratio:
            ctx.sample_aspect_ratio = src.sample_aspect_ratio
        stream.thread_type = "AUTO"
        self._copy_metadata(self.video_in, stream)
        self.video_out = stream

    def _add_copies(self) -> None:
        """Streams copied packet for packet; ones the output container cannot hold are reported and left out."""
        for s in self.input.streams:
            if s.index == self.video_in.index or s.type == "attachment":
                continue
            if s.type not in ("audio", "subtitle"):
                log.warning("leaving out stream #%d (%s): only audio and subtitle streams are copied", s.index,
                            s.type)
                continue
            try:
                out = self.output.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError) as e:
                log.warning("leaving out %s stream #%d (%s): %s; use .mkv to keep it", s.type, s.index,
                            s.codec_context.name if s.codec_context else "?", e)
                continue
            self._copy_metadata(s, out)
            self.copied[s.index] = out
        if self.output.format.name == "matroska":
            for att in self.input.streams.attachments:
                name = att.metadata.get("filename") or f"attachment{att.index}"
                self.output.add_attachment(name, att.mimetype or "application/octet-stream", att.data)
        elif self.input.streams.attachments:
            log.warning("leaving out %d attachment(s) (fonts?): %s cannot hold them",
                        len(self.input.streams.attachments), self.output.format.name)

    @staticmethod
    def _copy_metadata(src, dst) -> None:
        for key, value in src.metadata.items():
            if not key.upper().startswith(STALE_TAGS):
                dst.metadata[key] = value
        try:
            dst.disposition = src.disposition
        except (AttributeError, ValueError):
            pass

    def _setup(self) -> None:
        self._add_video()
        self._add_copies()
        for key, value in self.input.metadata.items():
            if not key.upper().startswith(STALE_TAGS):
                self.output.metadata[key] = value
        chapters = self.input.chapters()
        if chapters:
            self.output.set_chapters(chapters)

    # -- the work ----------------------------------------------------------------------------

    def _video_frames(self, packet) -> Iterator[av.VideoFrame]:
        try:
            yield from self.video_in.decode(packet)
        except av.error.FFmpegError as e:
            raise InputDataError(f"corrupt video in {self.src.name} near frame {self.frames_in}: {e}") from None

    def _timed(self) -> Iterator[tuple[av.VideoFrame, Fraction | None]]:
        """Decoded video frames with their presentation times; other streams' packets muxed on the way."""
        try:
            for packet in self.input.demux():
                index = packet.stream.index
                if index == self.video_in.index:
                    tb = self.video_in.time_base
                    for frame in self._video_frames(packet if packet.size else None):
                        yield frame, (frame.pts * (frame.time_base or tb) if frame.pts is not None else None)
                elif index in self.copied and packet.size and (packet.dts is not None or packet.pts is not None):
                    packet.stream = self.copied[index]
                    self._mux(packet)
        except av.error.FFmpegError as e:
            raise InputDataError(f"cannot read {self.src.name}: {e}") from None

    def _constant_rate(self) -> Iterator[tuple[av.VideoFrame, Fraction]]:
        """Frames at the constant input rate: checked as they come, or resampled with --cfr."""
        if self.spec.cfr is not None:
            resampler: CfrResampler[av.VideoFrame] = CfrResampler(self.info.rate)
            first = None
            for frame, time in self._timed():
                first = time if first is None else first
                for f in resampler.push(frame, time):
                    yield f, first
            for f in resampler.flush():
                yield f, first
            return
        guard = ConstantRateGuard(self.info.rate)
        first = None
        for frame, time in self._timed():
            guard.check(time)
            first = time if first is None else first
            yield frame, first

    def _rgb_frames(self, rgb_format: str) -> Iterator[np.ndarray]:
        for frame, first in self._constant_rate():
            if not self.frames_in:
                # The output starts where the input's video starts, so copied streams stay in sync.
                self.offset = round((first or 0) * self.engine.out_fps)
            self.frames_in += 1
            yield frame_to_rgb(frame, rgb_format, self.info.spec)

    def _emit(self, rgb: np.ndarray) -> None:
        frame = rgb_to_frame(rgb, self.encoder.pix_fmt, self.info.spec)
        frame.pts = self.offset + self._encoded
        frame.time_base = self.video_out.codec_context.time_base
        self._encoded += 1
        try:
            packets = self.video_out.encode(frame)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"the {self.encoder.codec} encoder failed: {e}") from None
        self._mux(packets)

    def _mux(self, packets) -> None:
        try:
            self.output.mux(packets)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.dst.name}: {getattr(e, 'strerror', None) or e}") from None

    def run(self) -> None:
        """Convert, then rename into place; on any failure the temporary file is removed."""
        done = False
        try:
            self._setup()
            rgb_format = rgb_format_for(2 if source_layout(self.info.pix_fmt)[1] > 8 else 1)
            n_in, self.frames_out = pump(self._rgb_frames(rgb_format), self.engine, self.info.rate, self._emit,
                                         self.progress)
            if not n_in:
                raise InputDataError(f"{self.src.name} has no decodable video frames")
            self._mux(self.video_out.encode(None))
            self._close_output()
            os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp made it private; give it a normal file's mode
            os.replace(self.tmp, self.dst)
            done = True
            self.progress.update(self.frames_in, self.frames_out)
        finally:
            self.input.close()
            if not done:
                self._abandon()

    def _close_output(self) -> None:
        try:
            self.output.close()
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot finish {self.dst.name}: {getattr(e, 'strerror', None) or e}") from None

    def _abandon(self) -> None:
        try:
            self.output.close()
        except Exception:  # noqa: BLE001 -- the file is being thrown away; the first error is the one to report
            pass
        self.tmp.unlink(missing_ok=True)


@dataclass
class FileResult:
    """What one conversion did."""

    output: Path
    frames_in: int
    frames_out: int
    out_fps: Fraction
    codec: str
    pix_fmt: str
    stats: dict


def run_file(src: Path, dst: Path, spec: PipeInput, settings: EngineSettings, placement: Placement,
             encode: EncodeOptions, container_format: str | None, show_progress: bool) -> FileResult:
    """Interpolate the video of ``src`` into ``dst`` (same container family), copying the other streams."""
    check_paths(src, dst)
    info = describe_input(src, spec)
    log.info("input: %s, %dx%d %s, %s fps", src.name, info.width, info.height, info.pix_fmt,
             format_rational(info.rate))
    encoder = choose_encoder(encode, info.pix_fmt)
    with abandon_on_error(open_engine(settings, info.rate, placement)) as engine:
        total = output_frames_for(info.frames, info.rate, engine.out_fps) if info.frames else None
        progress = Progress(show_progress, total)
        job = Transcoder(src, dst, info, engine, encoder, spec, container_format, progress)
        job.run()
        progress.close()
    log.info("wrote %s: %d frames at %s fps (%s %s), from %d input frames", dst, job.frames_out,
             format_rational(engine.out_fps), encoder.codec, encoder.pix_fmt, job.frames_in)
    stats = getattr(engine, "stats", None)
    snapshot = stats.snapshot() if hasattr(stats, "snapshot") else dict(getattr(stats, "__dict__", {}))
    return FileResult(dst, job.frames_in, job.frames_out, engine.out_fps, encoder.codec, encoder.pix_fmt, snapshot)
