"""Reading a whole frame's bytes from a pipe, which may return fewer bytes than asked for at any read.

Written once for every frame reader of mpd-client (YUV4MPEG2 in ``y4m.py``, raw frames in ``formats.py``).
"""

from __future__ import annotations

from typing import BinaryIO

FIRST_READ_BYTES = 1 << 20  # the buffer a frame's bytes start in
GROWTH = 8  # how much larger the buffer gets each time it fills before the frame is complete


def read_exactly(stream: BinaryIO, n: int) -> bytearray:
    """``n`` bytes into a fresh writable buffer; shorter only at the end of the stream.

    The buffer grows with the bytes that arrive (at most ``GROWTH`` times what has arrived, plus 1 MiB), so a
    header announcing a huge frame followed by a short body allocates about the body, not the frame.
    """
    buf = bytearray(min(n, FIRST_READ_BYTES))
    got = _fill(stream, buf, 0)
    while got == len(buf) < n:
        grown = bytearray(min(n, len(buf) * GROWTH))
        grown[:got] = buf
        buf = grown
        got = _fill(stream, buf, got)
    return buf if got == n else buf[:got]


def _fill(stream: BinaryIO, buf: bytearray, got: int) -> int:
    """Read into ``buf`` from ``got`` on until it is full or the stream ends; the bytes it then holds."""
    view = memoryview(buf)
    try:
        while got < len(buf):
            chunk = stream.readinto(view[got:]) if hasattr(stream, "readinto") else None
            if chunk is None:
                data = stream.read(len(buf) - got)
                chunk = len(data)
                view[got:got + chunk] = data
            if not chunk:
                break
            got += chunk
    finally:
        view.release()  # the caller may resize or copy the buffer next
    return got
