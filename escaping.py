"""Text that came from outside (file names, peers, user names, a client's strings) made safe to show.

A dropped file may be named ``a\\nINFO job 9: done`` or carry an ESC sequence: written raw, the
first forges a log line and the second reaches the terminal of whoever reads the log or runs
``mpd-watch status``. ``escaped`` is the one function every log line and status view passes such
text through; ``EscapingFormatter`` applies it to whole log lines as the last guard, so a name no
call site thought of still cannot split a line or send an escape sequence.

Imports nothing but the standard library: mpd-client, mpd-watch and mpd-daemon all use it.
"""

from __future__ import annotations

import logging
import os

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by os.fsdecode as a lone surrogate
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escaped(text: str | bytes | os.PathLike[str], quote: bool = True) -> str:
    """``text`` as it can be shown on one line of a log or a terminal.

    Printable text (space included) comes back unchanged. Otherwise every character that is not
    printable (controls such as newline and ESC, format characters such as the bidi overrides,
    undecodable bytes) is written as a Python-style escape (``\\n``, ``\\x1b``, ``\\u202e``) and,
    with ``quote``, the whole name is put in single quotes so that the escapes cannot be taken for
    the name's own characters. ``quote=False`` is for whole lines (the formatter), where quoting
    would change every line that needed it.
    """
    text = os.fsdecode(text) if isinstance(text, (bytes, os.PathLike)) else str(text)
    if text.isprintable():
        return text
    body = "".join(_SHORT_ESCAPES.get(c) or (c if c.isprintable() else _escape_char(c)) for c in text)
    if not quote:
        return body
    return "'" + body.replace("'", "\\'") + "'"


class EscapingFormatter(logging.Formatter):
    """A log formatter whose message part never holds a line break or a control character.

    Tracebacks (``exc_info``) are formatted by the base class after the message, and stay multi-line.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 -- logging's name
        record.message = escaped(record.message, quote=False)
        return super().formatMessage(record)
