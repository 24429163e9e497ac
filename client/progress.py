"""A one-line progress display on stderr: frames in and out, output fps, ETA (when the total is known)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """Redraws one status line at most every ``interval`` seconds; does nothing when disabled.

    On a terminal the line is rewritten in place twice a second; elsewhere (``--progress`` into a
    log) each update is its own line, every ``log_interval`` seconds, so long jobs keep small logs.
    """

    def __init__(self, enabled: bool, total_out: int | None = None, stream: TextIO | None = None,
                 interval: float = 0.5, log_interval: float = 10.0) -> None:
        self.enabled = enabled
        self.total_out = total_out
        self.stream = stream if stream is not None else sys.stderr
        self.inline = enabled and self.stream.isatty()
        self.interval = interval if self.inline else log_interval
        self.started = time.monotonic()
        self._last_draw = 0.0
        self.frames_in = 0
        self.frames_out = 0

    def update(self, frames_in: int, frames_out: int) -> None:
        self.frames_in, self.frames_out = frames_in, frames_out
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.interval:
            self._last_draw = now
            self._draw(now)

    def waiting(self, text: str) -> None:
        """Show what the job waits for (a busy daemon) in the line itself, on a terminal only: elsewhere the
        wait is a log line of its own."""
        if self.inline:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-6, (now or time.monotonic()) - self.started)
        fps = self.frames_out / elapsed
        text = f"in {self.frames_in} | out {self.frames_out}"
        if self.total_out:
            text += f"/{self.total_out} ({min(100.0, 100.0 * self.frames_out / self.total_out):.0f}%)"
        text += f" | {fps:.2f} fps | {format_duration(elapsed)}"
        if self.total_out and fps > 0 and self.frames_out < self.total_out:
            text += f" | ETA {format_duration((self.total_out - self.frames_out) / fps)}"
        return text

    def _draw(self, now: float) -> None:
        if self.inline:
            self.stream.write("\r\x1b[K" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final figures and end the line."""
        if not self.enabled:
            return
        self._draw(time.monotonic())
        if self.inline:
            self.stream.write("\n")
            self.stream.flush()
