"""Is an input file whole? A truncated or damaged file told apart from one with a variable frame rate.

A file cut short (an interrupted download, ``head -c``) loses the frames a B-frame decoder would
have reordered into its last slots, so its timestamps show a gap, exactly as a variable-frame-rate
file's do. Advising ``--cfr`` then turns a damaged file into a short, "successful" output. So
before the rate is judged, the first packets are demuxed with libav's messages captured and the
file is checked for what only damage explains: the demuxer saying the file ended prematurely (or
is partial), or the video ending well before the duration its container declares. A file longer than the
scan has its last seconds read too (a seek to near its declared end), and the duration check
runs once more when the whole file has been decoded, for a file that cannot seek.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import av

from ..media.libav_log import captured_errors

# Slack between where the video ends and where the container says it ends: Matroska rounds to a
# millisecond, and a container's own duration may include audio that runs a little past the video.
DECLARED_SLACK_FRAMES = 2
CONTAINER_SLACK = Fraction(1)  # seconds, when only the whole file's duration is known (audio included)
TAIL_SECONDS = Fraction(5)  # how far before the declared end the tail scan of a long file starts
TAIL_PACKETS = 4096  # at most this many packets read by the tail scan


@dataclass
class PacketScan:
    """The first video packets of a file: their presentation times, and what libav said on the way."""

    times: list[Fraction] = field(default_factory=list)
    reached_end: bool = False  # the scan read every packet of the file
    demuxer_errors: list[str] = field(default_factory=list)  # the container's complaints, e.g. "partial file"
    failure: str | None = None  # a demuxing error that stopped the scan
    with_tail: bool = False  # ``times`` also hold the packets of the file's last seconds (``add_tail``)

    def add_tail(self, tail: PacketScan) -> None:
        """Take in the scan of the file's last seconds: this scan now reaches the end."""
        self.times += tail.times
        self.reached_end = self.with_tail = True
        self.demuxer_errors += [e for e in tail.demuxer_errors if e not in self.demuxer_errors]

    @property
    def end(self) -> Fraction | None:
        """The presentation time of the latest packet seen."""
        return max(self.times) if self.times else None


def scan_packets(container: av.container.InputContainer, video: av.video.stream.VideoStream,
                 limit: int) -> PacketScan:
    """Demux (not decode) up to ``limit`` video packets, keeping their times and the demuxer's error lines."""
    scan = PacketScan()
    demuxer = container.format.name
    with captured_errors() as logs:
        try:
            for packet in container.demux(video):
                if packet.pts is not None and packet.size:
                    scan.times.append(packet.pts * packet.time_base)
                if len(scan.times) >= limit:
                    break
            else:
                scan.reached_end = True
        except av.error.FFmpegError as e:
            scan.failure = str(e.strerror or e)
    for _level, context, message in logs:
        text = message.strip().rstrip(".")
        if context == demuxer and text and text not in scan.demuxer_errors:
            scan.demuxer_errors.append(text)
    return scan


def scan_tail(container: av.container.InputContainer, video: av.video.stream.VideoStream,
              declared_end: Fraction) -> PacketScan | None:
    """The packets of the last seconds before ``declared_end`` (a long file's end, which the first scan did not
    reach), or None when the file cannot seek there (then only decoding it all tells)."""
    with captured_errors():
        try:
            container.seek(int((declared_end - TAIL_SECONDS) / video.time_base), stream=video, backward=True)
        except (av.error.FFmpegError, OverflowError, ValueError):
            return None
    tail = scan_packets(container, video, TAIL_PACKETS)
    return tail if tail.reached_end and tail.times else None


@dataclass(frozen=True)
class DeclaredEnd:
    """Where a container says the video ends, the slack allowed before that point, and whether the figure is the
    video's own (``exact``) or the whole file's, which may include audio that outlasts the video."""

    end: Fraction
    slack: Fraction
    exact: bool


def declared_video_end(container: av.container.InputContainer, video: av.video.stream.VideoStream,
                       rate: Fraction) -> DeclaredEnd | None:
    """Where the container says the video ends, or None when it does not say.

    The video stream's own duration (or Matroska's per-track DURATION tag, which ffmpeg writes) is exact;
    the whole file's duration may include audio that outlasts the video, so it gets more slack.
    """
    start = Fraction(container.start_time, av.time_base) if container.start_time is not None else Fraction(0)
    frame_slack = DECLARED_SLACK_FRAMES / rate
    if video.duration and video.time_base:
        stream_start = video.start_time * video.time_base if video.start_time is not None else start
        return DeclaredEnd(stream_start + video.duration * video.time_base, frame_slack, True)
    tag = video.metadata.get("DURATION") or video.metadata.get("duration")
    seconds = _clock_seconds(tag) if tag else None
    if seconds is not None:
        return DeclaredEnd(start + seconds, frame_slack, True)
    if container.duration:
        return DeclaredEnd(start + Fraction(container.duration, av.time_base), max(frame_slack, CONTAINER_SLACK),
                           False)
    return None


def _clock_seconds(text: str) -> Fraction | None:
    """``00:23:40.042000000`` (Matroska's DURATION tag) in seconds."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)
    except ValueError:
        return None


def cut_short(video_end: Fraction, frame: Fraction, declared: DeclaredEnd | None,
              corroborated: bool = False) -> str | None:
    """Why a video whose last frame starts at ``video_end`` (lasting ``frame`` s) is shorter than declared, or None.

    Against the whole file's duration (not ``exact``) a shortfall alone is no proof, since the audio may run on
    well past the video: it counts only when ``corroborated`` (the demuxer complained too).
    """
    if declared is None:
        return None
    ends = video_end + frame
    if ends >= declared.end - declared.slack or not (declared.exact or corroborated):
        return None
    return f"its video ends at {float(ends):.3f} s of the {float(declared.end):.3f} s its container declares"


def damage_report(name: str, scan: PacketScan, frame: Fraction, declared: DeclaredEnd | None,
                  irregular: bool) -> str | None:
    """A one-line diagnosis when the scan shows a truncated or damaged file, else None (the file looks whole).

    A video that ends well before its declared end, or a demuxer that failed, is damage whatever the
    timestamps say. The demuxer's error lines (such as "File ended prematurely") count only when the
    timestamps are ``irregular`` too: then they, not a variable rate, explain the gap; a file with a
    constant rate and a complaint from its demuxer is read on (the caller warns).
    """
    reasons: list[str] = []
    if scan.failure:
        reasons.append(f"libav cannot read on: {scan.failure}")
    if scan.reached_end and scan.end is not None:
        short = cut_short(scan.end, frame, declared, corroborated=bool(scan.demuxer_errors))
        if short:
            reasons.append(short)
    if scan.demuxer_errors and (reasons or irregular):
        reasons.append("libav says: " + "; ".join(scan.demuxer_errors))
    if not reasons:
        return None
    frames = ("its first and last video frames read" if scan.with_tail else
              f"{len(scan.times)} video frames" + ("" if scan.reached_end else " read"))
    return (f"{name} is truncated or damaged ({frames}; {'; '.join(reasons)}); re-download or re-encode it "
            f"(--cfr would not repair it)")


def average_rate(times: list[Fraction]) -> Fraction | None:
    """The mean frame rate of presentation times (frames per second between the first and the last)."""
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else None
