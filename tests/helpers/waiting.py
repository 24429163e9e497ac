"""Polling for something that happens in another thread or process: one ``wait_until`` for every test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def wait_until(predicate: Callable[[], _T], timeout: float = 10.0, what: str | None = None,
               interval: float = 0.05) -> _T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy, and return that value.

    After ``timeout`` s it is asked once more: with ``what`` (words for what was awaited) a falsy answer fails
    the test there (``AssertionError: timed out after 10 s waiting for WHAT``); without, the falsy answer is
    returned, for the caller to assert with its own message (``assert wait_until(...), log``).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    value = predicate()
    if not value and what is not None:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return value
