"""Recognise what arrives on stdin from its first bytes without losing them."""

from __future__ import annotations

from typing import BinaryIO

from ..errors import InputDataError

Y4M_MAGIC = b"YUV4MPEG2"
NUT_MAGIC = b"nut/multimedia container"
SNIFF_BYTES = len(NUT_MAGIC)


class PrefixedStream:
    """A read-only byte stream: ``prefix`` first, then the rest of ``stream`` (not seekable, like a pipe)."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n is None or n < 0:
                data, self._prefix = self._prefix + self._stream.read(), b""
                return data
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return self._stream.read(n)

    def readline(self, limit: int = -1) -> bytes:
        if self._prefix:
            end = self._prefix.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                line, self._prefix = self._prefix[: end + 1], self._prefix[end + 1:]
                return line
            if 0 <= limit <= len(self._prefix):
                line, self._prefix = self._prefix[:limit], self._prefix[limit:]
                return line
            head, self._prefix = self._prefix, b""
            return head + self._stream.readline(limit - len(head) if limit >= 0 else -1)
        return self._stream.readline(limit)


def sniff(stream: BinaryIO) -> tuple[str, PrefixedStream]:
    """``("y4m" | "nut", stream_with_nothing_consumed)``; raises InputDataError for anything else."""
    head = b""
    while len(head) < SNIFF_BYTES:
        chunk = stream.read(SNIFF_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    rest = PrefixedStream(head, stream)
    if head.startswith(Y4M_MAGIC):
        return "y4m", rest
    if head.startswith(NUT_MAGIC):
        return "nut", rest
    if not head:
        raise InputDataError("no input: stdin is empty")
    raise InputDataError("stdin is neither YUV4MPEG2 nor NUT (use ffmpeg -f yuv4mpegpipe or -f nut, "
                         "or --raw WxH for raw frames)")
