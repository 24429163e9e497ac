"""File mode: decode with PyAV, interpolate, encode; audio, subtitles, attachments and chapters carried over.

Before any frame is decoded (and before a model loads) the output is set up in full: the video
encoder opened with the real parameters and the container header written, so a wrong choice is
a usage error at once. The output is written under a hidden temporary name in its folder and
renamed into place only when everything succeeded, so the final name never holds a half-written
file. ``-ss``/``-to``/``--frames`` cut every stream alike (see cut.py).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ...escaping import escaped
from ...proto.wire import frame_size_problem
from ...settings import EngineSettings
from ..engine import Engine, abandon_on_error, check_rates, output_frames_for, pump, stats_snapshot
from ..errors import ClientError, InputDataError, OutputError, UsageError
from ..media.cadence import CfrResampler, ConstantRateGuard, is_constant_rate
from ..media.colour import ColourSpec, frame_to_rgb, matrix_for, rgb_format_for, rgb_to_frame
from ..media.deinterlace import PROGRESSIVE, Deinterlacer, field_order_text, interlaced_warning
from ..media.input_options import InputOptions
from ..media.libav_log import captured_errors, failure_reason
from ..placement import Placement, open_engine
from ..progress import Progress
from ..rates import format_rational
from .cut import CutRequest, CutWindow, expected_output_frames
from .encoders import EncodeOptions, EncoderChoice, choose_encoder, default_encoder, open_encoder, source_layout
from .integrity import (
    DeclaredEnd,
    average_rate,
    cut_short,
    damage_report,
    declared_video_end,
    scan_packets,
    scan_tail,
)
from .other_streams import STALE_TAGS, OtherStreams, copy_metadata
from .output_file import Overwrite, may_replace, publish, temporary_output

log = logging.getLogger(__name__)

PRESCAN_PACKETS = 600  # video packets checked for a constant rate before any work starts
# A cut seeks to a keyframe this far before its start, so audio and subtitle packets that a muxer
# interleaved a little ahead of their video are still read.
SEEK_MARGIN = Fraction(2)
# Header write failures that are the disk's or the folder's fault, not the command line's.
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
DEINTERLACE_HINT = "--deinterlace does it (bwdif; --deinterlace field for a frame per field)"
HEVC_ID = av.codec.Codec("hevc", "r").id


@dataclass
class VideoInput:
    """The input's video stream as the engine needs it, and the input's timing."""

    rate: Fraction
    width: int
    height: int
    pix_fmt: str
    spec: ColourSpec
    frames: int  # 0 when unknown
    start: Fraction = Fraction(0)  # the container's start time: cut positions count from here
    duration: Fraction | None = None  # the container's, when known
    field_order: int = 0  # AVFieldOrder: 0 unknown, 1 progressive, 2-5 interlaced
    declared_end: DeclaredEnd | None = None  # where the container says the video ends


@dataclass
class FileChoices:
    """What file mode does besides encoding: the container, a preview cut, deinterlacing, overwriting."""

    container_format: str | None = None
    cut: CutRequest = field(default_factory=CutRequest)
    deinterlace: str | None = None  # bwdif before interpolating: "frame" (a frame per frame) or "field" (per field)
    overwrite: Overwrite = Overwrite.ASK


def check_paths(src: Path, dst: Path) -> None:
    """Usage errors before anything is opened: missing input, output folder, output == input."""
    if not src.exists():
        raise UsageError(f"input file not found: {escaped(src)}")
    if not src.is_file():
        raise UsageError(f"input is not a file: {escaped(src)}")
    if not dst.parent.is_dir():
        raise UsageError(f"output folder does not exist: {escaped(dst.parent)}")
    if dst.is_dir():
        raise UsageError(f"output is a folder: {escaped(dst)}")
    if dst.exists() and dst.samefile(src):
        raise UsageError(f"output would overwrite the input: {escaped(dst)}")


def open_input(path: Path) -> av.container.InputContainer:
    """The input opened for demuxing; InputDataError with libav's own reason when it cannot be."""
    with captured_errors() as logs:
        try:
            return av.open(str(path), mode="r")
        except av.error.FFmpegError as e:
            errno_text = str(e.strerror or e)
            detail = failure_reason(e, logs)
    reason = errno_text if detail == errno_text else f"{errno_text} ({detail})"
    if "moov atom not found" in reason:  # MP4/MOV keep their index at the end unless written with faststart
        reason += "; the index at the file's end is missing: the file is truncated or was never finished"
    raise InputDataError(f"cannot read {escaped(path)}: {reason}")


