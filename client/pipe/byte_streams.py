"""Reading a whole frame's bytes from a pipe, which may return fewer bytes than asked for at any read.

Written once for every frame reader of mpd-client (YUV4MPEG2 in ``y4m.py``, raw frames in ``pipe_io.py``).
"""

from __future__ import annotations

from typing import BinaryIO


def read_exactly(stream: BinaryIO, n: int) -> bytearray:
    """``n`` bytes into a fresh writable buffer; shorter only at the end of the stream."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        chunk = stream.readinto(view[got:]) if hasattr(stream, "readinto") else None
        if chunk is None:
            data = stream.read(n - got)
            chunk = len(data)
            view[got:got + chunk] = data
        if not chunk:
            break
        got += chunk
    return buf[:got] if got < n else buf
