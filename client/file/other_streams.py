"""The streams beside the video in file mode: audio and subtitles copied packet for packet (or audio
re-encoded with --audio-codec), attachments, all cut to the preview range and moved onto its timeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av

from ..errors import InputDataError, UsageError
from ..media.libav_log import captured_errors, failure_reason
from .cut import CutWindow
from .encoders import check_audio_encoder, default_encoder, nearest_sample_rate

log = logging.getLogger(__name__)

# Per-stream statistics Matroska muxers write; they describe the input stream, not ours.
STALE_TAGS = ("DURATION", "NUMBER_OF_FRAMES", "NUMBER_OF_BYTES", "BPS", "_STATISTICS_", "ENCODER")


def copy_metadata(src, dst) -> None:
    """Tags (minus stale statistics) and dispositions of one stream onto another."""
    for key, value in src.metadata.items():
        if not key.upper().startswith(STALE_TAGS):
            dst.metadata[key] = value
    try:
        dst.disposition = src.disposition
    except (AttributeError, ValueError):
        pass


@dataclass
class AudioReencode:
    """One input audio stream decoded and encoded again into ``output``."""

    source: av.audio.stream.AudioStream
    output: av.audio.stream.AudioStream
    drained: bool = False


@dataclass
class OtherStreams:
    """Every input stream but the main video, as the output carries it: copied, re-encoded, or left out."""

    window: CutWindow
    mux: Callable[[object], None]
    copied: dict[int, av.stream.Stream] = field(default_factory=dict)
    reencoded: dict[int, AudioReencode] = field(default_factory=dict)
    audio_past_end: set[int] = field(default_factory=set)
    pending: list[av.Packet] = field(default_factory=list)

    # -- setup -----------------------------------------------------------------------------

    def add(self, source: av.container.InputContainer, output: av.container.OutputContainer, video_index: int,
            audio_codec: str | None, audio_bitrate: int | None) -> None:
        """Add the output streams; one the container cannot hold is left out with a warning saying what keeps it."""
        for s in source.streams:
            if s.index == video_index or s.type == "attachment":
                continue
            if s.type not in ("audio", "subtitle"):
                log.warning("leaving out stream #%d (%s): only audio and subtitle streams are carried over", s.index,
                            s.type)
                continue
            if s.type == "audio" and audio_codec is not None:
                self.reencoded[s.index] = AudioReencode(s, self._audio_encoder(s, output, audio_codec, audio_bitrate))
                continue
            try:
                out = output.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError):
                self._leave_out(s, output)
                continue
            copy_metadata(s, out)
            self.copied[s.index] = out
        if output.format.name == "matroska":
            for att in source.streams.attachments:
                name = att.metadata.get("filename") or f"attachment{att.index}"
                output.add_attachment(name, att.mimetype or "application/octet-stream", att.data)
        elif source.streams.attachments:
            log.warning("leaving out %d attachment(s) (fonts?): %s cannot hold them; .mkv keeps them",
                        len(source.streams.attachments), output.format.name)

    @staticmethod
    def _leave_out(s: av.stream.Stream, output: av.container.OutputContainer) -> None:
        codec = s.codec_context.name if s.codec_context else "?"
        suggestion = default_encoder(output.default_audio_codec) if s.type == "audio" else None
        if suggestion:
            hint = f"--audio-codec {suggestion} re-encodes it, .mkv keeps it as it is"
        else:
            hint = ".mkv keeps it"
        log.warning("leaving out %s stream #%d (%s): %s cannot hold %s; %s", s.type, s.index, codec,
                    output.format.name, codec, hint)

    @staticmethod
    def _audio_encoder(s: av.audio.stream.AudioStream, output: av.container.OutputContainer, name: str,
                       bitrate: int | None) -> av.audio.stream.AudioStream:
        """An opened encoder stream for one input audio stream (--audio-codec); usage errors say why not."""
        encoder = check_audio_encoder(name)
        decoder = s.codec_context
        rate = nearest_sample_rate(encoder, decoder.sample_rate)
        try:
            out = output.add_stream(encoder.name, rate=rate)
        except ValueError:
            raise UsageError(f"{output.format.name} cannot hold {encoder.name} audio; choose another "
                             f"--audio-codec (its default is {output.default_audio_codec})") from None
        ctx = out.codec_context
        ctx.layout = decoder.layout
        ctx.time_base = Fraction(1, rate)
        if bitrate:
            ctx.bit_rate = bitrate
        with captured_errors() as logs:
            try:
                ctx.open()
            except (av.error.FFmpegError, ValueError, OSError) as e:
                raise UsageError(f"cannot open the {encoder.name} encoder for audio stream #{s.index}: "
                                 f"{failure_reason(e, logs)}") from None
        copy_metadata(s, out)
        log.info("re-encoding audio stream #%d (%s) with %s at %d Hz", s.index, decoder.name, encoder.name, rate)
        return out

    # -- the work ------------------------------------------------------------------------

    def carries(self, index: int) -> bool:
        return index in self.copied or index in self.reencoded

    def take(self, packet: av.Packet) -> None:
        """One demuxed packet of a carried stream: cut, shifted and muxed (or decoded and encoded again)."""
        if not self.window.end_known:
            self.pending.append(packet)  # --frames: the end is known once the first video frame is
            return
        if packet.stream.index in self.reencoded:
            self._reencode(packet)
        else:
            self._copy(packet)

    def release_pending(self) -> None:
        """Packets held until the cut's end was known."""
        pending, self.pending = self.pending, []
        for packet in pending:
            self.take(packet)

    def _copy(self, packet: av.Packet) -> None:
        if not packet.size or (packet.dts is None and packet.pts is None):
            return
        index = packet.stream.index
        if self.window.active:
            tb = packet.time_base
            ts = packet.pts if packet.pts is not None else packet.dts
            time = ts * tb
            if packet.stream.type == "subtitle":
                clipped = self.window.clip_event(time, (packet.duration or 0) * tb)
                if clipped is None:
                    return
                begin, length = clipped
                packet.pts = packet.dts = round((begin - self.window.origin) / tb)
                packet.duration = round(length / tb)
            else:
                if self.window.past_end(time):
                    self.audio_past_end.add(index)
                if not self.window.keep(time):
                    return
                shift = round(self.window.origin / tb)
                if packet.pts is not None:
                    packet.pts -= shift
                if packet.dts is not None:
                    packet.dts -= shift
        packet.stream = self.copied[index]
        self.mux(packet)

    def _reencode(self, packet: av.Packet) -> None:
        job = self.reencoded[packet.stream.index]
        if job.drained:
            return
        try:
            frames = job.source.decode(packet if packet.size else None)
        except av.error.FFmpegError as e:
            raise InputDataError(f"corrupt audio in stream #{job.source.index}: {e}") from None
        self._encode(job, frames)
        if not packet.size:  # the demuxer's end-of-stream packet: drain the encoder
            self._drain(job)

    def _encode(self, job: AudioReencode, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            if frame.pts is not None and self.window.active:
                tb = frame.time_base or job.source.time_base
                time = frame.pts * tb
                if self.window.past_end(time):
                    self.audio_past_end.add(job.source.index)
                if not self.window.keep(time):
                    continue
                frame.pts -= round(self.window.origin / tb)
            self.mux(job.output.encode(frame))

    def _drain(self, job: AudioReencode) -> None:
        self.mux(job.output.encode(None))
        job.drained = True

    def audio_done(self) -> bool:
        """Whether every carried audio stream has passed the cut's end (so reading further is pointless)."""
        audio = [i for i, s in self.copied.items() if s.type == "audio"] + list(self.reencoded)
        return all(i in self.audio_past_end for i in audio)

    def finish(self) -> None:
        """At the end of reading: release held packets, drain the re-encoders that did not see their stream end."""
        self.release_pending()
        for job in self.reencoded.values():
            if not job.drained:
                try:
                    self._encode(job, job.source.decode(None))
                except av.error.FFmpegError as e:
                    raise InputDataError(f"corrupt audio in stream #{job.source.index}: {e}") from None
                self._drain(job)
