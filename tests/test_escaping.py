"""escaping.escaped: the one helper every log line and status view shows outside text through."""

from __future__ import annotations

import logging
import os

from multipassdedup.escaping import EscapingFormatter, escaped


def test_printable_names_are_unchanged_and_others_escaped_in_quotes() -> None:
    assert escaped("Episode 01 [1080p] (v2).mkv") == "Episode 01 [1080p] (v2).mkv"
    assert escaped("日本語.mkv") == "日本語.mkv"
    assert escaped("a\nb\x1b[2J\tc.mkv") == "'a\\nb\\x1b[2J\\tc.mkv'"
    assert escaped("it's\n") == "'it\\'s\\n'"
    assert escaped("evil\u202egpj.exe") == "'evil\\u202egpj.exe'"  # a bidi override would reverse the display
    assert escaped(os.fsdecode(b"bad\xff.mkv")) == "'bad\\xff.mkv'"  # an undecodable byte, as os.fsdecode keeps it
    assert escaped(b"x\ny") == "'x\\ny'" and escaped("back\\slash\n", quote=False) == "back\\\\slash\\n"


def test_formatter_keeps_each_record_on_one_line_but_tracebacks_intact() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "claimed %s", ("a\nINFO forged",), None)
    assert formatter.format(record) == "INFO claimed a\\nINFO forged"
    try:
        raise ValueError("boom")
    except ValueError as e:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "job %d failed", (3,),
                                   (type(e), e, e.__traceback__))
    text = formatter.format(failed)
    assert text.startswith("ERROR job 3 failed\nTraceback") and text.endswith("ValueError: boom")