def main_video(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream that is a real video (not cover art)."""
    for s in container.streams.video:
        if not s.disposition & av.stream.Disposition.attached_pic:
            return s
    raise InputDataError(f"{container.name} has no video stream")


def describe_input(path: Path, spec: InputOptions) -> VideoInput:
    """Probe the input: whole (not truncated or damaged), rate (checked for constancy unless --cfr), size, format,
    colour, frame count, timing."""
    with open_input(path) as container:
        video = main_video(container)
        ctx = video.codec_context
        if (problem := frame_size_problem(ctx.width, ctx.height)) is not None:
            raise InputDataError(f"{escaped(path.name)}: {problem}")
        rate = spec.cfr or spec.in_fps or video.average_rate or video.guessed_rate
        if not rate:
            raise InputDataError(f"cannot tell the frame rate of {escaped(path)}; pass --in-fps RATE or --cfr RATE")
        rate = Fraction(rate)
        declared = declared_video_end(container, video, rate)
        scan = scan_packets(container, video, PRESCAN_PACKETS)
        irregular = spec.cfr is None and not is_constant_rate(scan.times, rate)
        if not scan.reached_end and declared is not None:  # a long file: is its end there?
            tail = scan_tail(container, video, declared.end)
            if tail is not None:
                scan.add_tail(tail)
        damage = damage_report(escaped(path.name), scan, 1 / rate, declared, irregular)
        if damage:
            raise InputDataError(damage)
        if scan.demuxer_errors:
            log.warning("libav reports errors in %s (%s); reading on", path.name, "; ".join(scan.demuxer_errors))
        if irregular:
            average = average_rate(scan.times)
            measured = f"{float(average):.3f} fps on average" if average else "an irregular rate"
            raise InputDataError(f"{escaped(path.name)} has a variable frame rate ({measured} over its first "
                                 f"{len(scan.times)} frames, timestamps for {format_rational(rate)} fps); pass "
                                 f"--cfr RATE (e.g. --cfr {format_rational(guess_cfr(rate))}) to convert it to a "
                                 f"constant rate")
        pix_fmt = ctx.pix_fmt or "yuv420p"
        spec_c = ColourSpec(matrix_for(spec.matrix, ctx.width, ctx.height, ctx.colorspace), ctx.color_range == 2)
        frames = video.frames
        if not frames and video.duration and video.time_base:
            frames = round(video.duration * video.time_base * rate)
        elif not frames and container.duration:
            frames = round(Fraction(container.duration, av.time_base) * rate)
        start = Fraction(container.start_time, av.time_base) if container.start_time is not None else Fraction(0)
        duration = Fraction(container.duration, av.time_base) if container.duration else None
        return VideoInput(rate, ctx.width, ctx.height, pix_fmt, spec_c, int(frames or 0), start, duration,
                          int(ctx.field_order or 0), declared)


def guess_cfr(rate: Fraction) -> Fraction:
    """The common rate nearest an average rate, to suggest for --cfr."""
    common = [Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
              Fraction(50), Fraction(60000, 1001), Fraction(60)]
    return min(common, key=lambda r: abs(r - rate))


def output_rate(settings: EngineSettings, src_fps: Fraction) -> Fraction:
    """The rate the engine will produce, known before it is loaded (the output stream is set up first)."""
    if settings.times is not None:
        return Fraction(src_fps) * Fraction(settings.times)
    assert settings.dst_fps is not None
    return Fraction(settings.dst_fps)


def frame_time(frame: av.VideoFrame, fallback_tb: Fraction) -> Fraction | None:
    if frame.pts is None:
        return None
    return frame.pts * (frame.time_base or fallback_tb)


class Transcoder:
    """One file conversion: input container in, temporary output container out, renamed on success.

    Constructing it opens everything (encoders, header); use it as a context manager: leaving
    without a successful ``run`` removes the temporary file.
    """

    def __init__(self, src: Path, dst: Path, info: VideoInput, encode: EncodeOptions, spec: InputOptions,
                 choices: FileChoices, window: CutWindow, out_fps: Fraction, replace: bool) -> None:
        self.src, self.dst = src, dst
        self.info = info
        self.spec = spec
        self.window = window
        self.out_fps = out_fps
        self.replace = replace
        self.frames_in = 0
        self.frames_out = 0
        self.offset: int | None = None  # pts (1/out_fps) of the first output frame
        self.last_time: Fraction | None = None  # the latest input video frame's presentation time
        self._produced = 0  # frames the engine returned, written or past a cut's end
        self.published = False
        self.deinterlacer = Deinterlacer(choices.deinterlace) if choices.deinterlace else None
        self._interlace_seen = field_order_text(info.field_order) is not None
        self.input = open_input(src)
        self.output: av.container.OutputContainer | None = None
        self.tmp: Path | None = None
        try:
            self.video_in = main_video(self.input)
            self.video_in.thread_type = "AUTO"
            self.tmp = temporary_output(dst)
            self.output = self._open_output(choices.container_format)
            self.others = OtherStreams(window, self._mux)
            self.encoder = self._add_video(encode)
            self.others.add(self.input, self.output, self.video_in.index, encode.audio_codec, encode.audio_bitrate)
            for key, value in self.input.metadata.items():
                if not key.upper().startswith(STALE_TAGS):
                    self.output.metadata[key] = value
            chapters = window.chapters(self.input.chapters())
            if chapters:
                self.output.set_chapters(chapters)
            self._write_header()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Transcoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup -------------------------------------------------------------------------------

    def _open_output(self, container_format: str | None) -> av.container.OutputContainer:
        dst = self.dst
        fmt = container_format or (None if dst.suffix else "matroska")
        mp4 = (fmt or "") in ("mp4", "mov") or (fmt is None and dst.suffix.lower() in (".mp4", ".m4v", ".mov"))
        # MP4/MOV get their index at the front (playable while downloading); the rewrite happens before the rename.
        options = {"movflags": "+faststart"} if mp4 else {}
        try:
            return av.open(str(self.tmp), mode="w", format=fmt, container_options=options)
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise UsageError(f"cannot write {dst.name}: {e}; name the container with -f/--format") from None

    def _add_video(self, encode: EncodeOptions) -> EncoderChoice:
        """The output video stream, its encoder opened with the real parameters (usage errors now, not mid-way)."""
        assert self.output is not None
        default = self.output.default_video_codec
        encoder = choose_encoder(encode, self.info.pix_fmt, default)
        try:
            stream = self.output.add_stream(encoder.codec, rate=self.out_fps, options=encoder.options)
        except ValueError:
            raise UsageError(f"{self.output.format.name} cannot hold {encoder.codec} video; leave out -c for its "
                             f"default ({default_encoder(default) or default}) or choose another") from None
        stream.width, stream.height = self.info.width, self.info.height
        stream.pix_fmt = encoder.pix_fmt
        ctx, src = stream.codec_context, self.video_in.codec_context
        ctx.time_base = 1 / self.out_fps
        for tag in ("colorspace", "color_primaries", "color_trc", "color_range"):
            setattr(ctx, tag, getattr(src, tag))
        if src.sample_aspect_ratio:
            ctx.sample_aspect_ratio = src.sample_aspect_ratio
        # Every output frame is a frame at the new rate, interpolated or deinterlaced: whatever the input's field
        # order, the output's fields no longer belong to two instants shown in turn.
        ctx.field_order = PROGRESSIVE
        if ctx.codec.id == HEVC_ID and self.output.format.name in ("mp4", "mov"):
            ctx.codec_tag = "hvc1"  # what Apple's players and browsers expect; libav's default, hev1, they refuse
        stream.thread_type = "AUTO"
        copy_metadata(self.video_in, stream)
        open_encoder(ctx, encoder)
        self.video_out = stream
        return encoder

    def _write_header(self) -> None:
        """Open the muxer with every stream: what it refuses (a codec it cannot carry) is a usage error."""
        assert self.output is not None
        with captured_errors() as logs:
            try:
                self.output.start_encoding()
            except (av.error.FFmpegError, ValueError) as e:
                reason = failure_reason(e, logs)
                if getattr(e, "errno", None) in OUTPUT_ERRNOS:
                    raise OutputError(f"cannot write {self.dst.name}: {reason}") from None
                raise UsageError(f"cannot write {self.encoder.codec} video into {self.output.format.name} "
                                 f"({self.dst.name}): {reason}") from None

    # -- the work ----------------------------------------------------------------------------

    def _seek_to_cut(self) -> None:
        """Start reading near a cut's start instead of decoding everything before it."""
        start = self.window.request.start
        if not start:
            return
        target = self.window.origin - SEEK_MARGIN
        if target <= self.info.start:
            return
        try:
            self.input.seek(int(target / self.video_in.time_base), stream=self.video_in, backward=True)
        except av.error.FFmpegError as e:
            log.debug("cannot seek in %s (%s); reading from the start", self.src.name, e)
        else:
            log.debug("reading from the keyframe before %.3f s", float(target))

    def _decoded(self, packet: av.Packet) -> Iterator[av.VideoFrame]:
        """Decoded (and, with --deinterlace, deinterlaced) frames of one video packet; an empty packet flushes."""
        try:
            frames = self.video_in.decode(packet if packet.size else None)
        except av.error.FFmpegError as e:
            raise InputDataError(f"corrupt video in {self.src.name} near frame {self.frames_in}: {e}") from None
        for frame in frames:
            if not self._interlace_seen and frame.interlaced_frame:
                self._interlace_seen = True
                if self.deinterlacer is None:
                    log.warning("%s; %s", interlaced_warning("its frames say so"), DEINTERLACE_HINT)
            if self.deinterlacer is None:
                yield frame
            else:
                yield from self.deinterlacer.push(frame)
        if not packet.size and self.deinterlacer is not None:
            yield from self.deinterlacer.flush()

    def _timed(self) -> Iterator[tuple[av.VideoFrame, Fraction | None]]:
        """Video frames inside the cut with their presentation times; the other streams' packets muxed on the way."""
        self._seek_to_cut()
        tb = self.video_in.time_base
        video_done = False
        try:
            for packet in self.input.demux():
                index = packet.stream.index
                if index == self.video_in.index:
                    if video_done:
                        continue
                    for frame in self._decoded(packet):
                        time = frame_time(frame, tb)
                        if time is not None and self.window.before_start(time):
                            continue
                        if self.offset is None:
                            # The output starts where the input's video starts (or the cut), so streams stay in sync.
                            first = time if time is not None else (self.window.start or Fraction(0))
                            self.offset = self.window.settle_frames(first, self.out_fps)
                            self.others.release_pending()
                        if time is not None and self.window.past_end(time):
                            video_done = True
                            break
                        if time is not None:
                            self.last_time = time if self.last_time is None else max(self.last_time, time)
                        yield frame, time
                elif self.others.carries(index):
                    self.others.take(packet)
                if video_done and self.others.audio_done():
                    break
        except av.error.FFmpegError as e:
            raise InputDataError(f"cannot read {self.src.name}: {e}") from None

    def _constant_rate(self) -> Iterator[av.VideoFrame]:
        """Frames at the constant input rate: checked as they come, or resampled with --cfr."""
        if self.spec.cfr is not None:
            resampler: CfrResampler[av.VideoFrame] = CfrResampler(self.info.rate)
            for frame, time in self._timed():
                yield from resampler.push(frame, time)
            yield from resampler.flush()
            return
        guard = ConstantRateGuard(self.info.rate)
        for frame, time in self._timed():
            guard.check(time)
            yield frame

    def _rgb_frames(self, rgb_format: str) -> Iterator[np.ndarray]:
        for frame in self._constant_rate():
            self.frames_in += 1
            yield frame_to_rgb(frame, rgb_format, self.info.spec)

    def _emit(self, rgb: np.ndarray) -> None:
        pts = (self.offset or 0) + self._produced
        self._produced += 1
        if self.window.frame_limit is not None and pts >= self.window.frame_limit:
            return  # past the cut's end (-to, --frames)
        frame = rgb_to_frame(rgb, self.encoder.pix_fmt, self.info.spec)
        frame.pts = pts
        frame.time_base = self.video_out.codec_context.time_base
        try:
            packets = self.video_out.encode(frame)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"the {self.encoder.codec} encoder failed: {e}") from None
        self.frames_out += 1
        self._mux(packets)

    def _mux(self, packets) -> None:
        assert self.output is not None
        try:
            self.output.mux(packets)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.dst.name}: {getattr(e, 'strerror', None) or e}") from None

    def run(self, engine: Engine, progress: Progress) -> None:
        """Convert, then rename into place (the temporary file is removed on any failure, by ``close``)."""
        depth = max(source_layout(self.info.pix_fmt)[1], self.encoder.bit_depth)
        rgb_format = rgb_format_for(2 if depth > 8 else 1)  # 16-bit RGB when either end has more than 8 bits
        n_in, _ = pump(self._rgb_frames(rgb_format), engine, self.info.rate, self._emit, progress)
        if not n_in:
            if self.window.active:
                raise UsageError(f"no video frames in the cut ({self.window.describe()}) of {self.src.name}")
            raise InputDataError(f"{self.src.name} has no decodable video frames")
        self._check_whole(n_in)
        try:
            self.others.finish()
        except av.error.FFmpegError as e:
            raise OutputError(f"cannot finish the audio of {self.dst.name}: {e}") from None
        self._mux(self.video_out.encode(None))
        self._close_output()
        assert self.tmp is not None
        publish(self.tmp, self.dst, self.replace)
        self.published = True
        progress.update(self.frames_in, self.frames_out)

    def _check_whole(self, n_in: int) -> None:
        """Refuse to publish the output of an input whose video ended well before its container says (cut short
        past the scan describe_input made); a cut (-to, --frames) ends early on purpose."""
        if self.window.active or self.last_time is None:
            return
        short = cut_short(self.last_time, 1 / self.info.rate, self.info.declared_end)
        if short:
            raise InputDataError(f"{escaped(self.src.name)} is truncated or damaged ({n_in} video frames decoded; "
                                 f"{short}); re-download or re-encode it (--cfr would not repair it)")

    def _close_output(self) -> None:
        assert self.output is not None
        try:
            self.output.close()
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot finish {self.dst.name}: {getattr(e, 'strerror', None) or e}") from None

    def close(self) -> None:
        """Close the input; unless the output was published, throw the temporary file away."""
        self.input.close()
        if self.published:
            return
        if self.output is not None:
            try:
                self.output.close()
            except Exception:  # noqa: BLE001 -- the file is being thrown away; the first error is the one to report
                pass
        if self.tmp is not None:
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


