"""A chunk's video as the output's own encoder makes it, kept packet for packet, and the packets joined in order.

Every chunk is encoded by an encoder set up exactly as the output file's (``EncoderSetup``: codec,
options, size, rate, colour, global headers), so its packets are what one session's encoder would
have written for those frames, headers included (checked: the stream headers, ``extradata``, must be
the same bytes). The packets go to a plain file with an index of their timestamps (``ChunkFile``):
no container in between, so nothing shifts or rounds a timestamp on the way (Matroska stores no
decoding times, NUT shifts them to be non-negative and rescales durations).

Joining (``joined_packets``) puts the chunks' packets on the output's timeline: a packet's
presentation time is its chunk's first output step plus its own; its decoding time is its place in
the whole stream (packets are in decoding order, one per frame) less the encoder's reordering delay,
the largest over the chunks. So decoding times increase strictly across chunks and never pass the
presentation times, B-frames or not, and a packet lasts what the encoder said. ``rehearse`` runs that
join on a few frames into a file of the output's format before any chunk runs, so that what could
fail at the join fails first.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import ClientError, UsageError
from ..file.encoders import EncoderChoice
from ..media.colour import ColourSpec, rgb_to_frame
from ..media.libav_log import captured_errors, failure_reason

#: Codecs whose packets are not data (``wrapped_avframe`` carries a pointer to a frame in memory).
UNRECORDABLE = frozenset({"wrapped_avframe"})
REHEARSAL_FRAMES = 6  # frames in each of the two rehearsal chunks: enough for an encoder to reorder
COLOUR_TAGS = ("colorspace", "color_primaries", "color_trc", "color_range")


@dataclass(frozen=True)
class EncoderSetup:
    """Everything the output's video encoder was opened with, to open the same encoder for every chunk."""

    codec: str
    options: dict[str, str]
    width: int
    height: int
    pix_fmt: str
    out_fps: Fraction
    flags: int
    flags2: int
    bit_rate: int | None
    colour: dict[str, int]
    sample_aspect_ratio: Fraction | None
    field_order: int | None
    extradata: bytes | None

    @classmethod
    def of(cls, stream: av.video.stream.VideoStream, encoder: EncoderChoice, out_fps: Fraction) -> EncoderSetup:
        """The setup of the output's opened video ``stream`` (encoded with ``encoder`` at ``out_fps``)."""
        ctx = stream.codec_context
        return cls(encoder.codec, dict(encoder.options), ctx.width, ctx.height, encoder.pix_fmt, out_fps, ctx.flags,
                   ctx.flags2, ctx.bit_rate, {tag: getattr(ctx, tag) for tag in COLOUR_TAGS},
                   ctx.sample_aspect_ratio, getattr(ctx, "field_order", None), ctx.extradata)

    def check(self) -> None:
        """A UsageError for an encoder whose chunks cannot be joined."""
        if self.codec in UNRECORDABLE:
            raise UsageError(f"--jobs cannot join {self.codec} video (the .y4m and raw outputs' frames in memory): "
                             "use --jobs 1, or another container")

    def open(self) -> av.CodecContext:
        """A new encoder, opened like the output's.

        libav's log is not captured here (``captured_errors`` switches it on for the whole process, and a libav
        thread logging while another Python thread frees a decoder waits forever for the interpreter): the
        options were tried when the output was set up.
        """
        ctx = av.CodecContext.create(self.codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, self.pix_fmt
        ctx.time_base = 1 / self.out_fps
        ctx.framerate = self.out_fps
        ctx.flags, ctx.flags2 = self.flags, self.flags2
        if self.bit_rate:
            ctx.bit_rate = self.bit_rate
        for tag, value in self.colour.items():
            setattr(ctx, tag, value)
        if self.sample_aspect_ratio:
            ctx.sample_aspect_ratio = self.sample_aspect_ratio
        if self.field_order is not None:
            ctx.field_order = self.field_order
        ctx.thread_type = "AUTO"
        ctx.options = dict(self.options)
        ctx.open()
        return ctx


@dataclass(frozen=True)
class PacketEntry:
    """One encoded frame in a chunk file: where its bytes are, its timestamps in output frames (the chunk's own
    count from 0), its duration and whether it is a keyframe."""

    offset: int
    size: int
    pts: int
    dts: int | None
    duration: int
    keyframe: bool


@dataclass
class ChunkFile:
    """A finished chunk: its packets' bytes in ``path``, in decoding order, described by ``packets``."""

    path: Path
    packets: list[PacketEntry] = field(default_factory=list)

    @property
    def delay(self) -> int:
        """How many frames decoding runs ahead of presentation: the largest ``i - pts`` (and ``pts - dts``, as the
        encoder set it) over the packets in decoding order."""
        lead = 0
        for i, p in enumerate(self.packets):
            lead = max(lead, i - p.pts, i - p.dts if p.dts is not None else 0)
        return lead

    def check(self, frames: int, name: str) -> None:
        """A ClientError unless the chunk holds one packet per frame, presentation times 0 .. frames - 1."""
        if sorted(p.pts for p in self.packets) != list(range(frames)):
            raise ClientError(f"{name}: the encoder gave {len(self.packets)} packets for {frames} frames "
                              "(with timestamps that do not match them); --jobs cannot join its chunks")

    def read(self) -> Iterator[tuple[PacketEntry, bytes]]:
        with open(self.path, "rb") as data:
            for entry in self.packets:
                data.seek(entry.offset)
                yield entry, data.read(entry.size)


class ChunkRecorder:
    """Encodes a chunk's owned frames as they come, with a new encoder of the output's setup, into a ChunkFile."""

    def __init__(self, path: Path, setup: EncoderSetup, colour: ColourSpec) -> None:
        self.setup = setup
        self.colour = colour
        self.frames = 0
        self.chunk = ChunkFile(path)
        self._file = open(path, "wb")  # closed by finish or abandon
        try:
            self._ctx: av.CodecContext | None = setup.open()
        except BaseException:
            self._file.close()
            raise
        self.headers = self._ctx.extradata  # the stream headers this encoder writes (global ones: the container's)

    def write(self, rgb: np.ndarray) -> None:
        frame = rgb_to_frame(rgb, self.setup.pix_fmt, self.colour)
        frame.pts = self.frames
        frame.time_base = 1 / self.setup.out_fps
        self.frames += 1
        self._keep(self._encode(frame))

    def finish(self) -> ChunkFile:
        """Drain the encoder and close the file; the chunk as recorded."""
        self._keep(self._encode(None))
        self._ctx = None
        self._file.close()
        return self.chunk

    def abandon(self) -> None:
        """Close everything (the caller removes the file)."""
        self._ctx = None
        self._file.close()

    def _encode(self, frame: av.VideoFrame | None) -> list[av.Packet]:
        assert self._ctx is not None
        try:
            return self._ctx.encode(frame)
        except (av.error.FFmpegError, OSError) as e:
            raise ClientError(f"the {self.setup.codec} encoder failed on chunk {self.chunk.path.name}: {e}") from None

    def _keep(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            data = bytes(packet)
            self.chunk.packets.append(PacketEntry(self._file.tell(), len(data), packet.pts, packet.dts,
                                                  packet.duration or 0, packet.is_keyframe))
            self._file.write(data)


def join_delay(chunks: list[ChunkFile]) -> int:
    """The reordering delay of the joined stream: the largest of its chunks'."""
    return max((c.delay for c in chunks), default=0)


def joined_packets(parts: list[tuple[int, ChunkFile]], delay: int, offset: int,
                   step: Fraction) -> Iterator[av.Packet]:
    """The chunks' packets on the output's timeline (time base ``step``, one output frame); ``parts`` are each
    chunk's first output step and file, in order, ``offset`` the output's first frame's step."""
    for first_step, chunk in parts:
        for i, (entry, data) in enumerate(chunk.read()):
            packet = av.Packet(data)
            packet.time_base = step
            packet.pts = offset + first_step + entry.pts
            packet.dts = offset + first_step + i - delay
            packet.duration = entry.duration
            packet.is_keyframe = entry.keyframe
            yield packet


def rehearse(setup: EncoderSetup, colour: ColourSpec, template: av.video.stream.VideoStream, format_name: str,
             work: Path) -> None:
    """Encode two short chunks and join them into a file of the output's format, as the job will: a UsageError
    now for what would fail at the join (an encoder whose headers differ from one run to the next, a muxer that
    refuses the joined packets), before any chunk runs."""
    setup.check()
    frames = _rehearsal_frames(setup.width, setup.height)
    parts: list[tuple[int, ChunkFile]] = []
    try:
        for n in range(2):
            recorder = ChunkRecorder(work / f"rehearsal{n}.bin", setup, colour)
            try:
                if recorder.headers != setup.extradata:
                    raise UsageError(f"the {setup.codec} encoder writes different stream headers each time it "
                                     "starts, so chunks encoded apart cannot be joined: use --jobs 1 or another "
                                     "encoder")
                for rgb in frames:
                    recorder.write(rgb)
            except BaseException:
                recorder.abandon()
                raise
            chunk = recorder.finish()
            chunk.check(len(frames), f"the {setup.codec} encoder")
            parts.append((n * len(frames), chunk))
        with captured_errors() as logs:
            try:
                scratch = av.open(io.BytesIO(), "w", format=format_name)
                with scratch:
                    stream = scratch.add_stream_from_template(template)
                    for packet in joined_packets(parts, join_delay([c for _, c in parts]), 0, 1 / setup.out_fps):
                        packet.stream = stream
                        scratch.mux(packet)
            except (av.error.FFmpegError, ValueError, OSError) as e:
                raise UsageError(f"--jobs cannot join chunks of {setup.codec} video in {format_name}: "
                                 f"{failure_reason(e, logs)}; use --jobs 1") from None
    finally:
        for n in range(2):
            (work / f"rehearsal{n}.bin").unlink(missing_ok=True)


def _rehearsal_frames(width: int, height: int) -> list[np.ndarray]:
    """A gradient sliding a few pixels a frame: content an encoder predicts from both sides (B-frames)."""
    y, x = np.mgrid[0:height, 0:width]
    return [np.stack([(x * 4 + i * 3) % 256, (y * 4 + i * 2) % 256, (x + y + i * 5) % 256], -1).astype(np.uint8)
            for i in range(REHEARSAL_FRAMES)]
