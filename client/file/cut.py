"""A preview cut (-ss, -to, --frames) in file mode: which video frames, packets and chapters fall inside it.

Positions are measured from the input's start (its container start time, as ffmpeg measures
them), and with a cut the output's timeline starts at 0 at the cut, as with ffmpeg's output
seeking; without one the output keeps the input's timestamps. Everything here works in exact
seconds (``Fraction``); callers convert to and from stream time bases.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..errors import UsageError


@dataclass(frozen=True)
class CutRequest:
    """The cut as given: -ss and -to in seconds from the input's start, --frames in output video frames."""

    start: Fraction | None = None
    end: Fraction | None = None
    frames: int | None = None

    @property
    def active(self) -> bool:
        return self.start is not None or self.end is not None or self.frames is not None

    def check(self) -> None:
        """Usage errors that need no input: an empty range, a frame count below 1."""
        if self.frames is not None and self.frames < 1:
            raise UsageError(f"--frames must be at least 1, got {self.frames}")
        if self.end is not None and self.end <= (self.start or 0):
            raise UsageError(f"-to {float(self.end):g} must come after -ss {float(self.start or 0):g}")


def seconds(value: Fraction | None) -> str:
    return f"{float(value or 0):g} s"


class CutWindow:
    """The cut in the input's timeline: [start, end), and ``origin``, the input time that becomes output time 0.

    With --frames the end is known only once the first video frame inside the cut is: call
    ``settle_frames`` with its time; until then ``end_known`` is False.
    """

    def __init__(self, request: CutRequest, input_start: Fraction) -> None:
        self.request = request
        self.active = request.active
        self.origin = input_start + (request.start or 0) if self.active else Fraction(0)
        self.start: Fraction | None = self.origin if self.active else None
        self.end: Fraction | None = input_start + request.end if request.end is not None else None
        self.end_known = request.frames is None
        self.frame_limit: int | None = None  # output frames to write (pts below it); None: no limit

    def check_against(self, duration: Fraction | None) -> None:
        """A cut that starts at or after the input's end is a usage error (when the length is known)."""
        if self.request.start and duration is not None and self.request.start >= duration:
            raise UsageError(f"-ss {seconds(self.request.start)} is at or after the end of the input "
                             f"({seconds(duration)} long)")

    def settle_frames(self, first_video: Fraction, out_fps: Fraction) -> int:
        """Fix the output's first video pts (from the first frame kept) and, with --frames or -to, its last.

        Returns the pts of the first output frame, in units of 1/out_fps from ``origin``.
        """
        offset = round((first_video - self.origin) * out_fps)
        limits = []
        if self.request.frames is not None:
            limits.append(offset + self.request.frames)
            frames_end = self.origin + Fraction(offset + self.request.frames) / out_fps
            self.end = frames_end if self.end is None else min(self.end, frames_end)
        if self.request.end is not None:
            limits.append(-((-(self.end - self.origin) * out_fps) // 1))  # ceil: frames presented before the end
        self.frame_limit = min(limits) if limits else None
        self.end_known = True
        return offset

    def before_start(self, time: Fraction) -> bool:
        return self.start is not None and time < self.start

    def past_end(self, time: Fraction) -> bool:
        return self.end is not None and time >= self.end

    def keep(self, time: Fraction) -> bool:
        """Whether a video frame, audio packet or audio frame presented at ``time`` is inside the cut."""
        return not self.before_start(time) and not self.past_end(time)

    def clip_event(self, time: Fraction, duration: Fraction) -> tuple[Fraction, Fraction] | None:
        """A subtitle event [time, time + duration) clipped to the cut, or None if it lies outside.

        An event without a duration is kept when it starts inside the cut.
        """
        if duration <= 0:
            return (time, duration) if self.keep(time) else None
        begin, finish = time, time + duration
        if self.start is not None:
            begin = max(begin, self.start)
        if self.end is not None:
            finish = min(finish, self.end)
        if finish <= begin:
            return None
        return begin, finish - begin

    def chapters(self, chapters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chapters overlapping the cut, clipped to it and moved onto the output's timeline (as ffmpeg does)."""
        if not self.active:
            return chapters
        kept = []
        for chapter in chapters:
            tb = Fraction(chapter["time_base"])
            clipped = self.clip_event(chapter["start"] * tb, (chapter["end"] - chapter["start"]) * tb)
            if clipped is None or clipped[1] <= 0:
                continue
            begin, length = clipped
            kept.append(dict(chapter, start=round((begin - self.origin) / tb),
                             end=round((begin + length - self.origin) / tb)))
        return kept

    def describe(self) -> str:
        parts = [f"from {seconds(self.request.start)}"]
        if self.request.end is not None:
            parts.append(f"to {seconds(self.request.end)}")
        if self.request.frames is not None:
            parts.append(f"{self.request.frames} output frame{'s' if self.request.frames != 1 else ''} at most")
        return "cut: " + ", ".join(parts)


def expected_output_frames(window: CutWindow, frames_in_file: int, in_fps: Fraction, out_fps: Fraction,
                           duration: Fraction | None) -> int | None:
    """Output frames a cut should give, for the progress line (None when the length is unknown)."""
    if window.request.frames is not None:
        return window.request.frames
    length = duration if duration is not None else (Fraction(frames_in_file) / in_fps if frames_in_file else None)
    if length is None:
        return None
    end = window.request.end if window.request.end is not None else length
    span = min(end, length) - (window.request.start or 0)
    return max(0, -((-span * out_fps) // 1))