def run_file(src: Path, dst: Path, spec: InputOptions, settings: EngineSettings, placement: Placement,
             encode: EncodeOptions, choices: FileChoices, show_progress: bool) -> FileResult:
    """Interpolate the video of ``src`` into ``dst``, carrying the other streams over.

    Every check that can fail on the command line or the files runs before the model loads and
    before any frame is decoded: paths, overwriting, the cut, the rates, the encoder, the muxer.
    """
    check_paths(src, dst)
    choices.cut.check()
    replace = may_replace(dst, choices.overwrite)
    info = describe_input(src, spec)
    log.info("input: %s, %dx%d %s, %s fps", src.name, info.width, info.height, info.pix_fmt,
             format_rational(info.rate))
    window = CutWindow(choices.cut, info.start)
    window.check_against(info.duration)
    if window.active:
        log.info("%s", window.describe())
    order = field_order_text(info.field_order)
    if choices.deinterlace == "field":
        log.info("deinterlacing with bwdif, a frame per field: %s fps in, %s fps to the interpolation",
                 format_rational(info.rate), format_rational(2 * info.rate))
        info = dataclasses.replace(info, rate=2 * info.rate, frames=2 * info.frames)
    elif choices.deinterlace:
        log.info("deinterlacing with bwdif (a frame per frame: the rate is unchanged)")
    elif order:
        log.warning("%s; %s", interlaced_warning(order), DEINTERLACE_HINT)
    check_rates(settings, info.rate)
    out_fps = output_rate(settings, info.rate)
    with Transcoder(src, dst, info, encode, spec, choices, window, out_fps, replace) as job:
        if window.active:
            total = expected_output_frames(window, info.frames, info.rate, out_fps, info.duration)
        else:
            total = output_frames_for(info.frames, info.rate, out_fps) if info.frames else None
        progress = Progress(show_progress, total)
        with abandon_on_error(open_engine(settings, info.rate, placement, progress.waiting)) as engine:
            if engine.out_fps != out_fps:
                raise ClientError(f"the engine runs at {format_rational(engine.out_fps)} fps, the output was set "
                                  f"up for {format_rational(out_fps)}")
            job.run(engine, progress)
            progress.close()
    log.info("wrote %s: %d frames at %s fps (%s %s), from %d input frames", dst, job.frames_out,
             format_rational(out_fps), job.encoder.codec, job.encoder.pix_fmt, job.frames_in)
    return FileResult(dst, job.frames_in, job.frames_out, out_fps, job.encoder.codec, job.encoder.pix_fmt,
                      stats_snapshot(engine))
