"""libav's own error messages, captured while an encoder or a muxer opens, so a failure can say why.

PyAV keeps libav's log switched off; an exception from ``avcodec_open2`` then carries only an
errno ("Invalid argument"), while the reason ("Error setting preset/tune nosuch/(null).") went
to the log. ``captured_errors`` turns error-level logging on for the duration of a call and
collects those lines instead of printing them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import av
import av.logging


@contextmanager
def captured_errors() -> Iterator[list[tuple[int, str, str]]]:
    """Collect libav's log lines of this thread, as (level, context, message), while the block runs.

    PyAV's log level is restored afterwards. Read the list with ``failure_reason``.
    """
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        av.logging.set_level(previous)


def failure_reason(error: BaseException, logs: list[tuple[int, str, str]]) -> str:
    """libav's own words for a failure (its error lines), else the exception's errno text."""
    lines: list[str] = []
    for level, _context, message in logs:
        text = message.strip().rstrip(".")
        if level <= av.logging.ERROR and text and text not in lines:
            lines.append(text)
    if lines:
        return "; ".join(lines)
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
